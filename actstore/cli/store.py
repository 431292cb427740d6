"""Commands about stores: ``info``, ``verify``, ``rechunk``, ``export``, ``import-legacy``."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from .app import (
    CHUNK_IMAGES_OPTION,
    COMPRESSION_OPTION,
    DROP_SKIPPED_OPTION,
    OVERWRITE_STORE_OPTION,
    STORE_ARGUMENT,
    ZARR_SHARD_ROWS_OPTION,
    app,
    command,
)


@app.command()
@command
def info(
    store_path: str = STORE_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show a store at a glance: model, layers, shapes, chunking, compression, status, provenance."""
    from ..store import open_store
    with open_store(store_path) as store:
        summary = store.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    attrs = summary["attrs"]
    typer.echo(f"{summary['path']}  [{summary['format']}]  status: {summary['status']}  "
               f"rows: {summary['rows_written']}/{summary['rows']}  classes: {summary['classes']}")
    for name, runs in summary["damaged"].items():
        rows = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:5]) + (" ..." if len(runs) > 5 else "")
        typer.echo(f"  damaged: {name} rows {rows} are written but their data is gone; run the extract "
                   "command again to recompute them")
    typer.echo(f"model: {attrs.get('model_name')}  weights: {attrs.get('weights')}  "
               f"dtype: {attrs.get('dtype')}  compression: {attrs.get('compression')}")
    for name, layer in summary["layers"].items():
        ratio = f"{layer['compression_ratio']}x" if layer["compression_ratio"] else "-"
        typer.echo(f"  {name}: {tuple(layer['shape'])} ({', '.join(layer['dims'])}) "
                   f"chunks {tuple(layer['chunks'])}"
                   + (f" in shards {tuple(layer['shards'])}" if layer.get("shards") else "")
                   + f"  {layer['files']:,} file(s), {layer['bytes_stored']:,} B stored, ratio {ratio}")
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    for key in ("source", "created", "completed", "actstore_version", "torch_version", "torchvision_version",
                "device", "torch_threads", "amp", "in_path", "image_layout", "fraction", "rnd_seed",
                "weights_sha256", "preprocessing", "command_line", "rechunked_from", "imported_from"):
        if attrs.get(key) is not None:
            value = str(attrs[key]).replace("\n", " ")
            typer.echo(f"  {key}: {' '.join(value.split())}"[:400])
    if attrs.get("skipped_images"):
        skipped = attrs["skipped_images"]
        typer.echo(f"  skipped_images: {len(skipped)} (e.g. {skipped[0]['file_name']}: {skipped[0]['reason']})")


