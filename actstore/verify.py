"""``actstore verify``: is a store whole, and does it hold what the model computes?

Checks that need only the store (schema, every chunk decodes, every row
written, finite values, unique file names) and, on request, recomputes a few
random images through the model and compares them with their stored rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .store import location, open_store, repair_store
from .store.schema import store_problems


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    """One line per check; ``ok`` only when every check holds."""

    path: Path | str
    checks: list[Check] = field(default_factory=list)
    nonfinite: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))


def verify(path: str | Path, *, recompute: int = 0, model_path: str | Path | None = None,
           in_path: str | Path | None = None, device: str = "cpu", seed: int = 0,
           rtol: float | None = None, atol: float | None = None, repair: bool = False) -> VerifyReport:
    """Check a store; with ``recompute=K`` also recompute K random images.

    Args:
        path: the store.
        recompute: how many random rows to recompute through the model.
        model_path: the weights file the store was made with (its SHA-256 must
            match the one recorded); not needed for random or downloadable weights.
        in_path: the image folder, if it moved since extraction.
        repair: first clear the "open for write" flag a killed HDF5 writer
            leaves (as ``h5clear -s``), so that every HDF5 reader opens the file.

    Returns:
        A :class:`VerifyReport`.

    Raises:
        UserError: the store cannot be opened; recompute inputs are missing.

    Example:
        >>> verify("alexnet.zarr", recompute=8, model_path="alexnet.pth").ok   # doctest: +SKIP
        True
    """
    report = VerifyReport(location(path))
    if repair:
        report.add("repair", True, "; ".join(repair_store(path)) or "nothing to repair")
    with open_store(path) as store:
        problems = store_problems(store)
        report.add("schema", not problems, "; ".join(problems[:5]) or "attributes match the schemas")

        written = store.written
        missing = int((~(written | store.skipped)).sum())
        skipped = f" ({int(store.skipped.sum())} skipped: unreadable images)" if store.skipped.any() else ""
        report.add("rows written", missing == 0 and store.status == "complete",
                   f"{int(written.sum())}/{len(store)} rows written{skipped}, status {store.status}")

        names, counts = np.unique(store.file_names, return_counts=True)
        dupes = names[counts > 1]
        report.add("unique file names", not len(dupes),
                   f"{len(dupes)} repeated (e.g. {', '.join(dupes[:3])})" if len(dupes) else f"{len(names)} unique")

        _check_chunks(store, written, report)

        if recompute:
            report.add(*_recompute(store, recompute, model_path, in_path, device, seed, rtol, atol))
    return report


def _check_chunks(store, written: np.ndarray, report: VerifyReport) -> None:
    """Every chunk of every written row decodes; count NaN and Inf per layer."""
    chunk_errors, finite_ok = [], True
    for layer in store.layers:
        array = store[layer]
        nan = inf = 0
        step = array.chunks[0]
        for start in range(0, len(store), step):
            rows = np.flatnonzero(written[start:start + step]) + start
            if not len(rows):
                continue
            try:
                block = array[rows]
            except Exception as error:  # a chunk that does not decode
                chunk_errors.append(f"{layer} rows {start}-{start + step - 1}: {type(error).__name__}: {error}")
                continue
            nan += int(np.isnan(block).sum())
            inf += int(np.isinf(block).sum())
        report.nonfinite[layer] = {"nan": nan, "inf": inf}
        finite_ok = finite_ok and nan == 0 and inf == 0
    report.add("chunks decode", not chunk_errors,
               "; ".join(chunk_errors[:3]) or "every stored chunk of every written row decodes")
    report.add("finite values", finite_ok,
               ", ".join(f"{k}: {v['nan']} NaN, {v['inf']} Inf" for k, v in report.nonfinite.items()))


def _recompute(store, k: int, model_path, in_path, device, seed, rtol, atol) -> tuple[str, bool, str]:
    import torch

    from .capture import Extractor
    from .extract.options import resolve_device
    from .images import ImageSet
    from .models import reload

    attrs = store.attrs
    model = reload(attrs, model_path)
    root = Path(in_path or attrs["in_path"])
    if not root.is_dir():
        raise UserError(f"image folder {root} not found: pass --in-path")
    rows = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(store.written),
                                                      size=min(k, int(store.written.sum())), replace=False))
    images = ImageSet(root=root, file_names=tuple(store.file_names[rows]),
                      targets=tuple(int(t) for t in store.targets[rows]))
    torch_device = resolve_device(device)
    model.module.to(torch_device)
    extractor = Extractor(model, store.layers)
    batch = torch.stack([model.transform(images.load(i)) for i in range(len(images))]).to(torch_device)
    extractor.probe(batch)   # finds sequence-first layers as extract did
    outputs = extractor(batch)
    worst, failures = 0.0, []
    half = attrs.get("dtype") == "float16"
    rtol = rtol if rtol is not None else (2e-3 if half else 1e-4)
    atol = atol if atol is not None else (2e-3 if half else 1e-5)
    for layer in store.layers:
        expected = outputs[layer].to(getattr(torch, attrs.get("dtype", "float32"))).cpu().numpy()
        stored = store[layer][rows]
        expected = expected.reshape(stored.shape)
        diff = float(np.max(np.abs(stored.astype(np.float64) - expected.astype(np.float64))))
        worst = max(worst, diff)
        if not np.allclose(stored, expected, rtol=rtol, atol=atol):
            failures.append(f"{layer} (max |diff| {diff:.3g})")
    detail = (f"{len(rows)} images recomputed; max |diff| {worst:.3g}"
              + (f"; differ: {', '.join(failures)}" if failures else ""))
    return "recompute", not failures, detail
