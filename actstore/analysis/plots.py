"""Pictures of analysis results (matplotlib, ``pip install 'actstore[analysis]'``).

- :func:`plot_rdm`: the RDM as an image, rows ordered by class, class
  boundaries drawn, class names as ticks (up to 50 classes);
- :func:`plot_cka`: a CKA matrix as a heatmap with its values written in;
- :func:`plot_pca`: a scree plot beside the first two components' scores
  coloured by class.

Each returns the matplotlib Figure and, given ``path``, saves it there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingPackageError

if TYPE_CHECKING:
    import xarray

    from .pca import PCAResult

MAX_CLASS_TICKS = 50


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise MissingPackageError("matplotlib is not installed: pip install 'actstore[analysis]'") from error
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(figure: Any, path: Any) -> Any:
    if path is not None:
        figure.savefig(path, dpi=110, bbox_inches="tight")
    return figure


def _class_order(rdm_value: "xarray.DataArray") -> tuple[np.ndarray, np.ndarray | None]:
    """Row order grouping classes (stable within a class), and each row's class."""
    dim = rdm_value.dims[0]
    if dim == "class" or "class_name" not in rdm_value.coords:
        return np.arange(rdm_value.shape[0]), None
    names = np.asarray(rdm_value["class_name"].values, dtype=str)
    _, first = np.unique(names, return_index=True)
    rank = {name: i for i, name in enumerate(names[np.sort(first)])}
    order = np.argsort([rank[name] for name in names], kind="stable")
    return order, names[order]


def plot_rdm(rdm_value: "xarray.DataArray", path: Any = None, *, title: str | None = None,
             cmap: str = "viridis") -> Any:
    """The RDM as an image ordered by class, with boundaries and class ticks."""
    plt = _pyplot()
    order, classes = _class_order(rdm_value)
    values = np.asarray(rdm_value.values)[np.ix_(order, order)]
    figure, ax = plt.subplots(figsize=(6.4, 5.6))
    diagonal = np.eye(len(values), dtype=bool)
    off = values[~diagonal]
    off = off[np.isfinite(off)]
    low, high = np.percentile(off, [1, 99]) if off.size else (0.0, 1.0)   # the diagonal's 0 would flatten the rest
    # The diagonal (0 by definition) and undefined pairs are grey, not the colour of the closest pair.
    shown = np.where(diagonal, np.nan, values)
    colours = plt.get_cmap(cmap).copy()
    colours.set_bad("lightgrey")
    image = ax.imshow(shown, cmap=colours, interpolation="nearest", vmin=low, vmax=max(high, low + 1e-12))
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                    label=f"{rdm_value.attrs.get('metric', 'dissimilarity')} distance")
    n = len(values)
    if classes is not None and n:
        starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
        for start in starts[1:]:
            ax.axhline(start - 0.5, color="white", linewidth=0.8)
            ax.axvline(start - 0.5, color="white", linewidth=0.8)
        centres = (starts + np.r_[starts[1:], n]) / 2 - 0.5
        if len(starts) <= MAX_CLASS_TICKS:
            ax.set_xticks(centres, classes[starts], rotation=90, fontsize=8)
            ax.set_yticks(centres, classes[starts], fontsize=8)
    elif n <= MAX_CLASS_TICKS:
        labels = [str(v) for v in rdm_value[rdm_value.dims[0]].values]
        ax.set_xticks(np.arange(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(np.arange(n), labels, fontsize=8)
    layer = rdm_value.attrs.get("layer", "")
    noun = {"image": "images", "class": "classes"}.get(rdm_value.dims[0], rdm_value.dims[0])
    ax.set_title(title or f"RDM of {layer} ({n} {noun})")
    return _save(figure, path)


def plot_cka(matrix: "xarray.DataArray", path: Any = None, *, title: str | None = None,
             cmap: str = "magma") -> Any:
    """A CKA matrix as a heatmap, each cell's value written in."""
    plt = _pyplot()
    values = np.asarray(matrix.values, dtype=float)
    rows, cols = values.shape
    figure, ax = plt.subplots(figsize=(1.0 + 0.9 * cols + 1.5, 1.0 + 0.8 * rows))
    image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
    for i in range(rows):
        for j in range(cols):
            text = "nan" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="black" if values[i, j] > 0.6 else "white")
    ax.set_xticks(np.arange(cols), [str(v) for v in matrix[matrix.dims[1]].values], rotation=45, ha="right")
    ax.set_yticks(np.arange(rows), [str(v) for v in matrix[matrix.dims[0]].values])
    ax.set_title(title or "CKA" + (" (debiased)" if matrix.attrs.get("debiased") else ""))
    return _save(figure, path)


def plot_pca(result: "PCAResult", path: Any = None, *, title: str | None = None) -> Any:
    """A scree plot (explained variance ratio per component, and cumulative)
    beside the scores of PC1 and PC2 coloured by class (needs ``pca(..., scores=True)``)."""
    plt = _pyplot()
    figure, (scree, scatter) = plt.subplots(1, 2, figsize=(11, 4.4))
    ratio = result.explained_variance_ratio.values
    k = np.arange(1, len(ratio) + 1)
    scree.bar(k, ratio, color="tab:blue", label="per component")
    scree.plot(k, np.cumsum(ratio), "o-", color="tab:orange", label="cumulative")
    scree.set_xlabel("component")
    scree.set_ylabel("explained variance ratio")
    scree.set_ylim(0, 1.02)
    scree.set_xticks(k if len(k) <= 20 else k[:: max(1, len(k) // 10)])
    scree.legend(frameon=False)
    scree.set_title(f"{result.layer}: scree")
    if result.scores is None or result.scores.shape[1] < 2:
        scatter.text(0.5, 0.5, "scores not computed\n(pca(..., scores=True), 2+ components)",
                     ha="center", va="center", transform=scatter.transAxes)
    else:
        _scatter(scatter, result, plt)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _scatter(ax: Any, result: "PCAResult", plt: Any) -> None:
    scores = result.scores.values
    classes = np.asarray(result.scores["class_name"].values, dtype=str)
    names = list(dict.fromkeys(classes))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20" if len(names) <= 20 else "turbo")
    for i, name in enumerate(names):
        mask = classes == name
        colour = colours(i % colours.N if colours.N < 256 else i / max(1, len(names) - 1))
        ax.scatter(scores[mask, 0], scores[mask, 1], s=12, alpha=0.8, color=colour, label=name or "all")
    ratio = result.explained_variance_ratio.values
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}%)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}%)")
    if len(names) <= 20:
        ax.legend(frameon=False, fontsize=8, markerscale=1.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"{result.layer}: PC1 and PC2 by class")
