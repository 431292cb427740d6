"""ImageSet.check: sound JPEGs and PNGs pass on their structure alone, without
Pillow; every bad file is named, whether checked here or on worker processes."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from actstore import images as images_module
from actstore.image_headers import sound_size
from actstore.images import ImageSet, _problem

from conftest import make_images


def _bad_files(root: Path) -> dict[str, str]:
    """Bad files in several classes; the reason each must get (a part of it)."""
    good_jpeg = next(root.rglob("*.jpg")).read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(good_jpeg[:len(good_jpeg) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("not an image")
    png = bytearray(next(root.rglob("*.png")).read_bytes())
    png[png.index(b"IDAT") + 6] ^= 0xFF               # image data whose CRC no longer matches
    (root / "zebra" / "crc.png").write_bytes(bytes(png))
    Image.new("L", (400, 300)).save(root / "zebra" / "huge.png")
    return {"cat/cut.jpg": "broken or truncated", "dog/empty.png": "empty file (0 bytes)",
            "dog/notes.jpg": "not an image Pillow can read", "zebra/crc.png": "broken or truncated",
            "zebra/huge.png": "decompression-bomb-sized (400x300 pixels)"}


def test_sound_jpegs_and_pngs_pass_on_their_structure_without_pillow(tmp_path, monkeypatch):
    root = make_images(tmp_path / "in", "flat", per_class=2)     # 6 images: PNG and JPEG (RGB, L, CMYK, P)
    Image.new("RGB", (8, 8)).save(root / "other.bmp")
    for path in root.iterdir():
        with path.open("rb") as handle:
            size = sound_size(handle)
        assert size == (None if path.suffix == ".bmp" else Image.open(path).size), path.name
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow opened a sound JPEG or PNG"))
    assert all(_problem(path) == "" for path in root.iterdir() if path.suffix != ".bmp")


@pytest.mark.parametrize("block_files", [None, 4])   # None: in this process; 4: on 2 worker processes
def test_check_names_every_bad_file_in_row_order(tmp_path, monkeypatch, block_files):
    root = make_images(tmp_path / "in", "classes", per_class=3)
    reasons = _bad_files(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)   # the workers get the caller's limit
    if block_files:
        monkeypatch.setattr(images_module, "CHECK_BLOCK_FILES", block_files)
    images = ImageSet.scan(root)
    found = images.check(workers=2)
    assert [images.file_names[row] for row, _ in found] == sorted(reasons, key=images.file_names.index)
    for row, reason in found:
        assert reason.startswith(reasons[images.file_names[row]]), (images.file_names[row], reason)
