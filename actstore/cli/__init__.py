"""The ``actstore`` command line: each command turns its options into one library call.

:mod:`.app` holds the typer app, the one-line error handling and the options
commands share; each other module registers its commands on it.
"""
from . import extract, store  # noqa: F401  (their commands register on the app)
from .app import app, main
from .extract import extract_command

__all__ = ["app", "extract_command", "main"]
