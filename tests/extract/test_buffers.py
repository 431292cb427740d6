"""Host buffers: outputs copied in exactly as torch's own cast would store them."""
import numpy as np
import pytest
import torch

from actstore.extract.buffers import HostBuffers

EDGES = [0.0, -0.0, 1.0, 65504.0, 65520.0, -70000.0, 6e-8, 3e-8, 1e-40, float("inf"), float("nan"), 0.1, 1 / 3]


@pytest.mark.parametrize("stored", ["float32", "float16"])
@pytest.mark.parametrize("source", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_a_batch_is_stored_bit_for_bit_as_torch_casts_it(stored, source):
    values = torch.tensor(EDGES + list(np.random.default_rng(0).standard_normal(51) * 1e3), dtype=torch.float64)
    conv = values.reshape(4, 2, 8).to(source)
    channels_last = torch.randn(4, 3, 5, 6).to(source).contiguous(memory_format=torch.channels_last)
    batch = HostBuffers(torch.device("cpu"), 4, stored, flatten=False).take()
    batch.fill("conv", conv)
    batch.fill("strided", channels_last)
    arrays = batch.arrays()
    for name, output in (("conv", conv), ("strided", channels_last)):
        expected = output.to(getattr(torch, stored)).contiguous().numpy()
        assert arrays[name].dtype == np.dtype(stored) and arrays[name].shape == expected.shape
        assert arrays[name].tobytes() == expected.tobytes()
