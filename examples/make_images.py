"""Generate the example image set that ships in examples/images/ (class subfolders).

Deterministic: the same PNGs on every machine. Run it again to recreate them:
    python examples/make_images.py [--out examples/images] [--per-class 8]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = {"circles": "ellipse", "squares": "rectangle", "stripes": "stripes"}


def draw(kind: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if kind == "stripes":
        width = int(rng.integers(4, 12))
        for x in range(0, size, 2 * width):
            pen.rectangle([x, 0, x + width - 1, size], fill=colour)
    else:
        lo, hi = sorted(rng.integers(8, size - 8, 2))
        box = [int(lo), int(lo), int(hi) + 8, int(hi) + 8]
        getattr(pen, kind)(box, fill=colour)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--per-class", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    for name, kind in CLASSES.items():
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, args.per_class + 1):
            draw(kind, rng).save(folder / f"{name}_{i}.png")
    print(f"wrote {len(CLASSES) * args.per_class} images to {args.out}")


if __name__ == "__main__":
    main()
