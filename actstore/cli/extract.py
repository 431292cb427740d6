"""Commands about models and extraction: ``extract``, ``layers``, ``models``."""
from __future__ import annotations

import shlex
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from .. import config
from ..errors import BadOptionError
from .app import (
    CHUNK_IMAGES_OPTION,
    COMPRESSION_OPTION,
    MODEL_PATH_HELP,
    OVERWRITE_STORE_OPTION,
    WEIGHTS_HELP,
    ZARR_SHARD_ROWS_OPTION,
    _table,
    app,
    command,
)


def _choose_modules(model_name: Optional[str], source: str, model_path: Optional[Path]) -> list[str]:
    """--interactive: show the module tree and ask until a real module is named."""
    from ..models import suggest
    tree = _tree(model_name, source, model_path)
    typer.echo(_format_tree(tree), err=True)
    names = [m.name for m in tree]
    while True:
        typer.echo("module name(s), separated by commas: ", nl=False, err=True)
        try:
            answer = input()
        except EOFError:   # Ctrl-D, or stdin that is not a terminal and ends; Ctrl-C exits 130
            raise BadOptionError("no module chosen (end of input): answer the prompt, or pass --module-name "
                            f"(see `actstore layers {model_name}`)") from None
        chosen = [a.strip() for a in answer.replace(" ", ",").split(",") if a.strip()]
        unknown = [c for c in chosen if c.split("[")[0] not in names]
        if chosen and not unknown:
            return chosen
        typer.secho(suggest(unknown[0], names, "module") if unknown else "name a module",
                    fg=typer.colors.YELLOW, err=True)


def _tree(model_name: Optional[str], source: str, model_path: Optional[Path], weights: str = "none"):
    """The module tree; random weights unless a local copy is given (shapes do not depend on them)."""
    from ..models import load_model, module_tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module_tree(load_model(model_name, source=source, model_path=model_path,
                                      weights=weights if model_path is not None else "none"))


# Characters of the type and output columns before their text wraps onto more
# lines (a tuple's parts, where a pooled embedding comes from), so the table stays within 120.
TYPE_COLUMN, OUTPUT_COLUMN = 26, 28


def _format_tree(tree) -> str:
    rows = [("module", "type", "output per image", "bytes/image")]   # bytes of float32
    for m in tree:
        size = m.bytes_per_image()
        kinds, outputs = _wrap(m.type, TYPE_COLUMN, " "), _wrap(m.describe(), OUTPUT_COLUMN, "  ")
        for i in range(max(len(kinds), len(outputs))):
            rows.append(("  " * m.depth + m.name if i == 0 else "", kinds[i] if i < len(kinds) else "",
                         outputs[i] if i < len(outputs) else "", f"{size:,}" if size and i == 0 else ""))
    return "\n".join(_table(rows))


def _wrap(text: str, width: int, separator: str) -> list[str]:
    """``text``'s pieces (split at ``separator``: a tuple's parts are two spaces
    apart) packed into lines of at most ``width`` characters, never splitting a piece."""
    lines: list[str] = []
    for piece in text.split(separator):
        if lines and len(lines[-1]) + len(separator) + len(piece) <= width:
            lines[-1] += separator + piece
        else:
            lines.append(piece)
    return lines


