"""Stores written now are byte-identical to the golden digests below: same
chunk files, same array metadata, same attributes (apart from timestamps,
paths and the machine's versions).

The runs extract a small network whose arithmetic is exact in float32
(integer weights, inputs that are multiples of 1/256, every sum an integer
multiple of 1/256 below 2**24 of them), so its activations are the same bits
whatever order a CPU's kernels add in: AlexNet's linear layers differ in the
last bits between CPUs, which made earlier digests hold on one machine only.
Any change to the stored bytes must be deliberate and update the digests
(``python tests/test_golden.py`` prints them). The digests are read without
actstore (zarr, h5py and plain files), so they do not depend on the code
under test.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_images

# Attributes that differ from run to run or machine to machine, not by the code's doing.
VOLATILE = {"created", "completed", "rechunked", "command_line", "in_path", "torch_threads",
            "torch_version", "torchvision_version", "claims"}

RUNS = {
    # name: (out path suffix, extract options)
    # One file per chunk, so the chunk files themselves are compared (sharded
    # stores equal these bit for bit: tests/test_sharding.py).
    "zarr": (".zarr", dict(module_names=["features.3", "classifier.1"], chunk_images=4,
                           chunk_channels=8, zarr_shard_rows=0)),
    "hdf5": (".h5", dict(module_names=["features.0", "classifier.3"], chunk_images=4,
                         dtype="float16", flatten_acts=True, compression="lz4")),
    "npy": ("", dict(module_names=["features.2", "classifier.2"], file_format="npy",
                     flatten_acts=True)),
}
SIZE = 24   # input pixels a side


def exact_model():
    """A small conv net whose float32 arithmetic is exact: weights in {-1, 0, 1}
    (the linear layers sparse), inputs k/256 (a Resize to SIZE x SIZE of 8-bit
    pixels, divided by 256), so every partial sum is a multiple of 1/256 below
    2**24 / 256 in magnitude (62,208 at most, in float16's range too)."""
    import torch
    from torch import nn
    from torchvision import transforms

    from actstore import from_module
    rng = np.random.default_rng(7)
    net = nn.Module()
    net.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 16, 3, bias=False), nn.ReLU())
    net.classifier = nn.Sequential(nn.Flatten(), nn.Linear(144, 32, bias=False), nn.ReLU(),
                                   nn.Linear(32, 8, bias=False))
    net.forward = lambda x: net.classifier(net.features(x))
    with torch.no_grad():
        for layer, nonzero in ((net.features[0], None), (net.features[3], None),
                               (net.classifier[1], 16), (net.classifier[3], 2)):
            weight = rng.integers(-1, 2, layer.weight.shape)
            if nonzero is not None:   # each output adds at most `nonzero` inputs
                keep = np.argsort(rng.random(weight.shape), axis=1) < nonzero
                weight = weight * keep
            layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    transform = transforms.Compose([transforms.Resize((SIZE, SIZE)), transforms.PILToTensor(),
                                    transforms.Lambda(lambda pixels: pixels.float() / 256)])
    return from_module(net, transform, name="exactnet", input_size=(SIZE, SIZE))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plain(value):
    """An HDF5 or JSON attribute value as plain JSON-able data."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attrs_digest(attrs) -> str:
    kept = {k: _plain(v) for k, v in dict(attrs).items() if k not in VOLATILE}
    return _sha(json.dumps(kept, sort_keys=True, default=str).encode())


def digests(path: Path) -> dict[str, str]:
    """sha256 of every chunk file / decoded array and of every attribute set."""
    out = {}
    if path.is_file():   # HDF5
        with h5py.File(path, "r") as file:
            out["/"] = _attrs_digest(file.attrs)

            def visit(name, node):
                out[f"{name}@attrs"] = _attrs_digest(node.attrs)
                if isinstance(node, h5py.Dataset):
                    meta = [node.shape, str(node.dtype), node.chunks, node.compression,
                            node.compression_opts, node.shuffle]
                    out[f"{name}@meta"] = _sha(json.dumps(meta, default=str).encode())
                    data = node[()]
                    if data.dtype.kind == "O":   # variable-length strings: their text, not pointers
                        data = json.dumps([_plain(v) for v in data.tolist()]).encode()
                    out[name] = _sha(np.ascontiguousarray(data).tobytes())
            file.visititems(visit)
        return out
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        key = file.relative_to(path).as_posix()
        if key.startswith("claims"):
            continue
        if file.name == "zarr.json":
            meta = json.loads(file.read_text())
            meta["attributes"] = _attrs_digest(meta.get("attributes", {}))
            nodes = (meta.get("consolidated_metadata") or {}).get("metadata", {})
            for node in list(nodes):   # the consolidated copies, claims (pid, host, time) left out
                if node.startswith("claims"):
                    del nodes[node]
                else:
                    nodes[node]["attributes"] = _attrs_digest(nodes[node].get("attributes", {}))
            out[key] = _sha(json.dumps(meta, sort_keys=True).encode())
        else:
            out[key] = _sha(file.read_bytes())
    return out


def run_and_digest(name: str, images: Path, tmp: Path) -> dict[str, str]:
    from actstore import extract
    suffix, options = RUNS[name]
    out = tmp / f"golden{suffix}"
    extract(model=exact_model(), in_path=images, out_path=out, batch_size=5, num_workers=0, quiet=True,
            **options)
    return digests(out)


@pytest.fixture(scope="module")
def golden_images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("golden") / "in", "classes", per_class=3, seed=11)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_stores_are_byte_identical_to_the_golden_digests(name, golden_images, tmp_path):
    assert run_and_digest(name, golden_images, tmp_path) == GOLDEN[name]


GOLDEN: dict[str, dict[str, str]] = {
    "hdf5": {
        "/": "8d14e0b354624a674dc28c7dda2e6710b0c02e5f92807cc7bf4887ebacb464be",
        "activations/classifier.3": "2d30bea994108856acb0ce7f4513936d838da3baf0d18629f40ad8d6ced3813a",
        "activations/classifier.3:unit": "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",
        "activations/classifier.3:unit@attrs": "eb7b2ae367bbfda021633e8bd082d8a4e920c884a0327e922b100086dbef1b73",
        "activations/classifier.3:unit@meta": "4e555d0e664800c0cf3b40dc8243eb8fee0c0dfb4ec539137c43d42ccccfc52d",
        "activations/classifier.3@attrs": "08d89f87460454b4770e2fb25b1b48afe26aedea2ca930ba891573043f8f4c89",
        "activations/classifier.3@meta": "e8043e58b5d57196c716e5b1fd2224fab1609416410a03f912b5695ff2e44990",
        "activations/features.0": "902fb726664e1ac3abcfcfdd7de4f8d41dd17f81dbce51996c1fa303ccd7ee42",
        "activations/features.0:unit": "3dfad550a5e1cd92b601651c5d77b3577d128d449b54d05073501b846b2a24af",
        "activations/features.0:unit@attrs": "f33427457a5ff655f3e8878126836e2ae574715282bec6b53aca3f2ab35a8a7f",
        "activations/features.0:unit@meta": "b0e3673c170b512a8f9c47c0213a962b3342e5f4690dc505d647ce68b33e86ae",
        "activations/features.0@attrs": "5a3f6540658b75fc6c4e86589a19082bccdf89b237fb9ae5c83d71ff9a1aeecc",
        "activations/features.0@meta": "7997c52ec4e5de80a240d662df7c0e9fe247f560100d1843f021e4def77cf6f2",
        "activations@attrs": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "class": "15ec7bf0b50732b49f8228e07d24365338f9e3ab994b00af08e5a3bffe55fd8b",
        "class@attrs": "1f38695fa53d57f61a7913ea9c7ff27525de2a809481bc45ca633f6e37cb2fcf",
        "class@meta": "7fff9c6072461831a287744d0b8334a7b354659f1f6ce0d37e7b5fde8551bff3",
        "classes": "5bdc0646eeca3c3d2d0aa2d89fc448612d5160163a6ce45944fdcef2c787d4a9",
        "classes@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "classes@meta": "496f4ad55e13e1225d14a40d9279c73460b969accba8a31e22eebfc8fdfaf81f",
        "file_names": "f5e97483c764e0af4c45e5b6d0faf37e0a2abdd52195b3616fd05fd8b49351ff",
        "file_names@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "file_names@meta": "e7fb4732ac3d0b64c2a0ea028da6e2f2594f7125c0bfb3e791b8e10e00fc3a8d",
        "image": "6db65fd59fd356f6729140571b5bcd6bb3b83492a16e1bf0a3884442fc3c8a0e",
        "image@attrs": "8b5b9b14f7aa00c89ba9409c7df069deacb2c6a4bd42afa54aed8c63b16d510b",
        "image@meta": "1ed8309b1e01803423ec4fe55d7ec6aeb663119e33c86bf7d5645245675b1fe4",
        "targets": "c19a7f96ff7df68d6675624cd6be8a4e7399b2951ca7cc8b17eab812ff83c7d4",
        "targets@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "targets@meta": "75d0c265897189fafca97f88817f649a118880a0f840fc4052c9e144c943f9a9",
        "written": "040a5a009f9b9d5e4771742174142e74fa2d3e0aaa3df5717f01ade338d75d0e",
        "written@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "written@meta": "1c463f904185df1d67dbe7255087feab53992fb7f8a9f3af1e16dc37c80f7ad8"
    },
    "npy": {
        "exactnet/classifier.2/activations.npy": "4d69cd57da0ca2f3da135032e040d5d58916cad431e3c70ad1c1a33de9c22341",
        "exactnet/classifier.2/file_names.txt": "097fda140e94bc5a3218a3c4582d0587c8007926edcba0ff17eb342849243dab",
        "exactnet/classifier.2/targets.npy": "73882a55ce37f22168f0c8f17c59c6a187b31bebb86d67ceeb413a8610971072",
        "exactnet/features.2/activations.npy": "09fc7c4712c27ea44df440da06abe41dec950f44c1e4645f798565436e9f5a20",
        "exactnet/features.2/file_names.txt": "097fda140e94bc5a3218a3c4582d0587c8007926edcba0ff17eb342849243dab",
        "exactnet/features.2/targets.npy": "73882a55ce37f22168f0c8f17c59c6a187b31bebb86d67ceeb413a8610971072"
    },
    "zarr": {
        "activations/classifier.1/c/0/0": "c1e897bad27b25a233c77d7f85b8c2b2b429bc27ca4c920256e61da5819bab1e",
        "activations/classifier.1/c/0/1": "0ec6fdce589a44578400b33d25782767925b15c4ac07cabe4d23cd8f04694cb0",
        "activations/classifier.1/c/0/2": "db608dfc21cb5b16d81855b3c50581daaf19d32fbbfdfcb9f9ee6c245a82c363",
        "activations/classifier.1/c/0/3": "17b2732b70abeb8d01ab7e17286c626e6601240ef1a006d8e01aec5a36d61a13",
        "activations/classifier.1/c/1/0": "3aa543bf9da28b2b984007685b26c17643177ebe09e3661458e154a927234d98",
        "activations/classifier.1/c/1/1": "b350d49942af325f0ca1519f988ce33034d4bd73089d33a18281c587b3c46462",
        "activations/classifier.1/c/1/2": "753c7dedc175d61a028183083638485869a8a31b74d36ac98386183016a0dcab",
        "activations/classifier.1/c/1/3": "c782cd0f44791c2490a8bc7290e32653128920678e01f79efbada69d6b62866f",
        "activations/classifier.1/c/2/0": "1cc865eb363318d873ffca48e147ac88d53336c2f68d5ea9989fdab2e2fb2457",
        "activations/classifier.1/c/2/1": "c24e2d7c89fbfd2c02776d05cd2e6223d2f8d521020dfb4232981aeba38a4cf2",
        "activations/classifier.1/c/2/2": "e9f6182f46aca56a419df58418202df5d2f855c54e45d955da5a02c3a6425465",
        "activations/classifier.1/c/2/3": "e840eb915fb4d34e52b88149f5ffc96aa0ad16f14816f3687b2f64ef31576953",
        "activations/classifier.1/zarr.json": "9d3d94793c88c2b261493bcdc52e63e4f5a992e2fbf10146f04d22e90cdbb353",
        "activations/features.3/c/0/0/0/0": "4f2f3f92064e282d6c06fde76fbe0920ed0c77554b6e0c63ce889fcbb8f742c2",
        "activations/features.3/c/0/1/0/0": "42c0d7d0c14e8ad3074f492fdccd4716eef559467d5a53378f91c2f6fe6e7fb9",
        "activations/features.3/c/1/0/0/0": "f123f6c1c518fa2fc14ceb6e6de297b807c3c386a6dda65afbb3e34685dafd8b",
        "activations/features.3/c/1/1/0/0": "8995558964611083acf5a17711359bafe7651c332a775682ac9266f44da07cc5",
        "activations/features.3/c/2/0/0/0": "f7c25fa2941b9060a7123414ace6bb7615d9dfb83d4194aba4306bd5dd9cb324",
        "activations/features.3/c/2/1/0/0": "943330fd8e3c707e6bd1d4cf581fd7a29e3c55ae5d9515334eaa6bf963e4532a",
        "activations/features.3/zarr.json": "a2761df360c5844b1340a8cd60d15bd3e99278b4724bc2950854c92c80041dd3",
        "activations/zarr.json": "f14c83188834a33a797862ac70fd3e60be12cbd98a266d27fa72ef055e3cb562",
        "classes/c/0": "4b175952e7e00beb2eebc7cf5b7af8dfa67c5a8f128778485b3e3bfa63204797",
        "classes/zarr.json": "914688d3dd8cc20ff96942be35b458032cce8a59699eb8e7895ac71c4545d8c3",
        "classes_utf8/c/0/0": "484f9680187d82432a0d7d8fc1aad2307063ee6c44c03a670c4581b7d66ebf27",
        "classes_utf8/zarr.json": "346fcad5f9be1ceaa0401178f4b6926477b490e030e6eb3af77ff0cc23208f50",
        "file_names/c/0": "926f88b3123efa379af2ea64494c41b98d54d994923d6da4b34e21c20cee31bc",
        "file_names/zarr.json": "9665bb33f6a16f9d4c78b31cb383216d69d8fa2660924b3547c149bcd6d5412c",
        "file_names_utf8/c/0/0": "81441016abef905cbc378e687a4693d52018ed30417a76f99ff95144071e42aa",
        "file_names_utf8/zarr.json": "225bffca00fa1a1cb9d4188f2165ba83ca3e534ba30b9997305757bf0b6542f6",
        "targets/c/0": "0c5f17deafcd8f64b7f53795f5f07b2ba63420b0eebd34aff001df5516955a36",
        "targets/zarr.json": "da7cb8e99d946cf8c9b3b071fd6cf95218d04cc8c95542dfb0aaea04135a59cf",
        "written/c/0": "27ecd0a598e76f8a2fd264d427df0a119903e8eae384e478902541756f089dd1",
        "written/c/1": "27ecd0a598e76f8a2fd264d427df0a119903e8eae384e478902541756f089dd1",
        "written/c/2": "67abdd721024f0ff4e0b3f4c2fc13bc5bad42d0b7851d456d88d203d15aaa450",
        "written/zarr.json": "526ce340f321530d07c2e2a4fde9af330afa42ad6120e02c81915418dcb298c1",
        "zarr.json": "f15abdda0ec5c8253201fc97b2f7044bf4bb7ea8d603337c77d01a52e1cd6b43"
    }
}


if __name__ == "__main__":   # print the digests of the golden runs, to update GOLDEN deliberately
    import sys
    import tempfile
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_images as _make_images
    scratch = Path(tempfile.mkdtemp())
    golden = _make_images(scratch / "in", "classes", per_class=3, seed=11)
    print(json.dumps({name: run_and_digest(name, golden, scratch / name) for name in sorted(RUNS)},
                     indent=4, sort_keys=True))
