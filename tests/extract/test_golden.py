"""Stores written now are byte-identical to the golden digests below: same
chunk files, same array metadata, same attributes (apart from timestamps,
paths and the machine's versions).

The runs extract a small network whose arithmetic is exact in float32
(integer weights, inputs that are multiples of 1/256, every sum an integer
multiple of 1/256 below 2**24 of them), so its activations are the same bits
whatever order a CPU's kernels add in: AlexNet's linear layers differ in the
last bits between CPUs, which made earlier digests hold on one machine only.
Any change to the stored bytes must be deliberate and update the digests
(``PYTHONPATH=tests python tests/extract/test_golden.py`` prints them). The digests are read without
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
VOLATILE = {"created", "completed", "rechunked", "command_line", "in_path", "runs", "torch_threads",
            "torch_version", "torchvision_version", "claims"}

RUNS = {
    # name: (out path suffix, extract options)
    # One file per chunk, so the chunk files themselves are compared (sharded
    # stores equal these bit for bit: tests/store/test_sharding.py).
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
                            node.compression_opts, node.shuffle, node.fletcher32]
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
        "/": "8f70a954c4079c58241e68637ee0fe8ed7c59c777305d036c0fa19e25407fb17",
        "activations/classifier.3": "2d30bea994108856acb0ce7f4513936d838da3baf0d18629f40ad8d6ced3813a",
        "activations/classifier.3:unit": "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",
        "activations/classifier.3:unit@attrs": "eb7b2ae367bbfda021633e8bd082d8a4e920c884a0327e922b100086dbef1b73",
        "activations/classifier.3:unit@meta": "62096888ca7169173184e025538f6909ecf65d18b09fd263944fabe6424bf43c",
        "activations/classifier.3@attrs": "08d89f87460454b4770e2fb25b1b48afe26aedea2ca930ba891573043f8f4c89",
        "activations/classifier.3@meta": "ba99ec26f8c7423aced2838879bc44dd2e8db1005c42bd6840145ad1774f4f9c",
        "activations/features.0": "902fb726664e1ac3abcfcfdd7de4f8d41dd17f81dbce51996c1fa303ccd7ee42",
        "activations/features.0:unit": "3dfad550a5e1cd92b601651c5d77b3577d128d449b54d05073501b846b2a24af",
        "activations/features.0:unit@attrs": "f33427457a5ff655f3e8878126836e2ae574715282bec6b53aca3f2ab35a8a7f",
        "activations/features.0:unit@meta": "946084b569b639d3cd507b4b6dee68285c84093fd60ec743735f693de2bdcf21",
        "activations/features.0@attrs": "5a3f6540658b75fc6c4e86589a19082bccdf89b237fb9ae5c83d71ff9a1aeecc",
        "activations/features.0@meta": "88d5a942b61ec4e8c7f9b32d76069e1c4c11a99aa28f76e5beee6961d0710cd5",
        "activations@attrs": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "class": "15ec7bf0b50732b49f8228e07d24365338f9e3ab994b00af08e5a3bffe55fd8b",
        "class@attrs": "1f38695fa53d57f61a7913ea9c7ff27525de2a809481bc45ca633f6e37cb2fcf",
        "class@meta": "05d6f080fe2226ab7f7400a453b58f179a79c8bf87e9dae6351e1cde55cba1a7",
        "classes": "5bdc0646eeca3c3d2d0aa2d89fc448612d5160163a6ce45944fdcef2c787d4a9",
        "classes@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "classes@meta": "9b3f813e627d64d48c5fd15a3599e2be423c5e76cbfa4bd70ceb594b97c4b858",
        "file_names": "f5e97483c764e0af4c45e5b6d0faf37e0a2abdd52195b3616fd05fd8b49351ff",
        "file_names@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "file_names@meta": "4650270da1bcffa071c80380e05a607610fdefafd5565c04c7cec53ab1e8e978",
        "image": "6db65fd59fd356f6729140571b5bcd6bb3b83492a16e1bf0a3884442fc3c8a0e",
        "image@attrs": "8b5b9b14f7aa00c89ba9409c7df069deacb2c6a4bd42afa54aed8c63b16d510b",
        "image@meta": "9f8a77913ade11c9617a5f8f23092defc9d859de17b53f86d00687b4509f5708",
        "targets": "c19a7f96ff7df68d6675624cd6be8a4e7399b2951ca7cc8b17eab812ff83c7d4",
        "targets@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "targets@meta": "6205c7457e226cde3185565c4bf9787d7d034fbacbd023ef4e2afcac05d89962",
        "written": "040a5a009f9b9d5e4771742174142e74fa2d3e0aaa3df5717f01ade338d75d0e",
        "written@attrs": "9fa04e8df674d8dbd1638dfed0067beefb95315a1c8b947a20276b051ad0d60e",
        "written@meta": "1962e9dcae8270e955e1def1cd85a994c3ca12312464ad38f631750bcbc05cc6"
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
        "activations/classifier.1/c/0/0": "1ff5cb913e94d9191a58b55448f3fb71771d3cc1ada1206c21fbf5ec1dfad023",
        "activations/classifier.1/c/0/1": "fc29603fd5a53f44321a84f6db12b8dce6687d3df7475f7e659f6748b716788f",
        "activations/classifier.1/c/0/2": "1a8be257fbf0f3d4968db838655d3048a9c62616106f5f78bb95a36deaf8121a",
        "activations/classifier.1/c/0/3": "1b45ae155310a266ebb5542501700beccbe82f50d16fc292ba5e15cbe3e3dc65",
        "activations/classifier.1/c/1/0": "3252b749ad031c8e997825067445761abb2f7e4e8417ac6037f16349a7d9db28",
        "activations/classifier.1/c/1/1": "b40e90abdfe6752ba4e6e3466e8bb51b97d668d0a57d4bf7abc5d0101b7172ef",
        "activations/classifier.1/c/1/2": "8e9f2d122226f632b05ce5e46f628e8465114fd6bb57d0c6bfc175aeb04f9f7e",
        "activations/classifier.1/c/1/3": "db8d63ae7f45de051948203c4cf28ed824c6ac47bcb401dcb5816ee319c37f5d",
        "activations/classifier.1/c/2/0": "e9a11c5416d5c6dc3d8eb588afd4a3f886dc0f7dcc77aa847fef2fcd71c2d65d",
        "activations/classifier.1/c/2/1": "6b11b7b191494052ac7216a556edaeb218e557998fbb96e49276329390fc1264",
        "activations/classifier.1/c/2/2": "ff78f7a78ce1531865e843c31205b5b64ebd553a498118fafdf59538c724f4ed",
        "activations/classifier.1/c/2/3": "8add1b6b78fc8990431330456a2d0c7f82f57e0080168125ce12b8f1ed5774b8",
        "activations/classifier.1/zarr.json": "3dc57ede0254353c9059258160aaa75dd38fcf98e1812cff751a408a6c6b46f8",
        "activations/features.3/c/0/0/0/0": "6dacfa8749be17f3ec3e2a45de34550622056f29466ef583de6e016240673858",
        "activations/features.3/c/0/1/0/0": "05717bdc6a299e1353a84e1dfb2a45933d33e7559917dd9dc57bca5909dff713",
        "activations/features.3/c/1/0/0/0": "5ece087624c9ebf2b2612901e6e6260663cbcf6dcd16e6b1cbc97db6e57c185e",
        "activations/features.3/c/1/1/0/0": "12ebe9886c5bd7c25a1193468a5fedbe221857d67ab8eb98e9287fb38aa2d85b",
        "activations/features.3/c/2/0/0/0": "d9d597aae055de53e719fbe6f0cec8781d24a95a4f3fbd773b39ec8f95f410c1",
        "activations/features.3/c/2/1/0/0": "283a85ef0d1fbd2f877b9136c21709a8d9ab2d39ef1c89221231ce686a97723e",
        "activations/features.3/zarr.json": "f86caec689effe737803f21c67544bd48345f18d67dfbb15957f17039875fcff",
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
        "zarr.json": "7aa0dcee80fe36bcebfcb9c0a1ae8675f1b2c557a1708ae9fe9a5a9827b6356f"
    }
}


if __name__ == "__main__":   # print the digests of the golden runs, to update GOLDEN deliberately
    import tempfile

    from conftest import make_images as _make_images
    scratch = Path(tempfile.mkdtemp())
    golden = _make_images(scratch / "in", "classes", per_class=3, seed=11)
    print(json.dumps({name: run_and_digest(name, golden, scratch / name) for name in sorted(RUNS)},
                     indent=4, sort_keys=True))