# The help of extract's options, by ExtractOptions field: the CLI's flags are exactly its fields.
HELP = {
    'model_name': ('Model as its family spells it: alexnet, vit_small_patch14_dinov2, ViT-B-32, facebook/dinov2-small '
                   '(see `actstore models --source S`).'),
    'source': 'Model family: torchvision, timm, open_clip or hf.',
    'module_names': 'Module to store, e.g. features.11; repeat for several (one forward pass).',
    'in_path': 'Folder of images, flat or one subfolder per class.',
    'out_path': ('Store path: a .zarr directory or .h5/.hdf5 file. A path without those suffixes gets the original '
                 "tool's txt layout <out>/<model>/<module>/ unless --file-format says otherwise."),
    'batch_size': 'Images per forward pass.',
    'device': 'cpu, cuda or cuda:N.',
    'flatten_acts': 'Store (N, units) instead of the native shape.',
    'fraction': 'Random fraction of the images (0 < F <= 1), picked with --rnd-seed.',
    'rnd_seed': 'Seed for --fraction and for random initialisation.',
    'things': 'Order classes by the THINGS concept file (uniqueID column).',
    'things_tsv': 'Path to things_concept.tsv [default: data/things_concept.tsv].',
    'file_format': "zarr, hdf5, or the original tool's txt/npy [default: from the out path's suffix, else zarr].",
    'dtype': 'Storage dtype: float32 or float16.',
    'compression_level': "Codec level [default: the codec's own].",
    'chunk_channels': 'Channels (units) per chunk [default: all, split only when a chunk would exceed 1 MiB].',
    'num_workers': 'DataLoader processes decoding images [default: 2 on the CPU, up to 8 on a GPU].',
    'interactive': 'Show the module tree and ask for the module.',
    'skip_bad_images': 'Leave out unreadable images (recorded in the store) instead of stopping.',
    'dry_run': 'Print per-layer sizes, a measured estimate of the store and the free space; write nothing.',
    'force': 'Start even when the estimated store size exceeds the free space.',
    'amp': ('Mixed precision for the forward pass: float16 or bfloat16 (recorded; stored values then carry that '
            'precision).'),
    'decoder': ('pil (decode in DataLoader workers), or torchvision: JPEGs decoded in batches on --device (nvJPEG on '
                'a GPU) when the decoder is the limit; values differ slightly from pil.'),
    'channels_last': 'Run convolutions in channels_last memory format (can be faster on GPUs).',
    'shard': ('I/N: this process extracts share I of N into the same Zarr store (torchrun sets it from '
              'RANK/WORLD_SIZE).'),
    'repair': ('Also decode every stored chunk first and recompute the rows whose chunks fail their checksum (a '
               'plain rerun recomputes rows whose files are gone).'),
    'quiet': 'No progress bar, and no closing line on what limited the run.',
    'pretrained': "The original tool's flag; trained weights are the default here.",
}


@app.command("extract")
@command
def extract_command(
    model_name: Optional[str] = typer.Option(None, "--model-name", "--model_name", help=HELP['model_name']),
    source: str = typer.Option("torchvision", "--source", help=HELP['source']),
    module_names: List[str] = typer.Option([], "--module-name", "--module_name", help=HELP['module_names']),
    in_path: Path = typer.Option(Path("./images/"), "--in-path", "--in_path", help=HELP['in_path']),
    out_path: str = typer.Option("./activations/", "--out-path", "--out_path", help=HELP['out_path']),
    model_path: Optional[Path] = typer.Option(None, "--model-path", "--model_path", help=MODEL_PATH_HELP),
    weights: str = typer.Option("DEFAULT", "--weights", help=WEIGHTS_HELP),
    batch_size: int = typer.Option(config.BATCH_SIZE, "--batch-size", "--batch_size", help=HELP['batch_size']),
    device: str = typer.Option("cpu", "--device", help=HELP['device']),
    flatten_acts: bool = typer.Option(False, "--flatten-acts", "--flatten_acts", help=HELP['flatten_acts']),
    fraction: float = typer.Option(1.0, "--fraction", help=HELP['fraction']),
    rnd_seed: int = typer.Option(42, "--rnd-seed", "--rnd_seed", help=HELP['rnd_seed']),
    things: bool = typer.Option(False, "--things", help=HELP['things']),
    things_tsv: Optional[Path] = typer.Option(None, "--things-tsv", help=HELP['things_tsv']),
    file_format: Optional[str] = typer.Option(None, "--file-format", "--file_format", help=HELP['file_format']),
    dtype: str = typer.Option("float32", "--dtype", help=HELP['dtype']),
    compression: Optional[str] = COMPRESSION_OPTION,
    compression_level: Optional[int] = typer.Option(None, "--compression-level", help=HELP['compression_level']),
    chunk_images: int = CHUNK_IMAGES_OPTION,
    chunk_channels: Optional[int] = typer.Option(None, "--chunk-channels", help=HELP['chunk_channels']),
    zarr_shard_rows: Optional[int] = ZARR_SHARD_ROWS_OPTION,
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help=HELP['num_workers']),
    interactive: bool = typer.Option(False, "--interactive", help=HELP['interactive']),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help=HELP['skip_bad_images']),
    dry_run: bool = typer.Option(False, "--dry-run", help=HELP['dry_run']),
    force: bool = typer.Option(False, "--force", help=HELP['force']),
    amp: Optional[str] = typer.Option(None, "--amp", help=HELP['amp']),
    decoder: str = typer.Option("pil", "--decoder", help=HELP['decoder']),
    channels_last: bool = typer.Option(False, "--channels-last", help=HELP['channels_last']),
    shard: Optional[str] = typer.Option(None, "--shard", help=HELP['shard']),
    overwrite: bool = OVERWRITE_STORE_OPTION,
    repair: bool = typer.Option(False, "--repair", help=HELP['repair']),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=HELP['quiet']),
    pretrained: bool = typer.Option(False, "--pretrained", hidden=True, help=HELP['pretrained']),
) -> None:
    """Extract activations of MODEL at the given modules for every image into one store."""
    from ..extract import ExtractOptions, extract
    if interactive:
        if not model_name and model_path is None:
            raise BadOptionError("--interactive needs --model-name")
        module_names = _choose_modules(model_name, source, model_path)
    flags = {k: v for k, v in locals().items() if k in ExtractOptions.__dataclass_fields__}
    result = extract(ExtractOptions(**flags, command_line=shlex.join(["actstore", *sys.argv[1:]])))
    _report(result, dry_run, quiet)


