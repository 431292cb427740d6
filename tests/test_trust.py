"""Trust at the edges of a run: bad images mid-run, resumes that would change the
numbers, argument checks before anything is created, the legacy layout's files,
and the CLI's conventions."""
import numpy as np
import pytest

from actstore import extract, open_store
from actstore.errors import StoreConflictError

from conftest import make_images

FAST = dict(num_workers=0, quiet=True, chunk_images=4)
LAYERS = ["features.2", "classifier.6"]


def run(weights, images, out, **extra):
    return extract(model_name="alexnet", model_path=weights, in_path=images, out_path=out,
                   module_names=LAYERS, **{**FAST, "batch_size": 4, **extra})


def test_a_resume_with_another_batch_size_is_refused_naming_the_flag_and_value(tmp_path, image_dir,
                                                                                weights_file):
    weights, out = weights_file("alexnet"), tmp_path / "s.zarr"
    run(weights, image_dir, out, batch_size=8)
    with open_store(out) as store:
        assert store.attrs["fingerprint"]["batch_size"] == 8
    with pytest.raises(StoreConflictError) as refused:
        run(weights, image_dir, out, batch_size=5)
    assert str(refused.value) == (f"out path {out}: --batch-size 5 differs from the store's 8: rerun with "
                                  "--batch-size 8 to resume, or pass --overwrite to replace it")
    with pytest.raises(StoreConflictError, match=r"--amp bfloat16 differs from the store's none: rerun "
                                                 r"with --amp none to resume"):
        run(weights, image_dir, out, batch_size=8, amp="bfloat16")
    assert run(weights, image_dir, out, batch_size=8).resumed
