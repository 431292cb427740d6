"""Stores written now are byte-identical to the golden digests below: same
chunk files, same array metadata, same attributes (apart from timestamps,
paths and the machine's versions).

The digests were first computed with the code from before extraction became a
package (commit 0988995), then recomputed once for the deliberate format
changes of release 0.2 (NaN fill values, dimension scales, plain attributes,
the recorded layer order and batch size): the activation chunk files and
decoded arrays kept their digests through that change. Any other change to
the stored bytes must be as deliberate and update them. The digests are read
without actstore (zarr, h5py and plain files), so they do not depend on the
code under test.
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
    "zarr": (".zarr", dict(module_names=["features.3", "classifier.4"], chunk_images=4,
                           chunk_channels=64, zarr_shard_rows=0)),
    "hdf5": (".h5", dict(module_names=["features.0", "classifier.1"], chunk_images=4,
                         dtype="float16", flatten_acts=True, compression="lz4")),
    "npy": ("", dict(module_names=["features.5", "classifier.4"], file_format="npy",
                     flatten_acts=True)),
}


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
    extract(model_name="alexnet", weights="none", rnd_seed=7, in_path=images, out_path=out,
            batch_size=5, num_workers=0, quiet=True, **options)
    return digests(out)


@pytest.fixture(scope="module")
def golden_images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("golden") / "in", "classes", per_class=3, seed=11)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_stores_are_byte_identical_to_the_golden_digests(name, golden_images, tmp_path):
    assert run_and_digest(name, golden_images, tmp_path) == GOLDEN[name]


GOLDEN: dict[str, dict[str, str]] = {
    "hdf5": {
        "/": "14cdb419be5635702c8aa0f44896426f797a90279cb811d0cf493f7bda0ddbed",
        "activations/classifier.1": "4453d55e791669c688deeaca62dcd18755cf73b6adc56d979b97e65d287c0f91",
        "activations/classifier.1:unit": "4fe7b59af6de3b665b67788cc2f99892ab827efae3a467342b3bb4e3bc8e5bfe",
        "activations/classifier.1:unit@attrs": "cbbcb2f7e7ce6edb6092b0d3819ed00fccd6ff3ebb04cd5dc40419b3799df1d5",
        "activations/classifier.1:unit@meta": "66e4f1142e71081efef6cdf56ff74b32e2d43a7d41d563dc455e1ab29feaf893",
        "activations/classifier.1@attrs": "86704d6dcd56e9c60d9332e025526cbd082b50b07c984b597072ca63330bec70",
        "activations/classifier.1@meta": "6097d34bcb49f5c3d953f12862d74b307d8d3f5ae339cdd860d18427c89e487a",
        "activations/features.0": "9f622313a7f8e8fac5b3a28cb2173762df08d732f197f278f3f95ad7c61acf78",
        "activations/features.0:unit": "a468d8a309a9840df05148c1859a0f2df206c5b5a3bf9b3eed47812a852c5abf",
        "activations/features.0:unit@attrs": "561176bbde0849057191baf5baf013b0d8560444c16cfe113a118b11557d2449",
        "activations/features.0:unit@meta": "6b3e6cc05e36e0e2fb8c07abd361d4a514e068bae9726aa4b9597032e4d4f558",
        "activations/features.0@attrs": "3da97de379a9eeca000f0ed041cb6b8db1cda2b73b3d378dec647e1bf4b9aa85",
        "activations/features.0@meta": "4c20c061abb328e77a24a855ff3bd88772027bec701b846f4179051cf7c078d7",
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
        "alexnet/classifier.4/activations.npy": "40429486ac99fcc36ea6a44f961fe51430a50351f7507467d22df64e9c7f1c2b",
        "alexnet/classifier.4/file_names.txt": "097fda140e94bc5a3218a3c4582d0587c8007926edcba0ff17eb342849243dab",
        "alexnet/classifier.4/targets.npy": "73882a55ce37f22168f0c8f17c59c6a187b31bebb86d67ceeb413a8610971072",
        "alexnet/features.5/activations.npy": "1422af36f8102730bac1d699e4f071fef86ff73c5a2449c4be9d135d495e984d",
        "alexnet/features.5/file_names.txt": "097fda140e94bc5a3218a3c4582d0587c8007926edcba0ff17eb342849243dab",
        "alexnet/features.5/targets.npy": "73882a55ce37f22168f0c8f17c59c6a187b31bebb86d67ceeb413a8610971072"
    },
    "zarr": {
        "activations/classifier.4/c/0/0": "07867aba4e18fa92f8be9761a4327deac0492ef259c399e44cf9d4ac5e8c025b",
        "activations/classifier.4/c/0/1": "201351a733f8530a732a12c257c73c592bfa8d9fa1995aca1a9d02002c140ebb",
        "activations/classifier.4/c/0/10": "445568c6418f51bb7982f73b130823c5cbd96d4094f7ad5baa61f37f5473b541",
        "activations/classifier.4/c/0/11": "efba37fc65e403b196a271b095cdd19e3e00c079cad0e0d63959b3e74236552d",
        "activations/classifier.4/c/0/12": "82a6a8832c57c5c09f9f852159269590648ec974212c1350cb4131ce1409bf07",
        "activations/classifier.4/c/0/13": "6499eb02f2ea46b1651a45cf0f9ed39b4e0defc91eaa511d5856f2dadd3ee60c",
        "activations/classifier.4/c/0/14": "1cf6477cbce5c78a96ed7f3754f39480ee9f20204552bf180af24dd144f77067",
        "activations/classifier.4/c/0/15": "02461a8bda75839580dd48bf0a1735184faed3d0fc447ae1aee9685d63cbf115",
        "activations/classifier.4/c/0/16": "b791e23a489b9aa7564fc99eb824df23e6c42fc5dc4319959ae5acd75bc26202",
        "activations/classifier.4/c/0/17": "a93f8da742910949debf4896dc1cf51d16a23ba1dcfd80bee622647beac7d3c2",
        "activations/classifier.4/c/0/18": "131b96f133af90e8c34c7442f29ac94628ef0934ee24de27c044da13ca8ca49e",
        "activations/classifier.4/c/0/19": "5aef52062d6354d1769d02591218d01e93fe948a3c6d29ab71b3157f18602590",
        "activations/classifier.4/c/0/2": "9fac5f1e94303ae3f835a1da3b67b325c62d3f098f84922aad0ca481390c7568",
        "activations/classifier.4/c/0/20": "62421208069333f67526f23e916eb416dcf5afeabea3da1448b0b28eb98557b6",
        "activations/classifier.4/c/0/21": "a688ffab81f3c62e27030f399422b1f448a86870c1be4e4da2db184b50759751",
        "activations/classifier.4/c/0/22": "b5ab8abd9bc43b5eac59e867b9b0d882bdbbd29409300d97a71a02a78d048c0c",
        "activations/classifier.4/c/0/23": "6e43a395f509248743ee0022021f4429a371c2ca2e4f84fc449520b88e85ce0a",
        "activations/classifier.4/c/0/24": "45a9ea5c49992d8ca71c42ec6c2614d4b597f570a83f56a6b7d600a51f79806d",
        "activations/classifier.4/c/0/25": "250594c787a48410c9636ef5e84cfc36ceff1c1529c8f106711553edeb2a2e0b",
        "activations/classifier.4/c/0/26": "2ca50794b15e6c12c4093966aaed45a74309418d39fd95d0c1a39082c383ca32",
        "activations/classifier.4/c/0/27": "a224f5862904c27ef9c3e5758374dc81d782ec22b4137f98faf44bef5aa8626c",
        "activations/classifier.4/c/0/28": "b5b039cf03dd36907f564f2de2f0f9a0a3bd077b924761d3abfffd983a526bd2",
        "activations/classifier.4/c/0/29": "3c6ff29e6264e237d8c0b33d047b50ba1ae87573d9fcf5beb90d68f08d82c508",
        "activations/classifier.4/c/0/3": "6e8e995809985d83cbc6ae85b383832ebcb14197602029c2ae47259c0ca60b12",
        "activations/classifier.4/c/0/30": "5a7a1706b4b2357e0879a6e2842b8026c5006b95c1db210cb609821f60fcf421",
        "activations/classifier.4/c/0/31": "fcd51fdab25191384c56f8bef335f3099bc8c995e13654c3713e632b0e69a4cf",
        "activations/classifier.4/c/0/32": "1d076b86c6983bb69df31408d323498539e97f9e23a9c87640001c1e6193a409",
        "activations/classifier.4/c/0/33": "ad04b45e6b1ac7504e5ece9e18b371df523c57476e99af7c6d5e3cddb30078dd",
        "activations/classifier.4/c/0/34": "38aa64722d14cb4eb5e029203e5d242c4896228b8f8f566e32577cd1e7405010",
        "activations/classifier.4/c/0/35": "704c5d391e413dfe70647c81857804549eeb6c2706fcda0e2473d2c4d2eb8eb5",
        "activations/classifier.4/c/0/36": "0cf2d356b92d387403cfb02d39bfe9cc3ca08debdbbaf90837a24705a6ea7254",
        "activations/classifier.4/c/0/37": "53b8795b16072bbd0303e67906b625d72d133d31c96bdc256040973cd562b185",
        "activations/classifier.4/c/0/38": "5d5fc83ddbaf5261ed66be97421a94c326ad8eb7471043a864448f9dba3e5d07",
        "activations/classifier.4/c/0/39": "ee9bd77f10ce3e1ad4716abe3ba06e7907297048f26f1ad40bce332a2d1e97ec",
        "activations/classifier.4/c/0/4": "4baf937ed08f9e6ecd1a8693cf207cc2a374e151e43f3ed771257d39d1264436",
        "activations/classifier.4/c/0/40": "c0848565f75bd72a070ec9795baca09139e4b06d134df34c0d5785ecbb9dac4d",
        "activations/classifier.4/c/0/41": "c14a4e707e73fbe4bf1dfc54ee802edf477326e05578c1081c24b8e05b69b3bf",
        "activations/classifier.4/c/0/42": "918ae0f89d4bf363196337230b3f8200518290cb54ed5ffd1f3749fcbb93eef8",
        "activations/classifier.4/c/0/43": "09bf546ba9eed74a2fd83dbca4641598bc80c8bfbc36d5f9352ae24d44348ea5",
        "activations/classifier.4/c/0/44": "a2974e5f335df018951729d34504e75aa3894eb6b9d645eaff2a57112dbdb418",
        "activations/classifier.4/c/0/45": "085dd11edc40aef62e47fdb8280ee6b244a9e398924cf6767c65b50e9dfc39f2",
        "activations/classifier.4/c/0/46": "877a0ae274e7d1cf4d5e654eae1fdee983618476a438a9601155a9b8efa45e61",
        "activations/classifier.4/c/0/47": "d8903f4779003637b9932d72e0ac66988cda810fe8199a4f7b410846f4f11469",
        "activations/classifier.4/c/0/48": "e28a92fdcde391e53e8b09c6c9b70dd5962e9c0097fedc546f31798f9586ed2f",
        "activations/classifier.4/c/0/49": "8404594dad8257397d8ee3991c9694bb4fdea08b90ea500d9f694d21149f7d6f",
        "activations/classifier.4/c/0/5": "e98e4d8ddd3f3127a586cc1f50a61088efa12962add428a32179e9342912495e",
        "activations/classifier.4/c/0/50": "d4772061d3838390711a7588d9bf0fab92c3c811f3c39c476ed6a40cc999c232",
        "activations/classifier.4/c/0/51": "846ec020d6212e0808edfa2b5de5f75873415025b41f4b27dcd605217316a14d",
        "activations/classifier.4/c/0/52": "f39b5d54f5ebfbb51ac4542851e8a485d219ab7a347dae2e5a5827df0ca55b7a",
        "activations/classifier.4/c/0/53": "b6a9331819fc76840db95afd0d2289fc73d9cbf923166303bb0da6f99062bd19",
        "activations/classifier.4/c/0/54": "1a6e6d4497374c8a94f543541f53f6519c93f2eb777c97c45a0dd4bad6e5d508",
        "activations/classifier.4/c/0/55": "31290328986596295edf8a51cef4b45fbdd0bf74834aad5b448018dae02e4033",
        "activations/classifier.4/c/0/56": "01655becc0ed0ae9b079a6e13d6a1bae9668eac0701154291c434b4c68051533",
        "activations/classifier.4/c/0/57": "78c1ee87cecb764616513e027f0b6c2c9a5c8aa20ea7881c7855229fc9db89e8",
        "activations/classifier.4/c/0/58": "fb3e373295af973f085a648622bbc9b16fb7db6940f88b810929708cba424a78",
        "activations/classifier.4/c/0/59": "d7c10fde9dc88d8a240484db8bd689f721a7f8bda04417ec293405790d1368a4",
        "activations/classifier.4/c/0/6": "28f7e4f3582f28723db8bda1bd4978e9d3ad080d0923f999194fbdfa64e51773",
        "activations/classifier.4/c/0/60": "37d7f8694f4712f4df7027ef6be89e5299ca5e5ddcdead1e3b3a941ac4db86a1",
        "activations/classifier.4/c/0/61": "96d375423c99f7b270591beecd164ffb9eb64f21b2465c633fbc416455960373",
        "activations/classifier.4/c/0/62": "bfd21d62f44a3715ee48d324a19168fce5de3c967a3144d0873efe165fae57e1",
        "activations/classifier.4/c/0/63": "531c4c91c8d3d2e92fa564831fa7c3ce468832522e8024796d8b8d2ebdb6a859",
        "activations/classifier.4/c/0/7": "ed484ac96e21c11074e974b2fb642e58a3d46aabb7bffab660592e4f3a7d7c86",
        "activations/classifier.4/c/0/8": "46c40d54ec4803a5266eea1000af15ee859ebfa88b8153425049c509851724d0",
        "activations/classifier.4/c/0/9": "d483b76eab4bea1f4e3558a8bcb43fac26d8e493c654df15988327b4b2d2f915",
        "activations/classifier.4/c/1/0": "c70f750ef41e7b7138d99f75bb5b7af85d029806cd651236e0eca53162306ba2",
        "activations/classifier.4/c/1/1": "47620cd027b40bb359d416964f1fcdfc1699a88ce9ebf16707baf4830d294120",
        "activations/classifier.4/c/1/10": "942c127f0327f93d65b67cdc2216aa82c82a80ce0173be17ec1700cc9521b1ff",
        "activations/classifier.4/c/1/11": "c628d839125da9dedd28117be245925291ab25cda31456bac5acd9f3c8659f89",
        "activations/classifier.4/c/1/12": "1dd233034c434f091348b503d7c4e66ad22ff2118cf9ecbf3f7567b79b41f88f",
        "activations/classifier.4/c/1/13": "a405807555f3833e14c8e2202f61b2521d10c805f16a0e81f680ffebfdf797d5",
        "activations/classifier.4/c/1/14": "9639dafbcd5742406572b784cbbbb401cd8eb5f3ddcf89cbd0eb407108778406",
        "activations/classifier.4/c/1/15": "fc15cdf9f159522ace91aa2d241230f77ec25102737aa50332294786b47f3934",
        "activations/classifier.4/c/1/16": "2ba8deee84fa3dd05b4df559c3eecd99ff7817db274008569d62f7e5904ea6a0",
        "activations/classifier.4/c/1/17": "f226a0664ab2ed6895cb3b24a789fb67f5468b92c1abca587ba65acfcc166fb3",
        "activations/classifier.4/c/1/18": "61ec4c9f38495f3415755ccb0dab4998b7fcea070b6a84b22977fefcc8042c4e",
        "activations/classifier.4/c/1/19": "1a69c8871b99f99550bc57703e735240634346b4ed6bef6a4ffabbb1f71cd330",
        "activations/classifier.4/c/1/2": "4501298cafcf92473e0a05a418cfcdedb3a6449a502d26bc69ada06ef405e6fb",
        "activations/classifier.4/c/1/20": "03bd493535f8622bc956a25400bd50d253f6555f46afff5ed49577ef869b4fad",
        "activations/classifier.4/c/1/21": "392797a36fd8505d59bdc5479810b9ab639d57e30f72a00e0ee282f7154884c2",
        "activations/classifier.4/c/1/22": "15a23d064404f2cc0f31f0f5be0f7e43f3619069992c16dea8e9315d18c3a7c2",
        "activations/classifier.4/c/1/23": "4cf0bcc27acdead4cfd82290c56ed7c6c3c671c4b96f122e6871a18e3a849cd6",
        "activations/classifier.4/c/1/24": "a2825af64ee7867baa55ca51ba891dd5ddf69662f4cb02beeba8e775a0ec4d7d",
        "activations/classifier.4/c/1/25": "f4088a11ccbf137d1f34e17000401818af40e0c2a7b9af1b88f0be247898ad75",
        "activations/classifier.4/c/1/26": "f94dcba46a5a36e3e21b03519ad1596f6b44fbaebcbbfdf0aafc4afb7c316f54",
        "activations/classifier.4/c/1/27": "0f55ddf0fc185b5c2ceadfc8897277a9fcde1e290d40765f01c501a3c2ab18b7",
        "activations/classifier.4/c/1/28": "14fa9829e1b642fd73296fc4dfcdab76a52e3448604fc87a595f5cbdf28f6633",
        "activations/classifier.4/c/1/29": "4a56cfaa999054a70541cf8379b8cfc7e15c6d631d8e7cea3863c1a2d0961b3d",
        "activations/classifier.4/c/1/3": "1703be2d0aa65886ea43a682440313f2238c5c03ad574fe594e6e455a556b6b1",
        "activations/classifier.4/c/1/30": "f9d1dd6286d2552847b53c94c7717cc9740e0295c53e4824d30acef89fdc2ed4",
        "activations/classifier.4/c/1/31": "1f212dd128bdfb357f713416cee635fbf60d10f28a7b665a0c72846629018d24",
        "activations/classifier.4/c/1/32": "96f1582ed50cb1934ba3803f273491b5c625959d49349a847a4b733e51c9adaa",
        "activations/classifier.4/c/1/33": "ad5bcda5a5ac3f80df15f3aa06559dca54b7be308aa498fb01ef98e1364f2181",
        "activations/classifier.4/c/1/34": "3c683d30d6740d89e77951e141b52f89e858bd51350468e9361ea009c79dca62",
        "activations/classifier.4/c/1/35": "32ac8a0a82c79c5f8bdae36423eebece1c15eaa6f8d1756251e3eb25d85ead1e",
        "activations/classifier.4/c/1/36": "8a5f14d0018593affd3c4c6e665ff5f3ff92760ac721b5bd5c658f14ff9b0a3f",
        "activations/classifier.4/c/1/37": "e419cab8f9aa37189df1fcc4f6bddfaa0b0dfabf299ec01a0274508c6cb8803b",
        "activations/classifier.4/c/1/38": "7c69c4a8a0a9f109c83d83e60e18aa25dc14904f5b3cd66ed44612de30613340",
        "activations/classifier.4/c/1/39": "ee25e8079f2967298c2ce4b97a4d0bfdceff301af6a0cea9c1c7af9bc36a1c96",
        "activations/classifier.4/c/1/4": "cb8a6f4d1962dbc51cf549d1b3cef78ba32767b0e14b977fbf583efd098b355d",
        "activations/classifier.4/c/1/40": "282034fe2dbb4a259b6df8c7f0005bc345d3afbe34664eeef1bc3457461b2010",
        "activations/classifier.4/c/1/41": "be45d62d2db1d4ac92c4586940c20564972e92bf5b9132caf96c427f3d35c4ad",
        "activations/classifier.4/c/1/42": "6dad4ff03bb93503661f4fab953fb87a9a98f05ca2639f02124178a3c7ec2ea9",
        "activations/classifier.4/c/1/43": "565dc99975242439ff556489d89bcf599dc066576e06ea0e8e7054592e6361c5",
        "activations/classifier.4/c/1/44": "6af7a37d374b8a058e47643c1c4f7e577446e8754f08b7ff5e1722b90e7c0366",
        "activations/classifier.4/c/1/45": "85a5d34b8cef8d28abbe93474b858855208220ebf25b36666f7f131b1575d578",
        "activations/classifier.4/c/1/46": "a1f79d48a213479ea26e22661404ddda965a024cc74cf9b1873de7555c203a68",
        "activations/classifier.4/c/1/47": "a13f4f3c77b1958fdaf6064905c17110f630717afc993506d052043d378bb3a1",
        "activations/classifier.4/c/1/48": "28ebfb97cb561e0de393e44fd238fe95eae7fc99d9c3ed5dd31159efe9b30fba",
        "activations/classifier.4/c/1/49": "f66b9c52cb13229c7bb934c3cd7bdde9bd552711b6bc1ed723cb5c7bcbf7817f",
        "activations/classifier.4/c/1/5": "038d46065a252b976bb071d53b7418fa9ef81a26dc647ccbea7b3193879287db",
        "activations/classifier.4/c/1/50": "0076b741e06f3c8b1d09120ae6ac3140efc0f491db794cd7e3119194039ed2fd",
        "activations/classifier.4/c/1/51": "913f585a0ac2480ca72b14dd46748f202f303e997efca2d987ecd4c01a622a9f",
        "activations/classifier.4/c/1/52": "38da426e0e7d8978dd6f2f02a684730ecd995fbfaaaf526d90273aaf995d2a04",
        "activations/classifier.4/c/1/53": "6bea497ccb90f12d561825ff0c28ba7f22045af3deb944022e47ee57a4284975",
        "activations/classifier.4/c/1/54": "8410a430b26934feb3e0a0c8e68f6e161b5e82b8d4b2f43bdcbd2ca862500524",
        "activations/classifier.4/c/1/55": "09a93318facafd936c2292afd8516bd24626f78746b13d6995a593bb9209c8bf",
        "activations/classifier.4/c/1/56": "05b80cbe42be520d7d506f7151ccaf378c4ca059fbc3332600e3862016ee6e48",
        "activations/classifier.4/c/1/57": "ba1871be1539154ec5486c3575ac4ac4fa91cc5e27d23873af737d9a85cae9eb",
        "activations/classifier.4/c/1/58": "fa0672949d6a1f51ad9a4e61ea6fc148b0385852437898addb2795d01859b7e9",
        "activations/classifier.4/c/1/59": "a1ee90b535fb3b98af7cd841117f4d425da340874c702346ee54d45e1cb9ee65",
        "activations/classifier.4/c/1/6": "8a038dda4d177398c96a1667f227e904e12796495b24939c7c3ecbaa39a396a8",
        "activations/classifier.4/c/1/60": "02370075b9d4d1f0fa8477cb028c9b481ca209a61cb975143d25ed5a3f4a9353",
        "activations/classifier.4/c/1/61": "0c6ff777bfdcf489cd240fedb61715fab1b5cdd178c210b96160e259583dfcc4",
        "activations/classifier.4/c/1/62": "f4a5501b48c2da7ed9e914edbd7782e2e32284743bd471b35b86201aa1293e46",
        "activations/classifier.4/c/1/63": "12776d050b8bc4d5bb331f5f2a24374a34f5d19fe7e2166489686c0405b091b6",
        "activations/classifier.4/c/1/7": "7d1f78b8b3d14a6cc0acbcff52d878c3b5075fe4268eb01e7a08ed8c44dd6465",
        "activations/classifier.4/c/1/8": "6c9da5329c35cf0ecde9920509cbfcac135f5759dbfb54d64f3d1d45de19fcfd",
        "activations/classifier.4/c/1/9": "3272c8dcb10bc2de55d04ad29f9665a990fec68d3a61026773bb69bdfb2dc50a",
        "activations/classifier.4/c/2/0": "b5dc21c4ef15ee5784a1f849bddf98931354d3a0f4020832aa32499683df631f",
        "activations/classifier.4/c/2/1": "d0e56538e0fdb10171f06a7b6c5f27fd6099c113ede30f9bf974979e8cf87366",
        "activations/classifier.4/c/2/10": "8d76ade8d7b4536f292d57886034ceb50c42ed2950dcafaf9568b0789fc0703f",
        "activations/classifier.4/c/2/11": "93d28e0a416d2ca45a1f13162bbb044ab33d9466889f0a59e88f2ed6f1be3d01",
        "activations/classifier.4/c/2/12": "b5e0812967edb2511c1385d678ad3399d6918259758e7161ebf7f09f47656a6c",
        "activations/classifier.4/c/2/13": "7673fb128022c293e539d3bcbc1d27f651c0b67ed0b8e41e1ffec44d662f83b9",
        "activations/classifier.4/c/2/14": "dc5ce34b7c073328c167228bf58257b716cae350bd12ccbb01d1b1d0abc7445f",
        "activations/classifier.4/c/2/15": "b0ace3cf9b4cdfee273ecefcb52a793b3539269baabe817662152893af8836a8",
        "activations/classifier.4/c/2/16": "1544e386f959c020139fda472193f9083e8bb0404da7899a689d38b78ac70b4a",
        "activations/classifier.4/c/2/17": "63a294fb949fdd5e9b89ce8b69701f862fb8b132aaa735fa7e70ae4e6a8a3e76",
        "activations/classifier.4/c/2/18": "b4a846c323acfc7e83118e20fabc8724519e1e54f9cce75171008077f4e94525",
        "activations/classifier.4/c/2/19": "5774fc128590fa381a5a3cdc4114f8e38627411cc24c1e3f589891ce34b0acdf",
        "activations/classifier.4/c/2/2": "6f0e04fa8862388d52aacbc08c34a82fe6fde9c393b15bd97395e19de7696e78",
        "activations/classifier.4/c/2/20": "ca58ec80278cbdfc48705d859ed981c978195901a6e6e676d8e900547f61f0b8",
        "activations/classifier.4/c/2/21": "c76f50c63990af731902a4e62e4731169665c0bd6829c3c9808a264fc26c7a24",
        "activations/classifier.4/c/2/22": "6835f0c15e29a761ec0b5d2ead66527dc9250d773da7dcdb895352687babbbfa",
        "activations/classifier.4/c/2/23": "4ae50860ae17ba47ffcb36929dd77c506a16c0bd64ef092b14b73ba1c921ffab",
        "activations/classifier.4/c/2/24": "fe1d62c997a02766568117f9dffda52e7f98e934b13772d9c72b0f36f4169153",
        "activations/classifier.4/c/2/25": "29385f79c7da439c9beb0a80d24381c571a63d9b9eab5a6ae5c9c9c95c671938",
        "activations/classifier.4/c/2/26": "a1978f6fb4bd995bd843cf600b5e360013c38b7b42bccadf5afd9ac7502ab69c",
        "activations/classifier.4/c/2/27": "46a68f5babe8972d5486e1176c85a2b2dc268daf06f7e2e3574e5ee2dc490f19",
        "activations/classifier.4/c/2/28": "356f28439af20727a8d735b5deb28c625bd94a9e6332b38b1a5273d80e941c24",
        "activations/classifier.4/c/2/29": "e2db286f954f2743a4932035e2fe9215d4e8e2e7506d454373abaa712945ed09",
        "activations/classifier.4/c/2/3": "982990410ef51b8504d7e298a98d03dfa1cdeaafa1dd05817706a3c55343e9ce",
        "activations/classifier.4/c/2/30": "0d847eeb8c0497c11f72ac174306a164f838cff778778a5c8806f11cc2db4b5c",
        "activations/classifier.4/c/2/31": "58df27787b5303a0eac1f661476b0ef4c160f0dd56c41b4e58a3f44cec7d927b",
        "activations/classifier.4/c/2/32": "d726d3a4d5e4a74d71ca7df8f5a03be947f1028c35776bc476d3d3a580afa251",
        "activations/classifier.4/c/2/33": "535c3d7e762248c8960cdd76ab1921b879ae3789690fadbac0765ddc0700e38e",
        "activations/classifier.4/c/2/34": "852812a4f1136fc785f14f231ecc262620f1f6f404303206e4ee7bd77f93ca20",
        "activations/classifier.4/c/2/35": "6e0e29a9df656a01ac4ac3b66f1b7e12589e9a493fd9704dab57d294f3bf520c",
        "activations/classifier.4/c/2/36": "d22d12ff2b0e03489a809a183d3609c7b4a31362a1071fda4a225e30a9cd1681",
        "activations/classifier.4/c/2/37": "a1e84526c76cc2b8973fb4af3fe94310446e831f35cc15861566943e76e35202",
        "activations/classifier.4/c/2/38": "0ecc7cb94582a14b9f9970f6a412db8b154a6272cd078deef1323db610e730a3",
        "activations/classifier.4/c/2/39": "f5562851de7fcd2b8a6c3fdc3d4c56e9b642a89c5869372b1cdc58862b292301",
        "activations/classifier.4/c/2/4": "d8ba62c4cf810bf28615213245b31af260890efef3c4f000ae9343a671aec338",
        "activations/classifier.4/c/2/40": "717840fda8fd61dc05c74daf266dd7fd3098483c4b5d615e0ffd7742727de84a",
        "activations/classifier.4/c/2/41": "5c6c2ff0afff282f6d1f6778910321ad6625d284f7b436d101dd6a769a182763",
        "activations/classifier.4/c/2/42": "e48a4e13e5b2f5356ce37bc831874927d68155217fd1e4af0e6daf1db11abff5",
        "activations/classifier.4/c/2/43": "cfc08372d3b5bd5c1ba237ae64f0afe8d8a276f93dacdc539a48a63f26993d4d",
        "activations/classifier.4/c/2/44": "3a5658fa7ae335c9b4bc04e88a7f614d03a2b30ec49ccd177a0c8c347cc2c8bc",
        "activations/classifier.4/c/2/45": "74d6ef6812849f216160b4a3fa68946965905ed8897a5fb745e08e3b10eb91a5",
        "activations/classifier.4/c/2/46": "a976c7dd7c26e73e8644f8829bb908cd85fc4249c311588ff6c9d260f549c003",
        "activations/classifier.4/c/2/47": "27dc25cebe74a6fe49d0bc657d02487ee330dc4f30c91a1bfa45a5a9a37f0695",
        "activations/classifier.4/c/2/48": "7da6629e64e92b983d4bc5bbba044ecbf10df22c8b99adb458aa1bd9f4168393",
        "activations/classifier.4/c/2/49": "edfa1d0fdc2597a45d3b1754b7ef9ad7fce8b48cbfeba0a5d19983ea57fe8d78",
        "activations/classifier.4/c/2/5": "5e9698d7c326a81fdb86de825c4e0f7e72efca4f943f29e64a0deb49473a9515",
        "activations/classifier.4/c/2/50": "dd9216ac7f614530ea18f48cdc94c9968d0c092db00dc0ce3e5edc0c2554815e",
        "activations/classifier.4/c/2/51": "913a8456f2b426d952692143062be45fc7dc9123f62fe693dae9945638107641",
        "activations/classifier.4/c/2/52": "901085123b0e24850045d5b8966e8041a4a1e4915fa9c32ac07f10d6f00f51d3",
        "activations/classifier.4/c/2/53": "567e4b1ff0bf4163af5e0dbdd53b9a165fbf5a22790e9db70f173610b171acf5",
        "activations/classifier.4/c/2/54": "d9c5ff995d34b8f7f896e459c8f1055a296643c05725db612b577ccf37430fe2",
        "activations/classifier.4/c/2/55": "47fea350c74909b51bd7180b0eef015936eed756d2eb809171104f2ae870a9e8",
        "activations/classifier.4/c/2/56": "ebeff8c45b465645614b4fd71b2d5d6203d221074a3677b4aea531a3dc89e7a2",
        "activations/classifier.4/c/2/57": "583a8e34931b2214fe9f6170a348a61fb18f45257b0baf61e337d8c193e8581f",
        "activations/classifier.4/c/2/58": "88a2c37a4c5b611e80abba45212ace42622ca0f632c66d12b5e69ba1cb4a6bb1",
        "activations/classifier.4/c/2/59": "36309d32557460379d472520f8a1ef2d023473d3adf9ce12c035489a4cbe85c3",
        "activations/classifier.4/c/2/6": "c1ed5cb172d05cb73cd69f86c585da0df7400595763844082268068695cd5ca0",
        "activations/classifier.4/c/2/60": "029533745f1aa8e8800e571d167c46d40d430a0bd48ec44256f7b7870d3c1931",
        "activations/classifier.4/c/2/61": "1418fe28cef4a1d760aaad712b03dab4e81c121246beddde0298c4196caf56ba",
        "activations/classifier.4/c/2/62": "7a52a0c67126744ff73eff047ba28a287f1e00b24cedda0805c16ce8c55e9e44",
        "activations/classifier.4/c/2/63": "200039c1a23f3c76295309820b1e1b4b2da07e0c00a47fd72db5df259a0ba7c8",
        "activations/classifier.4/c/2/7": "63126649e736ce61e80ebfddd3771b4bfa823d4df3940d0b0e87ac168a4120a0",
        "activations/classifier.4/c/2/8": "03ce44cb5559409531e3977da8ac836880831e47cca63661cd6665b0579bf4c4",
        "activations/classifier.4/c/2/9": "5dfa617d869aa94167a517671d77573af33a17bf7228416487608687d19fd501",
        "activations/classifier.4/zarr.json": "3742b066abb1b8cd7289054f9a74a6750c61032688033b1cf503a62305a320d8",
        "activations/features.3/c/0/0/0/0": "d2ca8c748dd9fee63775231e3360227f3fc40a3728ae18058e5e374ea0f872ff",
        "activations/features.3/c/0/1/0/0": "24248d508f8361a2e5ecbfaf6afda250c2143658b331dfcc81aaec4e12ae1efd",
        "activations/features.3/c/0/2/0/0": "273a8e12f40d4aa8620d7fa4d3540577e44963cc3cb15bd7d57837c73dd1ae57",
        "activations/features.3/c/1/0/0/0": "6ce9b813886fd5e9fb8f8890e6d338ea690b46cb19b32ed0b652eb15a1859ca3",
        "activations/features.3/c/1/1/0/0": "60cdd05ebeada573c57f09ff1db3654c8499f44de877afe2286ce10110bedb4b",
        "activations/features.3/c/1/2/0/0": "3340ebaaf9f15479eaf80362d5f20c6397da1c69766ee349055b5009d52fce97",
        "activations/features.3/c/2/0/0/0": "008a74d14430804d965b337e56f187d0e69af064e53c3ef88ca4cfed51c71979",
        "activations/features.3/c/2/1/0/0": "e09873f867fa3779ca6b71c0b5997338cc8ba1e6ebc164540e34ad1aa6fc1066",
        "activations/features.3/c/2/2/0/0": "774dac969a1a76aa5e7d7d10861250267aae7da5fede0341c2539aaccac937f9",
        "activations/features.3/zarr.json": "ba971780523777f2ff981f9c57a9cd3f80c48466d8d5b2a525f034e97e39ff91",
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
        "zarr.json": "744955f8525f5440bd93aaf4cf248fed725d60c8bb2c8646ffc68d7e05945720"
    }
}