def _report(result, dry_run: bool, quiet: bool) -> None:
    """What a run did, in one line (a dry run: its plan)."""
    if result.plan is not None and dry_run:
        typer.echo(_format_plan(result.plan, result.file_format))
        return
    if result.resumed and result.rows_this_run == 0 and result.complete:
        typer.echo(f"{result.path} is already complete ({result.n_images} rows); nothing to do", err=quiet)
        return
    rate = result.rows_this_run / result.seconds if result.seconds else 0.0
    state = "complete" if result.complete else f"incomplete ({result.rows_written}/{result.n_images} rows)"
    if result.rows_skipped or result.images_left_out:   # at the pre-check or mid-run: counted on the last line
        state += f" ({result.rows_skipped + result.images_left_out} bad image(s) skipped; see skipped_images)"
    state = f"{result.output} {state}"
    verb = "resumed" if result.resumed else "wrote"
    if result.part:
        first, stop = result.part_rows
        verb = f"shard {result.part[0]}/{result.part[1]} (rows {first}-{stop - 1}): {verb}"
    typer.echo(f"{verb} {result.rows_this_run} rows of {len(result.layers)} layer(s) to {result.path} "
               f"[{result.file_format}] in {result.seconds:.1f} s ({rate:.1f} img/s); {state}",
               err=quiet)


def _format_plan(plan, file_format: str) -> str:
    from ..extract.plan import human_size as _size
    rows = [("layer", "shape per image", "bytes/image", "raw total", f"estimated {file_format}")]
    for layer in plan.layers:
        rows.append((layer.module_name, "x".join(map(str, layer.shape)), f"{layer.bytes_per_image:,}",
                     _size(layer.raw_bytes), _size(layer.estimated_bytes)))
    rows.append(("total", "", "", _size(plan.raw_bytes), _size(plan.estimated_bytes)))
    lines = _table(rows)
    files = f"; {plan.files:,} file(s)" if plan.files is not None else ""
    lines.append(f"{plan.rows} images; estimate from {plan.sample_images} sampled images; free space: "
                 f"{_size(plan.free_bytes)}{files}"
                 + ("" if plan.fits else "  -- DOES NOT FIT (use --force to start anyway)"))
    return "\n".join(lines)


@app.command()
@command
def layers(
    model: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="Model name, as --model-name."),
    model_name: Optional[str] = typer.Option(None, "--model-name", "--model_name", help="Model name (or give it as "
        "MODEL)."),
    source: str = typer.Option("torchvision", "--source", help="Model family: torchvision, timm, open_clip or hf."),
    model_path: Optional[Path] = typer.Option(None, "--model-path", "--model_path", help=MODEL_PATH_HELP),
    weights: str = typer.Option("DEFAULT", "--weights", help=WEIGHTS_HELP + " Used only with --model-path: the tree "
                                "needs no trained weights."),
) -> None:
    """Print MODEL's module tree: each module's output shape per image and bytes per image;
    for tuple outputs each part and its layer name (MODULE[1], MODULE[pooler_output])."""
    typer.echo(_format_tree(_tree(model or model_name, source, model_path, weights)))


@app.command()
@command
def models(
    source: str = typer.Option("torchvision", "--source", help="Model family: torchvision, timm, open_clip or hf."),
    pattern: Optional[str] = typer.Argument(None, help="Only names matching this (shell wildcards, or a part of the "
        "name)."),
) -> None:
    """List a family's models (torchvision: * the original tool's nine; hf: the local cache)."""
    from ..models import ORIGINAL_MODELS, list_models
    names = list_models(source, pattern)
    for name in names:
        typer.echo(f"{name}{' *' if source == 'torchvision' and name in ORIGINAL_MODELS else ''}")
    if source == "hf":
        typer.echo(f"{len(names)} model(s) in the local Hugging Face cache; any hub id (facebook/dinov2-small) "
                   "or a save_pretrained folder (--model-path) works", err=True)
