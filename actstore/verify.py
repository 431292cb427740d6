"""``actstore verify``: is a store whole, and does it hold what the model computes?

Checks that need only the store (schema, every row written, unique file
names, every chunk or shard of every written row present and decoding,
finite values) and, on request, recomputes a few
random images through the model and compares them with their stored rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BadImagesError
from .store import location, open_store, repair_store
from .store.integrity import describe_runs, scan_layer
from .store.metadata.schema import store_problems


@dataclass
class Check:
    """One check's verdict; a ``skipped`` one (it makes no sense for this store) counts as ok."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False


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
           rtol: float | None = None, atol: float | None = None, repair: bool = False,
           quick: bool = False) -> VerifyReport:
    """Check a store; with ``recompute=K`` also recompute K random images.

    Args:
        path: the store.
        recompute: how many random rows to recompute through the model.
        model_path: the weights file the store was made with (its SHA-256 must
            match the one recorded); not needed for random or downloadable weights.
        in_path: the image folder, if it moved since extraction.
        repair: first clear the "open for write" flag a killed HDF5 writer
            leaves (as ``h5clear -s``), so that every HDF5 reader opens the file.
        quick: check that every chunk (shard) of every written row is
            present, without decoding them (no checksums, no finite values).

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
        skipped = f" ({int(store.skipped.sum())} skipped: unreadable images)" if store.skipped.any() else ""
        report.add("rows written", store.complete,
                   f"{int(written.sum())}/{len(store)} rows written{skipped}, status {store.status}")

        report.checks += [_unique_names(store), _chunks_present(store)]
        if quick:
            report.checks.append(Check("chunks decode", True, "skipped (--quick): checksums and values not "
                                       "read", skipped=True))
        else:
            _check_chunks(store, report)

        if recompute:
            report.checks.append(_recompute(store, recompute, model_path, in_path, device, seed, rtol, atol))
    return report


def _unique_names(store) -> Check:
    if not (store.attrs.get("imported_from") or {}).get("file_names_known", True):
        return Check("unique file names", True, "skipped: imported from files that did not name the images, "
                     "so the store has no file names", skipped=True)
    names, counts = np.unique(store.file_names, return_counts=True)
    dupes = names[counts > 1]
    return Check("unique file names", not len(dupes), f"{len(dupes)} repeated (e.g. {', '.join(dupes[:3])})"
                 if len(dupes) else f"{len(names)} unique")


def _chunks_present(store) -> Check:
    lost = {layer: store.missing_rows(layer) for layer in store.layers}
    lost = {layer: runs for layer, runs in lost.items() if runs}
    return Check("chunks present", not lost,
                 "; ".join(f"{layer} rows {describe_runs(runs)} have no stored chunk (lost): run the extract "
                           "command again to recompute them, or restore the files" for layer, runs in lost.items())
                 or "every written row has its stored chunk in every layer")


def _check_chunks(store, report: VerifyReport) -> None:
    """Every chunk of every written row is there, decodes and matches its
    checksum; count NaN and Inf per layer."""
    chunk_errors, finite_ok = [], True
    for layer in store.layers:
        nan = inf = 0
        for _rows, block in scan_layer(store, layer):
            if isinstance(block, Exception):   # lost or corrupt: the message names rows and file
                chunk_errors.append(str(block))
                continue
            nan += int(np.isnan(block).sum())
            inf += int(np.isinf(block).sum())
        report.nonfinite[layer] = {"nan": nan, "inf": inf}
        finite_ok = finite_ok and nan == 0 and inf == 0
    shown = "; ".join(chunk_errors[:3]) + (f"; and {len(chunk_errors) - 3} more" if len(chunk_errors) > 3 else "")
    report.add("chunks decode", not chunk_errors,
               shown or "every stored chunk of every written row decodes and matches its checksum")
    report.add("finite values", finite_ok,
               ", ".join(f"{k}: {v['nan']} NaN, {v['inf']} Inf" for k, v in report.nonfinite.items()))


def _recompute(store, k: int, model_path, in_path, device, seed, rtol, atol) -> Check:
    """K random written rows extracted again, through the extraction's own loop
    and with every option the store records (weights, preprocessing entry,
    amp, channels_last, decoder, dtype, flatten), compared with their rows."""
    import tempfile

    from .extract.loop import run_batches
    from .extract.options import ExtractOptions
    from .extract.prepare import hook_and_lay_out, ready_model
    from .extract.target import Target
    from .images import ImageSet
    from .models import reload
    from .store import DEFAULT_FORMAT, FORMAT_NAME, scratch_path

    attrs, recorded = store.attrs, store.attrs.get("fingerprint", {})
    if "imported_from" in attrs or attrs.get("weights") == "user-module":
        made = "imported from another tool's files" if "imported_from" in attrs else "made from a Python module"
        return Check("recompute", True, f"cannot recompute: this store was {made}, so its model and "
                                        "preprocessing are not recorded", skipped=True)
    model = reload(attrs, model_path)
    root = Path(in_path or attrs["in_path"])
    if not root.is_dir():
        raise BadImagesError(f"image folder {root} not found: pass --in-path")
    rows = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(store.written),
                                                      size=min(k, int(store.written.sum())), replace=False))
    images = ImageSet(root=root, file_names=tuple(store.file_names[rows]),
                      targets=tuple(int(t) for t in store.targets[rows]))
    amp = attrs.get("amp")
    with tempfile.TemporaryDirectory(prefix="actstore-verify-") as scratch:
        options = ExtractOptions(
            in_path=root, out_path=scratch_path(Path(scratch), DEFAULT_FORMAT), module_names=store.layers,
            model=model, batch_size=len(images), device=device, flatten_acts=bool(attrs.get("flatten_acts", False)),
            dtype=attrs.get("dtype", "float32"), amp=amp, channels_last=bool(recorded.get("channels_last")),
            decoder=recorded.get("decoder") or "pil", num_workers=0, quiet=True)
        model = ready_model(options)
        with Target(options) as target:
            extractor, layout = hook_and_lay_out(model, options, images, target)
            with target.open(layout, images, {"format": FORMAT_NAME, "model_name": model.name,
                                              "fingerprint": {}}) as session:
                run_batches(extractor, model, images, np.arange(len(images)), session.writer, layout, options,
                            done_before=0, total=len(images), stages={}, block_rows=layout.block_rows)
        with open_store(options.out_location) as recomputed:
            expected = {layer: recomputed[layer][:] for layer in store.layers}
    # Reduced precision (float16 storage, autocast) differs more between batchings.
    loose = 2e-2 if amp == "bfloat16" else 2e-3 if amp or attrs.get("dtype") == "float16" else None
    rtol = rtol if rtol is not None else (loose or 1e-4)
    atol = atol if atol is not None else (loose or 1e-5)
    worst, failures = 0.0, []
    for layer in store.layers:
        stored = store[layer][rows]
        diff = float(np.max(np.abs(stored.astype(np.float64) - expected[layer].astype(np.float64))))
        worst = max(worst, diff)
        if not np.allclose(stored, expected[layer], rtol=rtol, atol=atol):
            failures.append(f"{layer} (max |diff| {diff:.3g})")
    options_used = ", ".join(f"{name} {value}" for name, value in
                             [("amp", amp), ("channels_last", options.channels_last or None),
                              ("decoder", None if options.decoder == "pil" else options.decoder)] if value)
    detail = (f"{len(rows)} images recomputed{f' ({options_used})' if options_used else ''}; "
              f"max |diff| {worst:.3g}" + (f"; differ: {', '.join(failures)}" if failures else ""))
    return Check("recompute", not failures, detail)
