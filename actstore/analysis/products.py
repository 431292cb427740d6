"""Where Gram blocks are multiplied: NumPy with BLAS on the CPU, or torch on
a device. A whole square (``X Xᵀ``) is BLAS ``syrk``: half the work.

Products are float64, or float32 summed into float64 every FLUSH_UNITS
units (:class:`GramSum`): twice BLAS's speed on a CPU, with relative errors
of a few 1e-7 on the sums, which correlation and cosine keep, where the
euclidean distance's ``q_i + q_j − 2 G_ij`` would lose digits to cancellation."""
from __future__ import annotations

from dataclasses import dataclass, field
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

    def zeros(self, shape: tuple[int, ...], dtype: Any = np.float64) -> Any:
        if self.torch is None:
            return np.zeros(shape, dtype=dtype)
        kind = self.torch.float32 if np.dtype(dtype) == np.float32 else self.torch.float64
        return self.torch.zeros(shape, dtype=kind, device=self.target)

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
        step = max(1, self.TEMP_BYTES // max(1, acc.itemsize * b.shape[0]))
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

    def contiguous(self, array: Any) -> Any:
        return np.ascontiguousarray(array) if self.torch is None else array.contiguous()

    def first_part(self, acc: Any) -> Any:
        """A zero float32 matrix of ``acc``'s shape for :meth:`widen`; on the
        CPU the first half of ``acc``'s own (zero) memory."""
        if self.torch is not None:
            return self.zeros(acc.shape, np.float32)
        return acc.reshape(-1).view(np.float32)[:acc.size].reshape(acc.shape)

    def widen(self, acc: Any, part: Any) -> None:
        """``acc[...] = part``, where on the CPU ``part`` is :meth:`first_part`
        of ``acc``: the rows are widened from the last, in blocks whose float64
        rows lie past every float32 row not yet widened."""
        if self.torch is not None:
            acc.copy_(part)
            return
        flat, cols = part.reshape(-1), acc.shape[1]
        stop = len(acc)
        while stop > 1:
            start = (stop + 1) // 2   # float64 rows start:stop begin at byte 8·cols·start >= 4·cols·stop
            acc[start:stop] = flat[start * cols:stop * cols].reshape(stop - start, cols)
            stop = start
        if stop == 1:
            acc[0] = flat[:cols].copy()

    def add_lower(self, acc: Any, part: Any, square: bool) -> None:
        """``acc += part`` (float32 into float64); for a square filled by
        :meth:`add_product` only its lower triangle, where the sums are."""
        if self.torch is not None or not square:
            acc += part
            return
        step = max(1, self.TEMP_BYTES // max(1, 8 * len(acc)))
        for start in range(0, len(acc), step):
            stop = min(len(acc), start + step)
            acc[start:stop, :stop] += part[start:stop, :stop]


class GramSum:
    """Rows of ``X Xᵀ`` summed over blocks of units (the columns of X) in
    float64. With ``single``, the products are float32 (blocks must be
    float32) gathered in a float32 part that is added to the float64 sum
    every FLUSH_UNITS units, so that no float32 sum runs over more units.
    On the CPU the first part lives in the first half of the float64 sum's
    own memory and is widened in place: no more memory than float64 products
    while the layer has at most FLUSH_UNITS units (fresh pages cost)."""

    FLUSH_UNITS = 8192

    def __init__(self, backend: Backend, shape: tuple[int, int], single: bool) -> None:
        self.backend, self.single, self.shape = backend, single, shape
        self.acc = backend.zeros(shape)
        self.part = backend.first_part(self.acc) if single else None
        self.widened = not single
        self.units = 0
        self.square = shape[0] == shape[1]

    def add(self, a: Any, b: Any) -> None:
        """Add ``a @ b.T`` (``a`` is ``b``, or rows of it)."""
        if not self.single:
            self.backend.add_product(self.acc, a, b)
            return
        width = b.shape[1]
        if width > self.FLUSH_UNITS:   # no float32 sum over more units: in pieces
            for first in range(0, width, self.FLUSH_UNITS):
                piece = self.backend.contiguous(b[:, first:first + self.FLUSH_UNITS])
                self.add(piece if a is b else self.backend.contiguous(a[:, first:first + self.FLUSH_UNITS]), piece)
            return
        if self.units + width > self.FLUSH_UNITS:
            self._flush()
        if self.part is None:
            self.part = self.backend.zeros(self.shape, np.float32)
        self.backend.add_product(self.part, a, b)
        self.units += width

    def _flush(self) -> None:
        if not self.widened:
            self.backend.widen(self.acc, self.part)
            self.widened, self.part = True, None
        elif self.units:
            self.backend.add_lower(self.acc, self.part, self.square)
            self.part[...] = 0
        self.units = 0

    def result(self) -> np.ndarray:
        """The float64 sum as a NumPy array, whole where it is a square."""
        if not self.widened:   # one part: made whole in float32, half the bytes to copy
            if self.square:
                self.backend.symmetric(self.part)
            self._flush()
            return self.backend.numpy(self.acc)
        if self.single:
            self._flush()
            self.part = None
        return self.backend.numpy(self.backend.symmetric(self.acc) if self.square else self.acc)


@dataclass
class MeanRows:
    """Before float32 products, ``z = y − α v`` in each block, ``v`` the
    block's mean row and ``α`` each row's coefficient on it (least squares,
    so ``|z| <= |y|``). Rows that share large units (ReLU layers; cosine)
    make float32 sums of ``y·y`` lose digits (1e-6 to 4e-6); sums of ``z·z``
    do not, and :meth:`add_back` adds the rest in float64:
    ``y_i·y_j = z_i·z_j + α_i α_j c + α_i (z_j·v) + α_j (z_i·v)``, ``c = v·v``.
    SciPy's BLAS throughout, as for the products: NumPy's own BLAS threads
    would spin beside them."""

    BYTES = 60   # kept per row and block: α (float32) here and in L, R; z·v likewise

    v: list = field(default_factory=list)
    alpha: list = field(default_factory=list)
    c: list = field(default_factory=list)
    cross: list = field(default_factory=list)

    def take_out(self, block: np.ndarray, k: int) -> None:
        """Block ``k`` (float32, C order) becomes ``z`` in place. The first pass
        fixes ``v`` and ``α``; later passes take the same out."""
        from scipy.linalg.blas import sgemv, sger
        if k == len(self.v):   # any v keeps the identity exact: the mean row, in float32
            v = sgemv(1 / len(block), block.T, np.ones(len(block), np.float32))
            c = float(np.square(v, dtype=np.float64).sum())
            self.v.append(v)
            self.c.append(c)
            self.alpha.append(sgemv(1 / c, block.T, v, trans=1) if c > 0 else np.zeros(len(block), np.float32))
        v, alpha = self.v[k], self.alpha[k]
        sger(-1.0, v, alpha, a=block.T, overwrite_a=1)   # block.T (Fortran order) −= v αᵀ, in place
        if k == len(self.cross):
            self.cross.append(sgemv(1.0, block.T, v, trans=1).astype(np.float64))

    def add_back(self, gram: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``Σ z zᵀ`` made rows of ``Σ y yᵀ``: ``+= L Rᵀ`` in place."""
        if not self.alpha:
            return gram
        from scipy.linalg.blas import dgemm
        alpha, cross = np.stack(self.alpha, axis=1).astype(np.float64), np.stack(self.cross, axis=1)
        left = np.hstack([alpha[start:stop] * np.asarray(self.c), alpha[start:stop], cross[start:stop]])
        right = np.hstack([alpha, cross, alpha])
        dgemm(1.0, right, left, beta=1.0, c=gram.T, trans_b=1, overwrite_c=1)   # gram.T += R Lᵀ
        return gram


def _syrk(acc: np.ndarray, block: np.ndarray) -> bool:
    """``acc`` (C order, n×n) += ``block block.T`` in its lower triangle, in place,
    with BLAS syrk (float64 or float32); False where SciPy is missing or the
    arrays do not fit it."""
    try:
        from scipy.linalg.blas import dsyrk, ssyrk
    except ImportError:
        return False
    if not (acc.flags.c_contiguous and block.flags.c_contiguous and acc.dtype == block.dtype
            and acc.dtype in (np.float64, np.float32)):
        return False
    syrk = dsyrk if acc.dtype == np.float64 else ssyrk
    result = syrk(1.0, block.T, beta=1.0, c=acc.T, trans=1, lower=0, overwrite_c=1)
    if not np.shares_memory(result, acc):
        acc[...] = result.T
    return True
