"""Commands of representational analysis: ``rdm``, ``cka``, ``pca`` (see :mod:`actstore.analysis`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import BadOptionError
from .app import STORE_ARGUMENT, _table, app, command

ANALYSIS_OUT_SUFFIXES = (".npy", ".csv", ".nc", ".zarr")
MAX_MEMORY_OPTION = typer.Option("2GB", "--max-memory", help="Memory the computation may hold (2GB, 512MB); a larger "
    "layer takes more passes, never more memory.")
ANALYSIS_OUT_OPTION = typer.Option(None, "--out", help="Save the result: .npy, .csv, .nc (netCDF) or .zarr.")
PLOT_OPTION = typer.Option(None, "--plot", help="Save a picture of the result (.png, .pdf, .svg).")
DEVICE_OPTION = typer.Option("cpu", "--device", help="cpu (NumPy) or cuda: where the Gram blocks are multiplied.")
ANALYSIS_QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bar.")


def _check_out(out: Optional[Path]) -> None:
    if out is not None and out.suffix.lower() not in ANALYSIS_OUT_SUFFIXES:
        raise BadOptionError(f"--out {out}: use a .npy, .csv, .nc or .zarr path")


def _save_analysis(value, out: Optional[Path]) -> None:
    """Write a DataArray or Dataset to ``out`` by its suffix (.zarr is written by the call itself for rdm)."""
    if out is None:
        return
    suffix, dataset = out.suffix.lower(), hasattr(value, "data_vars")   # a Dataset: PCA's parts
    if suffix == ".npy":
        import numpy as np
        np.save(out, np.asarray((value["components"] if dataset else value).values))
    elif suffix == ".csv":
        frame = value[["explained_variance", "explained_variance_ratio"]].to_dataframe() if dataset \
            else value.to_pandas()
        frame.to_csv(out)
    elif suffix == ".nc":
        value.to_netcdf(out)
    else:
        (value if dataset else value.to_dataset(name="value")).to_zarr(out, mode="w", consolidated=False)


def _summary(what: str, shape, passes: int, seconds: float) -> str:
    from ..analysis.blocks import human, peak_rss
    return (f"{what}: shape {tuple(shape)}, {passes} pass(es) over the store, {seconds:.1f} s, "
            f"peak memory {human(peak_rss())}")


@app.command("rdm")
@command
def rdm_command(
    store_path: str = STORE_ARGUMENT,
    layer: str = typer.Option(..., "--layer", help="The layer, e.g. features.11."),
    metric: str = typer.Option("correlation", "--metric", help="correlation (1 - Pearson r), cosine or euclidean."),
    by: str = typer.Option("image", "--by", help="image (one row per image) or class (class means)."),
    out: Optional[Path] = ANALYSIS_OUT_OPTION,
    plot: Optional[Path] = PLOT_OPTION,
    max_memory: str = MAX_MEMORY_OPTION,
    device: str = DEVICE_OPTION,
    precision: str = typer.Option("auto", "--precision", help="auto (float32 products summed in float64 for "
        "correlation and cosine, errors of a few 1e-7; float64 for euclidean), float64 (errors near 1e-15, "
        "twice the time) or float32."),
    quiet: bool = ANALYSIS_QUIET_OPTION,
) -> None:
    """Representational dissimilarity matrix of a layer, exact, in bounded memory."""
    from ..analysis import rdm
    _check_out(out)
    zarr_out = out if out is not None and out.suffix.lower() == ".zarr" else None
    result = rdm(store_path, layer, metric=metric, by=by, max_memory=max_memory, out=zarr_out,
                 device=device, precision=precision, progress=not quiet)
    if zarr_out is None:
        _save_analysis(result, out)
    if plot is not None:
        from ..analysis import plot_rdm
        plot_rdm(result, plot)
    typer.echo(_summary(f"rdm of {layer} ({metric}, by {by}, {result.attrs['products']} products)", result.shape,
                        result.attrs["passes"],
                        result.attrs["seconds"]) + (f"; saved to {out}" if out else ""))


@app.command("cka")
@command
def cka_command(
    store_path: str = STORE_ARGUMENT,
    layers: List[str] = typer.Option(..., "--layer", help="A layer; repeat: every pair of them (or each with "
        "--other's)."),
    other: Optional[str] = typer.Option(None, "--other", help="A second store of the same images (matched by file "
        "name)."),
    other_layers: List[str] = typer.Option([], "--other-layer", help="Layers of --other [default: the --layer names]."),
    debiased: bool = typer.Option(False, "--debiased", help="Unbiased HSIC estimator (Song et al. 2012)."),
    method: str = typer.Option("exact", "--method", help="exact, or minibatch (Nguyen et al. 2021) when neither exact "
        "form is affordable."),
    common: bool = typer.Option(False, "--common", help="With --other: use the images both stores hold."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Rows per minibatch (--method minibatch)."),
    max_memory: str = MAX_MEMORY_OPTION,
    device: str = DEVICE_OPTION,
    out: Optional[Path] = ANALYSIS_OUT_OPTION,
    plot: Optional[Path] = PLOT_OPTION,
    quiet: bool = ANALYSIS_QUIET_OPTION,
) -> None:
    """Linear CKA between layers of one store, or of two stores of the same images."""
    from ..analysis import cka_matrix
    _check_out(out)
    matrix = cka_matrix(store_path, layers, other=other, other_layers=other_layers or None, debiased=debiased,
                        method=method, rows="common" if common else None, max_memory=max_memory,
                        batch_size=batch_size, device=device, progress=not quiet)
    _save_analysis(matrix, out)
    if plot is not None:
        from ..analysis import plot_cka
        plot_cka(matrix, plot)
    names = [str(v) for v in matrix["layer_"].values]
    typer.echo("\n".join(_table([("", *names)] + [(str(row), *(f"{v:.4f}" for v in matrix.sel(layer=row).values))
                                                   for row in matrix["layer"].values])))
    typer.echo(_summary(f"cka ({matrix.attrs['form']} form{', debiased' if debiased else ''})", matrix.shape,
                        matrix.attrs["passes"], matrix.attrs["seconds"]) + (f"; saved to {out}" if out else ""))


@app.command("pca")
@command
def pca_command(
    store_path: str = STORE_ARGUMENT,
    layer: str = typer.Option(..., "--layer", help="The layer, e.g. features.11."),
    components: int = typer.Option(..., "--components", help="Number of components K."),
    write_to: Optional[str] = typer.Option(None, "--write-to", help="Write every row's scores as layer LAYER.pcaK "
        "into this store (new, or STORE itself)."),
    method: str = typer.Option("auto", "--method", help="auto, covariance, gram (exact) or randomized (Halko et al. "
        "2011)."),
    out: Optional[Path] = ANALYSIS_OUT_OPTION,
    plot: Optional[Path] = PLOT_OPTION,
    max_memory: str = MAX_MEMORY_OPTION,
    quiet: bool = ANALYSIS_QUIET_OPTION,
) -> None:
    """Principal components of a layer, exact or randomized, in bounded memory."""
    from ..analysis import pca
    _check_out(out)
    result = pca(store_path, layer, components, write_to=write_to, method=method, max_memory=max_memory,
                 scores=plot is not None, progress=not quiet)
    _save_analysis(result.to_dataset(), out)
    if plot is not None:
        from ..analysis import plot_pca
        plot_pca(result, plot)
    ratios = result.explained_variance_ratio.values
    typer.echo("explained variance ratio: " + " ".join(f"{r:.4f}" for r in ratios) + f" (total {ratios.sum():.4f})")
    how = result.method + (f", {result.power_iterations} power iterations" if result.power_iterations else "")
    typer.echo(_summary(f"pca of {layer} ({how})", result.components.shape, result.passes, result.seconds)
               + (f"; scores in {result.written}" if result.written else "") + (f"; saved to {out}" if out else ""))