@app.command("rechunk")
@command
def rechunk_command(
    store_path: str = STORE_ARGUMENT,
    out_path: str = typer.Argument(..., metavar="OUT", help="The new store (.zarr, .h5, or a .zarr URL)."),
    layout: str = typer.Option("unit-major", "--layout", help="unit-major (one channel/unit over many images per "
        "chunk) or image-major (as extract writes)."),
    chunk_images: Optional[int] = typer.Option(None, "--chunk-images", help="Rows per chunk [unit-major: as many as "
        "--max-memory-mb allows; image-major: 16]."),
    chunk_channels: Optional[int] = typer.Option(None, "--chunk-channels", help="Channels (units) per chunk [default: "
        "chunks up to 1 MiB]."),
    zarr_shard_rows: Optional[int] = typer.Option(None, "--zarr-shard-rows", help="Rows per Zarr shard file (a "
        "multiple of the chunk rows; 0: one file per chunk) [default: as extract chooses]."),
    max_memory_mb: int = typer.Option(1024, "--max-memory-mb", help="Memory the copy may hold, in MiB."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at OUT."),
    drop_skipped: bool = DROP_SKIPPED_OPTION,
) -> None:
    """Copy STORE to OUT in another chunk layout, streaming in bounded memory."""
    from ..store.metadata.provenance import skipped_note
    from ..store.rechunk import rechunk
    result = rechunk(store_path, out_path, layout, chunk_images=chunk_images,
                     chunk_channels=chunk_channels, shard_rows=zarr_shard_rows,
                     max_memory=max_memory_mb * 2**20,
                     overwrite=overwrite, drop_skipped=drop_skipped)
    chunks = ", ".join(f"{name} {tuple(c)}" for name, c in result.chunks.items())
    typer.echo(f"rechunked {result.rows} rows to {result.path} [{result.file_format}, {result.layout}] "
               f"in {result.seconds:.1f} s; chunks: {chunks}"
               + (f"; shards of {result.shard_rows} rows" if result.shard_rows else "")
               + skipped_note(result.skipped, result.dropped_skipped, "unwritten rows (NaN)"))


@app.command("export")
@command
def export_command(
    store_path: str = STORE_ARGUMENT,
    module_name: str = typer.Option(..., "--module-name", "--module_name", help="The layer to export, e.g. "
        "features.11."),
    file_format: str = typer.Option("txt", "--file-format", "--file_format", help="txt or npy (also .txt/.npy). npy "
        "is exact and keeps the stored shape in one array; txt of a 3+-D layer uses the original slices with %-7.5f: "
        "LOSSY (5 decimals)."),
    out_path: Path = typer.Option(..., "--out-path", "--out_path", help="Root folder: files go to "
        "OUT/<model>/<module>/."),
    n_splits: int = typer.Option(1, "--split", help="Write activations_01 ... activations_NN: exactly N files (the "
        "original wrote N-1)."),
    decimals: int = typer.Option(5, "--decimals", help="Decimals of text slices (the original's 5 is lossy; more "
        "digits keep more)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace this layout's own files there "
        "(activations.txt, activations_NN.npy, targets, file_names.txt; nothing else), once the export has finished."),
    drop_skipped: bool = DROP_SKIPPED_OPTION,
) -> None:
    """Write one layer of a store in the original extract.py layout (txt/npy), streaming."""
    from ..legacy.export import export_layer
    from ..store.metadata.provenance import skipped_note
    result = export_layer(store_path, module_name, out_path, file_format, n_splits=n_splits,
                          decimals=decimals, overwrite=overwrite, drop_skipped=drop_skipped)
    typer.echo(f"exported {module_name} {result.shape} to {result.folder}: "
               f"{', '.join(p.name for p in result.files)}"
               + skipped_note(result.skipped, result.dropped_skipped, "NaN rows"))


@app.command("import-legacy")
@command
def import_legacy_command(
    source: Path = typer.Argument(..., metavar="DIR", help="An original output folder <out>/<model>/<module>/ (or "
        "<out>/<model>/)."),
    out_path: str = typer.Option(..., "--out-path", "--out_path", help="The new store (.zarr directory, .h5 file, or "
        "a .zarr URL such as s3://bucket/x.zarr)."),
    file_format: Optional[str] = typer.Option(None, "--file-format", "--file_format", help="zarr or hdf5 [default: "
        "from the out path's suffix, else zarr]."),
    chunk_images: int = CHUNK_IMAGES_OPTION,
    compression: Optional[str] = COMPRESSION_OPTION,
    zarr_shard_rows: Optional[int] = ZARR_SHARD_ROWS_OPTION,
    overwrite: bool = OVERWRITE_STORE_OPTION,
) -> None:
    """Bring an original txt/npy output folder (single or split files) into a store, streaming."""
    from ..legacy.convert import import_legacy
    result = import_legacy(source, out_path, file_format=file_format, overwrite=overwrite, chunk_images=chunk_images,
                           compression=compression, zarr_shard_rows=zarr_shard_rows,
                           command_line=shlex.join(["actstore", *sys.argv[1:]]))
    typer.echo(f"imported {result.n_images} rows of {len(result.layers)} layer(s) from {source} "
               f"to {result.path} [{result.file_format}]")


@app.command("verify")
@command
def verify_command(
    store_path: str = STORE_ARGUMENT,
    recompute: int = typer.Option(0, "--recompute", help="Recompute K random images through the model and compare."),
    model_path: Optional[Path] = typer.Option(None, "--model-path", "--model_path", help="The weights file the store "
        "was made with (for --recompute)."),
    in_path: Optional[Path] = typer.Option(None, "--in-path", "--in_path", help="The image folder, if it moved (for "
        "--recompute)."),
    device: str = typer.Option("cpu", "--device", help="Device for --recompute."),
    repair: bool = typer.Option(False, "--repair", help="First clear the 'open for write' flag a killed HDF5 writer "
        "leaves (as h5clear -s; no data changes), so every HDF5 reader opens the file."),
    quick: bool = typer.Option(False, "--quick", help="Check that every chunk of every written row is present, "
        "without decoding (no checksums, no values)."),
) -> None:
    """Check a store: schema, every row written, every chunk present, decoding and matching its checksum,
    finite values, unique names."""
    from ..verify import verify
    report = verify(store_path, recompute=recompute, model_path=model_path, in_path=in_path,
                    device=device, repair=repair, quick=quick)
    for check in report.checks:
        colour = typer.colors.YELLOW if check.skipped else typer.colors.GREEN if check.ok else typer.colors.RED
        label = "skip" if check.skipped else "ok  " if check.ok else "FAIL"
        typer.secho(f"{label} {check.name}: {check.detail}", fg=colour)
    if not report.ok:
        raise typer.Exit(1)
