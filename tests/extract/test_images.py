"""ImageSet: layout detection, order, targets, subsets, THINGS order, decoding."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actstore.errors import UserError
from actstore.images import ImageSet, natural_key


def _touch_images(root: Path, names) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(path, format="PNG")


def test_class_layout_is_sorted_by_class_then_naturally(tmp_path):
    _touch_images(tmp_path, ["dog/img10.png", "dog/img2.png", "cat/b.PNG", "cat/a.jpg", "ant/x1.JPEG"])
    images = ImageSet.scan(tmp_path)
    assert images.layout == "classes"
    assert images.classes == ("ant", "cat", "dog")
    assert images.file_names == ("ant/x1.JPEG", "cat/a.jpg", "cat/b.PNG", "dog/img2.png", "dog/img10.png")
    assert images.targets == (0, 1, 1, 2, 2)


def test_flat_layout_targets_are_image_indices(tmp_path):
    _touch_images(tmp_path, ["img10.png", "img1.png", "img2.png"])
    images = ImageSet.scan(tmp_path)
    assert images.layout == "flat"
    assert images.classes == ()
    assert images.file_names == ("img1.png", "img2.png", "img10.png")
    assert images.targets == (0, 1, 2)


def test_other_pillow_formats_count_and_other_files_do_not(tmp_path):
    for suffix, fmt in [(".bmp", "BMP"), (".tif", "TIFF"), (".TIFF", "TIFF"), (".webp", "WEBP"), (".gif", "GIF")]:
        Image.new("RGB", (8, 8)).save(tmp_path / f"a{suffix}", format=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert ImageSet.scan(tmp_path).file_names == ("a.bmp", "a.gif", "a.tif", "a.TIFF", "a.webp")


def test_natural_key_orders_numbers_by_value():
    assert sorted(["img10", "img2", "img1", "Img3"], key=natural_key) == ["img1", "img2", "Img3", "img10"]


def test_fraction_picks_a_seeded_subset_in_order(tmp_path):
    _touch_images(tmp_path, [f"c/img{i}.png" for i in range(1, 21)])
    half = ImageSet.scan(tmp_path, fraction=0.5, rnd_seed=3)
    again = ImageSet.scan(tmp_path, fraction=0.5, rnd_seed=3)
    other = ImageSet.scan(tmp_path, fraction=0.5, rnd_seed=4)
    full = ImageSet.scan(tmp_path)
    assert len(half) == 10
    assert half.file_names == again.file_names
    assert half.file_names != other.file_names
    positions = [full.file_names.index(n) for n in half.file_names]
    assert positions == sorted(positions)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_fraction_out_of_range_is_refused(tmp_path, fraction):
    _touch_images(tmp_path, ["a.png"])
    with pytest.raises(UserError, match="fraction"):
        ImageSet.scan(tmp_path, fraction=fraction)


def test_missing_and_empty_in_path_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageSet.scan(tmp_path / "nope")
    with pytest.raises(UserError, match="holds no images"):
        ImageSet.scan(tmp_path)


def test_mixed_layout_is_refused(tmp_path):
    _touch_images(tmp_path, ["a.png", "cls/b.png"])
    with pytest.raises(UserError, match="mixes images"):
        ImageSet.scan(tmp_path)


def test_things_order_comes_from_the_tsv(tmp_path):
    _touch_images(tmp_path / "in", ["zebra/z1.png", "aardvark/a1.png", "mouse/m1.png"])
    tsv = tmp_path / "things_concept.tsv"
    tsv.write_text("Word\tuniqueID\nzebra\tzebra\nmouse\tmouse\naardvark\taardvark\n")
    images = ImageSet.scan(tmp_path / "in", things=True, things_tsv=tsv)
    assert images.classes == ("zebra", "mouse", "aardvark")
    assert images.file_names == ("zebra/z1.png", "mouse/m1.png", "aardvark/a1.png")
    assert images.targets == (0, 1, 2)


def test_things_refuses_a_missing_tsv_and_folders_it_does_not_list(tmp_path):
    _touch_images(tmp_path / "in", ["zebra/z1.png", "extra/e1.png"])
    with pytest.raises(UserError, match="not found"):
        ImageSet.scan(tmp_path / "in", things=True, things_tsv=tmp_path / "missing.tsv")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("uniqueID\nzebra\nmouse\n")
    with pytest.raises(UserError, match=r"1 folders not in t.tsv \(e.g. extra\)"):
        ImageSet.scan(tmp_path / "in", things=True, things_tsv=tsv)


def test_things_subset_keeps_things_order_and_warns(tmp_path):
    _touch_images(tmp_path / "in", ["zebra/z1.png", "aardvark/a1.png"])
    tsv = tmp_path / "t.tsv"
    tsv.write_text("uniqueID\nzebra\nmouse\naardvark\ncat\n")
    with pytest.warns(UserWarning, match="2 of the 4 concepts in t.tsv have no folder"):
        images = ImageSet.scan(tmp_path / "in", things=True, things_tsv=tsv)
    assert images.classes == ("zebra", "aardvark")
    assert images.file_names == ("zebra/z1.png", "aardvark/a1.png")
    assert images.targets == (0, 1)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "RGB"])
def test_every_mode_decodes_to_rgb(tmp_path, mode):
    image = Image.new("RGB", (6, 4), (200, 100, 50)).convert(mode)
    image.save(tmp_path / "a.png" if mode != "CMYK" else tmp_path / "a.jpg")
    images = ImageSet.scan(tmp_path)
    decoded = images.load(0)
    assert decoded.mode == "RGB" and decoded.size == (6, 4)
    assert np.array_equal(np.asarray(decoded), np.asarray(image.convert("RGB"))) or mode == "CMYK"


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    decoded = np.asarray(ImageSet.scan(tmp_path).load(0))
    assert decoded[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("values, expected", [([0.0, 0.5, 1.0], [0, 128, 255]),
                                              ([0.0, 100.0, 255.0], [0, 100, 255])])
def test_float_tiff_is_scaled_from_its_range_not_clipped_to_black(tmp_path, values, expected):
    Image.fromarray(np.array([values], dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    decoded = np.asarray(ImageSet.scan(tmp_path).load(0))
    assert decoded.shape == (1, 3, 3)
    assert decoded[0, :, 0].tolist() == expected


def test_float_tiff_outside_both_ranges_is_refused(tmp_path):
    Image.fromarray(np.array([[-3.0, 700.0]], dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f.tif is a floating-point image with values in \[-3, 700\]"):
        ImageSet.scan(tmp_path).load(0)
