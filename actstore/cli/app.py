"""The command line's frame: the typer app, one-line errors, and the options commands share.

Every command is a plain function in :mod:`.extract`, :mod:`.store` or
:mod:`.analysis` whose parameters are its options; it turns them into one
library call and prints the result. Options that several commands take are
defined once here.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings
from functools import wraps
from typing import Callable

import typer

from .. import config
from ..errors import Interrupted, Terminated, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Extract activations of vision models into chunked Zarr/HDF5 stores.")
_state = {"debug": bool(os.environ.get("ACTSTORE_DEBUG"))}


MODEL_PATH_HELP = ("Local weights: a checkpoint file (torchvision, timm, OpenCLIP; safetensors or a plain state "
                   "dict) or folder of torchvision checkpoints; an OpenCLIP model folder; a Hugging Face "
                   "save_pretrained folder (with --source hf, enough on its own).")
WEIGHTS_HELP = ("torchvision weights name (DEFAULT, IMAGENET1K_V1), timm or OpenCLIP pretrained tag (openai), "
                "Hugging Face revision, or 'none' for random init; also picks the preprocessing.")


STORE_ARGUMENT = typer.Argument(..., metavar="STORE", help="A .zarr directory (or fsspec URL such as "
                                "s3://bucket/x.zarr) or an .h5 file.")

# Options that extract and import-legacy share, defined once.
COMPRESSION_OPTION = typer.Option(None, "--compression", help="zstd, lz4, gzip (deflate with shuffle) or none "
    "[default: zstd for Zarr, gzip for HDF5, which every HDF5 reader decodes without plugins].")
CHUNK_IMAGES_OPTION = typer.Option(config.CHUNK_IMAGES, "--chunk-images", help="Rows per chunk.")
ZARR_SHARD_ROWS_OPTION = typer.Option(None, "--zarr-shard-rows", help="Rows per Zarr shard file (a multiple of "
    "--chunk-images; 0: one file per chunk) [default: 4096, or fewer when the store has fewer rows].")
DROP_SKIPPED_OPTION = typer.Option(False, "--drop-skipped", help="Leave out the rows of images skipped as "
    "unreadable (their file names and targets too) instead of keeping them as NaN rows.")
OVERWRITE_STORE_OPTION = typer.Option(False, "--overwrite", help="Replace an existing store (never anything that is "
    "not an actstore store).")


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
            raise typer.Exit(0) from None
        except UserError as error:
            if _state["debug"]:
                traceback.print_exc()
            _fail(str(error), error.exit_status if isinstance(error, Terminated) else
                  130 if isinstance(error, Interrupted) else 1)
        except KeyboardInterrupt as stop:   # Ctrl-C, or SIGTERM/SIGHUP outside the batch loop
            signum = getattr(stop, "signum", None)
            _fail("interrupted" if signum is None else f"terminated by {signal.Signals(signum).name}; what was "
                  "written is kept: run the same command again to resume", 128 + (signum or 2))
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
        from .._version import __version__
        typer.echo(f"actstore {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    _state["debug"] = _state["debug"] or debug


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as lines of left-aligned columns, the first row the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


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

