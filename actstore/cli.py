"""The ``actstore`` command line: each command turns its options into one library call."""
from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
import warnings
from functools import wraps
from pathlib import Path
from typing import Callable, List, Optional

import typer

from . import defaults
from .errors import Interrupted, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Extract activations of vision models into chunked Zarr/HDF5 stores.")
_state = {"debug": bool(os.environ.get("ACTSTORE_DEBUG"))}


MODEL_PATH_HELP = ("Local weights: a checkpoint file (torchvision, timm, OpenCLIP; safetensors or a plain state "
                   "dict) or folder of torchvision checkpoints; an OpenCLIP model folder; a Hugging Face "
                   "save_pretrained folder (with --source hf, enough on its own).")
WEIGHTS_HELP = ("torchvision weights name (DEFAULT, IMAGENET1K_V1), timm or OpenCLIP pretrained tag (openai), "
                "Hugging Face revision, or 'none' for random init; also picks the preprocessing.")


# Options that extract and import-legacy share, defined once.
COMPRESSION_OPTION = typer.Option(None, "--compression", help="zstd, lz4, gzip (deflate with shuffle) or none [default: zstd for Zarr, gzip for HDF5, which every HDF5 reader decodes without plugins].")
CHUNK_IMAGES_OPTION = typer.Option(defaults.CHUNK_IMAGES, "--chunk-images", help="Rows per chunk.")
ZARR_SHARD_ROWS_OPTION = typer.Option(None, "--zarr-shard-rows", help="Rows per Zarr shard file (a multiple of --chunk-images; 0: one file per chunk) [default: up to 4096, fewer for wide layers so one shard of every layer fits 64 MiB].")
DROP_SKIPPED_OPTION = typer.Option(False, "--drop-skipped", help="Leave out the rows of images skipped as unreadable (their file names and targets too) instead of keeping them as NaN rows.")
OVERWRITE_STORE_OPTION = typer.Option(False, "--overwrite", help="Replace an existing store (never anything that is not an actstore store).")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def command(func: Callable) -> Callable:
    """Run a command with one-line errors (``--debug`` shows tracebacks)."""
    @wraps(func)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:   # `actstore info STORE | head -1`: the reader has what it wanted
            _quiet_closed_stdout()
            raise typer.Exit(0)
        except UserError as error:
            if _state["debug"]:
                traceback.print_exc()
            _fail(str(error), 130 if isinstance(error, Interrupted) else 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as error:  # unexpected: still one line unless --debug
            if _state["debug"]:
                traceback.print_exc()
            _fail(f"{type(error).__name__}: {error} (run with --debug for the traceback)")
    return wrapper


def _quiet_closed_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into the
    closed pipe neither fails nor prints."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # not a real file (a test runner's capture)
        pass


def _print_version(value: bool) -> None:
    if value:
        from ._version import __version__
        typer.echo(f"actstore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    _state["debug"] = _state["debug"] or debug


def _choose_modules(model_name: Optional[str], source: str, model_path: Optional[Path]) -> list[str]:
    """--interactive: show the module tree and ask until a real module is named."""
    from .models import suggest
    tree = _tree(model_name, source, model_path)
    typer.echo(_format_tree(tree), err=True)
    names = [m.name for m in tree]
    while True:
        typer.echo("module name(s), separated by commas: ", nl=False, err=True)
        try:
            answer = input()
        except EOFError:   # Ctrl-D, or stdin that is not a terminal and ends; Ctrl-C exits 130
            raise UserError("no module chosen (end of input): answer the prompt, or pass --module-name "
                            f"(see `actstore layers {model_name}`)") from None
        chosen = [a.strip() for a in answer.replace(" ", ",").split(",") if a.strip()]
        unknown = [c for c in chosen if c.split("[")[0] not in names]
        if chosen and not unknown:
            return chosen
        typer.secho(suggest(unknown[0], names, "module") if unknown else "name a module",
                    fg=typer.colors.YELLOW, err=True)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as lines of left-aligned columns, the first row the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _tree(model_name: Optional[str], source: str, model_path: Optional[Path], weights: str = "none"):
    """The module tree; random weights unless a local copy is given (shapes do not depend on them)."""
    from .models import load_model, module_tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module_tree(load_model(model_name, source=source, model_path=model_path,
                                      weights=weights if model_path is not None else "none"))


def _format_tree(tree) -> str:
    rows = [("module", "type", "output per image", "bytes/image (float32)")]
    for m in tree:
        size = m.bytes_per_image()
        rows.append(("  " * m.depth + m.name, m.type, m.describe(), f"{size:,}" if size else ""))
    return "\n".join(_table(rows))


@app.command("extract")
@command
def extract_command(
    model_name: Optional[str] = typer.Option(None, "--model-name", "--model_name", help="Model as its family spells it: alexnet, vit_small_patch14_dinov2, ViT-B-32, facebook/dinov2-small (see `actstore models --source S`)."),
    source: str = typer.Option("torchvision", "--source", help="Model family: torchvision, timm, open_clip or hf."),
    module_names: List[str] = typer.Option([], "--module-name", "--module_name", help="Module to store, e.g. features.11; repeat for several (one forward pass)."),
    in_path: Path = typer.Option(Path("./images/"), "--in-path", "--in_path", help="Folder of images, flat or one subfolder per class."),
    out_path: str = typer.Option("./activations/", "--out-path", "--out_path", help="Store path: a .zarr directory or .h5/.hdf5 file. A path without those suffixes gets the original tool's txt layout <out>/<model>/<module>/ unless --file-format says otherwise."),
    model_path: Optional[Path] = typer.Option(None, "--model-path", "--model_path", help=MODEL_PATH_HELP),
    weights: str = typer.Option("DEFAULT", "--weights", help=WEIGHTS_HELP),
    batch_size: int = typer.Option(defaults.BATCH_SIZE, "--batch-size", "--batch_size", help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    flatten_acts: bool = typer.Option(False, "--flatten-acts", "--flatten_acts", help="Store (N, units) instead of the native shape."),
    fraction: float = typer.Option(1.0, "--fraction", help="Random fraction of the images (0 < F <= 1), picked with --rnd-seed."),
    rnd_seed: int = typer.Option(42, "--rnd-seed", "--rnd_seed", help="Seed for --fraction and for random initialisation."),
    things: bool = typer.Option(False, "--things", help="Order classes by the THINGS concept file (uniqueID column)."),
    things_tsv: Optional[Path] = typer.Option(None, "--things-tsv", help="Path to things_concept.tsv [default: data/things_concept.tsv]."),
    file_format: Optional[str] = typer.Option(None, "--file-format", "--file_format", help="zarr, hdf5, or the original tool's txt/npy [default: from the out path's suffix, else zarr]."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage dtype: float32 or float16."),
    compression: Optional[str] = COMPRESSION_OPTION,
    compression_level: Optional[int] = typer.Option(None, "--compression-level", help="Codec level [default: the codec's own]."),
    chunk_images: int = CHUNK_IMAGES_OPTION,
    chunk_channels: Optional[int] = typer.Option(None, "--chunk-channels", help="Channels (units) per chunk [default: all, split only when a chunk would exceed 1 MiB]."),
    zarr_shard_rows: Optional[int] = ZARR_SHARD_ROWS_OPTION,
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="DataLoader processes decoding images [default: 2 on the CPU, up to 8 on a GPU]."),
    interactive: bool = typer.Option(False, "--interactive", help="Show the module tree and ask for the module."),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Leave out unreadable images (recorded in the store) instead of stopping."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print per-layer sizes, a measured estimate of the store and the free space; write nothing."),
    force: bool = typer.Option(False, "--force", help="Start even when the estimated store size exceeds the free space."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision for the forward pass: float16 or bfloat16 (recorded; stored values then carry that precision)."),
    decoder: str = typer.Option("pil", "--decoder", help="pil (decode in DataLoader workers), or torchvision: JPEGs decoded in batches on --device (nvJPEG on a GPU) when the decoder is the limit; values differ slightly from pil."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Run convolutions in channels_last memory format (can be faster on GPUs)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: this process extracts share I of N into the same Zarr store (torchrun sets it from RANK/WORLD_SIZE)."),
    overwrite: bool = OVERWRITE_STORE_OPTION,
    repair: bool = typer.Option(False, "--repair", help="Also decode every stored chunk first and recompute the rows whose chunks fail their checksum (a plain rerun recomputes rows whose files are gone)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    pretrained: bool = typer.Option(False, "--pretrained", hidden=True, help="The original tool's flag; trained weights are the default here."),
) -> None:
    """Extract activations of MODEL at the given modules for every image into one store."""
    from .extract import ExtractOptions, extract
    if interactive:
        if not model_name and model_path is None:
            raise UserError("--interactive needs --model-name")
        module_names = _choose_modules(model_name, source, model_path)
    flags = {k: v for k, v in locals().items() if k in ExtractOptions.__dataclass_fields__}
    result = extract(ExtractOptions(**flags, command_line=shlex.join(["actstore", *sys.argv[1:]])))
    if result.plan is not None and dry_run:
        typer.echo(_format_plan(result.plan, result.file_format))
        return
    if result.resumed and result.rows_this_run == 0 and result.complete:
        typer.echo(f"{result.path} is already complete ({result.n_images} rows); nothing to do", err=quiet)
        return
    rate = result.rows_this_run / result.seconds if result.seconds else 0.0
    state = "complete" if result.complete else f"incomplete ({result.rows_written}/{result.n_images} rows)"
    if result.rows_skipped:
        state += f" ({result.rows_skipped} unreadable image(s) skipped; see skipped_images)"
    state = f"{result.output} {state}"
    verb = "resumed" if result.resumed else "wrote"
    if result.shard:
        verb = f"shard {result.shard[0]}/{result.shard[1]} (rows {result.shard_rows[0]}-{result.shard_rows[1] - 1}): {verb}"
    typer.echo(f"{verb} {result.rows_this_run} rows of {len(result.layers)} layer(s) to {result.path} "
               f"[{result.file_format}] in {result.seconds:.1f} s ({rate:.1f} img/s); {state}",
               err=quiet)


def _format_plan(plan, file_format: str) -> str:
    from .plan import human_size as _size
    rows = [("layer", "shape per image", "bytes/image", "raw total", f"estimated {file_format}")]
    for layer in plan.layers:
        rows.append((layer.module_name, "x".join(map(str, layer.shape)), f"{layer.bytes_per_image:,}",
                     _size(layer.raw_bytes), _size(layer.estimated_bytes)))
    rows.append(("total", "", "", _size(plan.raw_bytes), _size(plan.estimated_bytes)))
    lines = _table(rows)
    files = f"; {plan.files:,} file(s)" if plan.files is not None else ""
    lines.append(f"{plan.rows} images; estimate from {plan.sample_images} sampled images; free space: "
                 f"{_size(plan.free_bytes)}{files}" + ("" if plan.fits else "  -- DOES NOT FIT (use --force to start anyway)"))
    return "\n".join(lines)


@app.command()
@command
def layers(
    model: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="Model name, as --model-name."),
    model_name: Optional[str] = typer.Option(None, "--model-name", "--model_name", help="Model name (or give it as MODEL)."),
    source: str = typer.Option("torchvision", "--source", help="Model family: torchvision, timm, open_clip or hf."),
    model_path: Optional[Path] = typer.Option(None, "--model-path", "--model_path", help=MODEL_PATH_HELP),
    weights: str = typer.Option("DEFAULT", "--weights", help=WEIGHTS_HELP + " Used only with --model-path: the tree needs no trained weights."),
) -> None:
    """Print MODEL's module tree: each module's output shape per image and bytes per image;
    for tuple outputs each part and its layer name (MODULE[1], MODULE[pooler_output])."""
    typer.echo(_format_tree(_tree(model or model_name, source, model_path, weights)))


@app.command()
@command
def models(
    source: str = typer.Option("torchvision", "--source", help="Model family: torchvision, timm, open_clip or hf."),
    pattern: Optional[str] = typer.Argument(None, help="Only names matching this (shell wildcards, or a part of the name)."),
) -> None:
    """List a family's models (torchvision: * the original tool's nine; hf: the local cache)."""
    from .models import ORIGINAL_MODELS, list_models
    names = list_models(source, pattern)
    for name in names:
        typer.echo(f"{name}{' *' if source == 'torchvision' and name in ORIGINAL_MODELS else ''}")
    if source == "hf":
        typer.echo(f"{len(names)} model(s) in the local Hugging Face cache; any hub id (facebook/dinov2-small) "
                   "or a save_pretrained folder (--model-path) works", err=True)


@app.command()
@command
def info(
    store_path: str = typer.Argument(..., metavar="STORE", help="A .zarr directory (or fsspec URL such as s3://bucket/x.zarr) or an .h5 file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show a store at a glance: model, layers, shapes, chunking, compression, status, provenance."""
    from .store import open_store
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
    store_path: str = typer.Argument(..., metavar="STORE", help="A complete .zarr directory (or fsspec URL such as s3://bucket/x.zarr) or .h5 file."),
    out_path: str = typer.Argument(..., metavar="OUT", help="The new store (.zarr, .h5, or a .zarr URL)."),
    layout: str = typer.Option("unit-major", "--layout", help="unit-major (one channel/unit over many images per chunk) or image-major (as extract writes)."),
    chunk_images: Optional[int] = typer.Option(None, "--chunk-images", help="Rows per chunk [unit-major: as many as --max-memory-mb allows; image-major: 16]."),
    chunk_channels: Optional[int] = typer.Option(None, "--chunk-channels", help="Channels (units) per chunk [default: chunks up to 1 MiB]."),
    zarr_shard_rows: Optional[int] = typer.Option(None, "--zarr-shard-rows", help="Rows per Zarr shard file (a multiple of the chunk rows; 0: one file per chunk) [default: as extract chooses]."),
    max_memory_mb: int = typer.Option(1024, "--max-memory-mb", help="Memory the copy may hold, in MiB."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at OUT."),
    drop_skipped: bool = DROP_SKIPPED_OPTION,
) -> None:
    """Copy STORE to OUT in another chunk layout, streaming in bounded memory."""
    from .store.provenance import skipped_note
    from .store.rechunk import rechunk
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
    store_path: str = typer.Argument(..., metavar="STORE", help="A .zarr directory (or fsspec URL such as s3://bucket/x.zarr) or an .h5 file."),
    module_name: str = typer.Option(..., "--module-name", "--module_name", help="The layer to export, e.g. features.11."),
    file_format: str = typer.Option("txt", "--file-format", "--file_format", help="txt or npy (also .txt/.npy). npy is exact and keeps the stored shape in one array; txt of a 3+-D layer uses the original slices with %-7.5f: LOSSY (5 decimals)."),
    out_path: Path = typer.Option(..., "--out-path", "--out_path", help="Root folder: files go to OUT/<model>/<module>/."),
    n_splits: int = typer.Option(1, "--split", help="Write activations_01 ... activations_NN: exactly N files (the original wrote N-1)."),
    decimals: int = typer.Option(5, "--decimals", help="Decimals of text slices (the original's 5 is lossy; more digits keep more)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace this layout's own files there (activations.txt, activations_NN.npy, targets, file_names.txt; nothing else), once the export has finished."),
    drop_skipped: bool = DROP_SKIPPED_OPTION,
) -> None:
    """Write one layer of a store in the original extract.py layout (txt/npy), streaming."""
    from .legacy_io import export_layer
    from .store.provenance import skipped_note
    result = export_layer(store_path, module_name, out_path, file_format, n_splits=n_splits,
                          decimals=decimals, overwrite=overwrite, drop_skipped=drop_skipped)
    typer.echo(f"exported {module_name} {result.shape} to {result.folder}: "
               f"{', '.join(p.name for p in result.files)}"
               + skipped_note(result.skipped, result.dropped_skipped, "NaN rows"))


@app.command("import-legacy")
@command
def import_legacy_command(
    source: Path = typer.Argument(..., metavar="DIR", help="An original output folder <out>/<model>/<module>/ (or <out>/<model>/)."),
    out_path: str = typer.Option(..., "--out-path", "--out_path", help="The new store (.zarr directory, .h5 file, or a .zarr URL such as s3://bucket/x.zarr)."),
    file_format: Optional[str] = typer.Option(None, "--file-format", "--file_format", help="zarr or hdf5 [default: from the out path's suffix, else zarr]."),
    chunk_images: int = CHUNK_IMAGES_OPTION,
    compression: Optional[str] = COMPRESSION_OPTION,
    zarr_shard_rows: Optional[int] = ZARR_SHARD_ROWS_OPTION,
    overwrite: bool = OVERWRITE_STORE_OPTION,
) -> None:
    """Bring an original txt/npy output folder (single or split files) into a store, streaming."""
    from .legacy_io import import_legacy
    result = import_legacy(source, out_path, file_format=file_format, overwrite=overwrite, chunk_images=chunk_images,
                           compression=compression, zarr_shard_rows=zarr_shard_rows,
                           command_line=shlex.join(["actstore", *sys.argv[1:]]))
    typer.echo(f"imported {result.n_images} rows of {len(result.layers)} layer(s) from {source} "
               f"to {result.path} [{result.file_format}]")


@app.command("verify")
@command
def verify_command(
    store_path: str = typer.Argument(..., metavar="STORE", help="A .zarr directory (or fsspec URL such as s3://bucket/x.zarr) or an .h5 file."),
    recompute: int = typer.Option(0, "--recompute", help="Recompute K random images through the model and compare."),
    model_path: Optional[Path] = typer.Option(None, "--model-path", "--model_path", help="The weights file the store was made with (for --recompute)."),
    in_path: Optional[Path] = typer.Option(None, "--in-path", "--in_path", help="The image folder, if it moved (for --recompute)."),
    device: str = typer.Option("cpu", "--device", help="Device for --recompute."),
    repair: bool = typer.Option(False, "--repair", help="First clear the 'open for write' flag a killed HDF5 writer leaves (as h5clear -s; no data changes), so every HDF5 reader opens the file."),
    quick: bool = typer.Option(False, "--quick", help="Check that every chunk of every written row is present, without decoding (no checksums, no values)."),
) -> None:
    """Check a store: schema, every row written, every chunk present, decoding and matching its checksum, finite values, unique names."""
    from .verify import verify
    report = verify(store_path, recompute=recompute, model_path=model_path, in_path=in_path,
                    device=device, repair=repair, quick=quick)
    for check in report.checks:
        colour = typer.colors.YELLOW if check.skipped else typer.colors.GREEN if check.ok else typer.colors.RED
        label = "skip" if check.skipped else "ok  " if check.ok else "FAIL"
        typer.secho(f"{label} {check.name}: {check.detail}", fg=colour)
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="actstore")
    except BrokenPipeError:   # raised while typer/click itself writes (help, usage)
        _quiet_closed_stdout()
        sys.exit(0)
    except SystemExit as done:
        # click ends a closed pipe during --help with status 1, after wrapping
        # stdout so that nothing more is printed: a closed pipe exits 0 here.
        if done.code == 1 and type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
            sys.exit(0)
        raise


if __name__ == "__main__":
    main()
