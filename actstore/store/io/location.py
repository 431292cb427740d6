"""Where a store lives: a local path, or an fsspec URL (``s3://bucket/x.zarr``).

Local paths stay :class:`~pathlib.Path`; URLs stay strings, since ``Path``
would fold ``s3://`` into ``s3:/``. Credentials and endpoints come from the
usual places (``AWS_*`` variables, ``~/.aws``, or fsspec's
``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible server).
"""
from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

Location = Path | str

# fsspec caches each filesystem's directory listings for the life of the
# process; another process (a shard, a resumed run, an --overwrite) changes
# the store behind that cache, and s3fs then answers ``exists`` from the stale
# listing. Listings of a store are few, so they are always fetched afresh.
STORAGE_OPTIONS = {"use_listings_cache": False}


def is_url(path: Location) -> bool:
    return "://" in str(path)


def location(path: Location) -> Location:
    return str(path) if is_url(path) else Path(path)


def suffix(path: Location) -> str:
    return posixpath.splitext(str(path).rstrip("/"))[1].lower()


def identity(path: Location) -> str:
    """The same string for the same store from any working directory."""
    return str(path).rstrip("/") if is_url(path) else str(Path(path).resolve())


def filesystem(url: str):
    """``(fsspec filesystem, path inside it)`` for ``url``, listings never cached."""
    import fsspec
    return fsspec.core.url_to_fs(url, **STORAGE_OPTIONS)


def exists(path: Location) -> bool:
    if is_url(path):
        fs, inner = filesystem(str(path))
        return bool(fs.exists(inner))
    return Path(path).exists()


def join(path: Location, name: str) -> Location:
    return f"{str(path).rstrip('/')}/{name}" if is_url(path) else Path(path) / name


def remove(path: Location) -> None:
    """Delete a folder or file tree (callers check first that it is a store)."""
    if is_url(path):
        fs, inner = filesystem(str(path))
        fs.rm(inner, recursive=True)
    elif Path(path).is_dir():
        shutil.rmtree(path)
    else:
        Path(path).unlink()


def free_space(path: Location) -> int | None:
    """Free bytes on the file system that will hold ``path`` (None for URLs)."""
    if is_url(path):
        return None
    probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free
