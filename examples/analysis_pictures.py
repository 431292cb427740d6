"""Make the pictures of docs/analysis.md: an RDM, a CKA matrix and a PCA, from
a small synthetic store (6 classes x 25 images, three layers that share a
class-structured signal under different amounts of noise).

    python examples/analysis_pictures.py [--out docs/img]

With a store of your own, the same three pictures are one line each:

    actstore rdm alexnet.zarr --layer features.11 --plot rdm.png
    actstore cka alexnet.zarr --layer features.4 --layer features.11 --layer classifier.4 --plot cka.png
    actstore pca alexnet.zarr --layer classifier.4 --components 10 --plot pca.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actstore.analysis import cka_matrix, pca, plot_cka, plot_pca, plot_rdm, rdm  # noqa: E402
from actstore.store import FORMAT_NAME, LayerSpec, Layout, create_writer  # noqa: E402

CLASSES = ["bird", "car", "cat", "dog", "plane", "ship"]


def demo_store(path: Path, per_class: int = 25, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(len(CLASSES)), per_class)
    n = len(targets)
    latent = rng.standard_normal((len(CLASSES), 32))[targets] + 0.9 * rng.standard_normal((n, 32))
    pixels = rng.standard_normal((n, 32))   # what early layers see besides the class
    layers = {  # (shape per image, share of the class signal, noise): early layers see more of the pixels
        "layer1": ((8, 8, 8), 0.15, 3.0), "layer2": ((16, 4, 4), 0.5, 2.0), "layer3": ((32, 2, 2), 0.8, 1.0),
        "fc": ((100,), 1.0, 0.5)}
    values = {}
    for name, (shape, share, noise) in layers.items():
        units = int(np.prod(shape))
        signal = share * latent + (1 - share) * 2 * pixels
        mixed = signal @ rng.standard_normal((32, units)) + noise * rng.standard_normal((n, units))
        values[name] = (np.maximum(mixed, 0) if len(shape) > 1 else mixed).reshape(n, *shape).astype("float32")
    specs = tuple(LayerSpec(name, v.shape[1:], v.shape[1:], "float32", (16, *v.shape[1:]))
                  for name, v in values.items())
    names = [f"{CLASSES[t]}/{CLASSES[t]}_{i:03d}.jpg" for i, t in enumerate(targets)]
    writer = create_writer(path, "zarr", Layout(n_rows=n, layers=specs, chunk_images=16), names, targets, CLASSES,
                           {"format": FORMAT_NAME, "status": "complete", "model_name": "synthetic"})
    writer.write_rows(0, values)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "demo.zarr"
        demo_store(store)
        plot_rdm(rdm(store, "layer3"), args.out / "rdm.png")
        plot_cka(cka_matrix(store, ["layer1", "layer2", "layer3", "fc"]), args.out / "cka.png")
        plot_pca(pca(store, "fc", 10, scores=True), args.out / "pca.png")
    for name in ("rdm", "cka", "pca"):
        print(f"{args.out / name}.png: {(args.out / f'{name}.png').stat().st_size / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
