"""Where Gram blocks are multiplied: NumPy with BLAS on the CPU, or torch on
a device. A whole square (``X Xᵀ``) is BLAS ``syrk``: half the work."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BadOptionError


class Backend:
    """Where Gram blocks are multiplied: NumPy (``device="cpu"``, BLAS threads)
    or torch on ``device`` (``"cuda"``, ``"cuda:1"``, or ``"torch:cpu"`` to run
    the torch code on the CPU). torch is imported only here, only then."""

    # rows of a product done at once: the temporary stays a few dozen MB
    TEMP_BYTES = 32 * 2**20

    def __init__(self, device: str | None = "cpu") -> None:
        self.device = device or "cpu"
        self.torch = None
        if self.device != "cpu":
            try:
                import torch
            except ImportError as error:
                raise BadOptionError(f"device={device!r} needs torch: pip install torch") from error
            self.torch = torch
            try:
                self.target = torch.device(self.device.removeprefix("torch:"))
            except RuntimeError as error:
                raise BadOptionError(f"device={device!r} is not a device: use cpu, cuda or cuda:N") from error
            if self.target.type == "cuda" and not torch.cuda.is_available():
                raise BadOptionError(f"device={device!r}, but torch finds no CUDA GPU here: use device='cpu'")

    def zeros(self, shape: tuple[int, ...]) -> Any:
        if self.torch is None:
            return np.zeros(shape)
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.target)

    def put(self, array: np.ndarray) -> Any:
        return array if self.torch is None else self.torch.from_numpy(np.ascontiguousarray(array)).to(self.target)

    def add_product(self, acc: Any, a: Any, b: Any) -> None:
        """``acc += a @ b.T`` without a temporary the size of ``acc``. For a
        whole square (``a`` is ``b``) NumPy uses BLAS ``syrk`` in place (half
        the work) and fills only the lower triangle: call :meth:`symmetric`."""
        if self.torch is not None:
            acc.addmm_(a, b.T)
            return
        if a is b and _syrk(acc, b):
            return
        step = max(1, self.TEMP_BYTES // max(1, 8 * b.shape[0]))
        for start in range(0, a.shape[0], step):
            acc[start:start + step] += a[start:start + step] @ b.T

    def symmetric(self, acc: Any) -> Any:
        """Copy the lower triangle of a square ``acc`` filled by :meth:`add_product`
        to the upper (harmless where the whole square was computed)."""
        if self.torch is not None:
            return acc
        n = len(acc)
        step = max(1, self.TEMP_BYTES // max(1, 8 * n))
        for start in range(0, n, step):
            stop = min(n, start + step)
            acc[start:stop, stop:] = acc[stop:, start:stop].T
            block = acc[start:stop, start:stop]
            upper = np.triu_indices(stop - start, 1)
            block[upper] = block.T[upper]
        return acc

    def numpy(self, value: Any) -> np.ndarray:
        return value if self.torch is None else value.cpu().numpy()


def _syrk(acc: np.ndarray, block: np.ndarray) -> bool:
    """``acc`` (C order, n×n) += ``block block.T`` in its lower triangle, in place,
    with BLAS dsyrk; False where SciPy is missing or the arrays do not fit it."""
    try:
        from scipy.linalg.blas import dsyrk
    except ImportError:
        return False
    if not (acc.flags.c_contiguous and block.flags.c_contiguous and acc.dtype == block.dtype == np.float64):
        return False
    result = dsyrk(1.0, block.T, beta=1.0, c=acc.T, trans=1, lower=0, overwrite_c=1)
    if not np.shares_memory(result, acc):
        acc[...] = result.T
    return True
