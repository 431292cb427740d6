"""The same extraction job run by actstore, TorchLens and a THINGSvision-style loop.

Job: AlexNet with random weights saved to disk, modules ``features.4`` (ReLU,
560 KB/image) and ``classifier.4`` (Linear, 16 KB/image), the same generated
JPEGs, batch 64, 2 DataLoader decode workers, torchvision's AlexNet
preprocessing. Each tool runs in its own subprocess, whose peak RSS (tree,
workers included) is polled; images/s is timed around the extraction call
inside it (imports and model loading excluded).

- actstore: ``actstore.extract`` into one Zarr store (default codec, zstd).
- TorchLens: ``torchlens.extract_dataset(..., output_dir=...)``, one
  safetensors shard per batch; fed from the same DataLoader (it decodes in
  the caller's process otherwise).
- THINGSvision 2.x style: forward hooks, features gathered in a list across
  batches, concatenated and written once, uncompressed, as thingsvision's
  ``save_features`` does for hdf5 (one file per module).

    python benchmarks/bench_peers.py            # 512 images (~3 min on 2 cores)
    python benchmarks/bench_peers.py --small    # 128 images
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from _common import SCRATCH, dir_bytes, machine, make_images, mb, remove, run_measured, table

MODULES = ["features.4", "classifier.4"]
BATCH_SIZE, NUM_WORKERS = 64, 2
TOOLS = ("actstore", "torchlens", "thingsvision-style")


def _alexnet(weights_file: str):
    import torch
    import torchvision
    module = torchvision.models.alexnet(weights=None)
    module.load_state_dict(torch.load(weights_file, weights_only=True))
    return module.eval(), torchvision.models.AlexNet_Weights.DEFAULT.transforms()


def _loader(images_dir: str, transform):
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    files = sorted(Path(images_dir).glob("*.jpg"))

    class Images(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as image:
                return transform(image.convert("RGB"))

    return DataLoader(Images(), batch_size=BATCH_SIZE, num_workers=NUM_WORKERS, prefetch_factor=4), len(files)


def run_actstore(images_dir: str, weights_file: str, out: Path) -> int:
    from actstore import extract
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = extract(model_name="alexnet", model_path=weights_file, module_names=MODULES,
                         in_path=images_dir, out_path=out, batch_size=BATCH_SIZE,
                         num_workers=NUM_WORKERS, quiet=True)
    return result.rows_this_run


def run_torchlens(images_dir: str, weights_file: str, out: Path) -> int:
    import torchlens
    module, transform = _alexnet(weights_file)
    loader, n = _loader(images_dir, transform)
    stimuli = (image for batch in loader for image in batch)
    torchlens.extract_dataset(module, stimuli, layers=MODULES, batch_size=BATCH_SIZE,
                              output_dir=str(out), progress=False)
    return n


def run_thingsvision_style(images_dir: str, weights_file: str, out: Path) -> int:
    import h5py
    import numpy as np
    import torch
    module, transform = _alexnet(weights_file)
    loader, n = _loader(images_dir, transform)
    named = dict(module.named_modules())
    features: dict[str, list] = {name: [] for name in MODULES}
    hooks = [named[name].register_forward_hook(
        lambda _m, _i, output, name=name: features[name].append(output.detach().clone().numpy()))
        for name in MODULES]
    with torch.no_grad():
        for batch in loader:
            module(batch)
    for hook in hooks:
        hook.remove()
    out.mkdir(parents=True)
    for name in MODULES:
        gathered = np.concatenate(features.pop(name))
        with h5py.File(out / f"features_{name}.hdf5", "w") as file:
            file.create_dataset("features", data=gathered)
        del gathered
    return n


def child(tool: str, images_dir: str, weights_file: str, out: str) -> None:
    """One tool in this process: prints a JSON line with rows and seconds."""
    import torch  # imported before the clock starts, as for every tool
    del torch
    run = {"actstore": run_actstore, "torchlens": run_torchlens,
           "thingsvision-style": run_thingsvision_style}[tool]
    started = time.perf_counter()
    rows = run(images_dir, weights_file, Path(out))
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="128 images: a quick check")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "IMAGES", "WEIGHTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch
    import torchvision
    n = args.images or (128 if args.small else 512)
    images_dir = make_images(n, size=256)
    weights_file = SCRATCH / "alexnet-random.pth"
    if not weights_file.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights_file)
    print(f"machine: {machine()}")
    print(f"{n} JPEG images 256px; alexnet (random weights from {weights_file.name}); "
          f"{' + '.join(MODULES)}; batch {BATCH_SIZE}; {NUM_WORKERS} decode workers\n")
    rows = []
    for tool in args.tools:
        out = SCRATCH / f"peers-{tool}{'.zarr' if tool == 'actstore' else ''}"
        remove(out)
        run = run_measured([sys.executable, __file__, "--child", tool, str(images_dir),
                            str(weights_file), str(out)])
        if run["returncode"] != 0:
            rows.append([tool, "failed", "", "", "", run["output"].strip().splitlines()[-1][:100]])
            print(run["output"], file=sys.stderr)
        else:
            result = json.loads(run["output"].strip().splitlines()[-1])
            rows.append([tool, f"{result['rows'] / result['seconds']:.1f}", f"{result['seconds']:.1f}",
                         mb(run["peak_tree"]), mb(run["peak_main"]), mb(dir_bytes(out))])
        remove(out)
        print(table(rows[-1:], HEADER), flush=True)
    print("\n" + table(rows, HEADER))


HEADER = ["tool", "img/s", "seconds", "peak RSS tree MB", "peak RSS main MB", "on disk MB"]

if __name__ == "__main__":
    main()
