"""The code's shape as a specification: no import cycles, no store format named
outside the store package, one list of extraction options, one failure policy
for every command that writes a store, and errors library callers can tell apart."""
from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actstore import errors
from actstore.errors import BadImagesError, BadOptionError, StoreConflictError, UserError

PACKAGE = Path(__file__).resolve().parents[1] / "actstore"
# The original layout's own package speaks of its files by name.
FORMAT_MODULES = {"store", "legacy", "cli"}   # cli: help texts name the suffixes


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports when run (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        base = package[:len(package) - node.level + 1] if node.level else []
        target = ".".join(base + ([node.module] if node.module else []))
        for alias in node.names:
            full = f"{target}.{alias.name}"
            out.add(full if full in modules else target)
    return {m for m in out if m in modules and m != name}


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    graph = {name: _runtime_imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ runs before any of its submodules: a submodule importing
    # its own parent package is not a cycle, a parent importing a submodule is an edge.
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_store_format_is_named_outside_the_store_package():
    pattern = re.compile(r"(?<![\w-])\.?(zarr|hdf5|h5|txt|npy)(?![\w-])", re.IGNORECASE)
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in FORMAT_MODULES:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if pattern.search(node.value):
                    found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert found == []


def test_the_cli_extract_flags_are_exactly_the_extract_options():
    from actstore.cli import extract_command
    from actstore.extract import ExtractOptions
    flags = set(inspect.signature(extract_command).parameters) - {"interactive", "pretrained"}
    fields = {f for f, spec in ExtractOptions.__dataclass_fields__.items() if spec.init}
    assert flags == fields - {"model", "command_line"}


def test_options_are_validated_when_built():
    from actstore.extract import ExtractOptions
    with pytest.raises(BadOptionError, match="--batch-size must be at least 1, got 0"):
        ExtractOptions(in_path="in", out_path="out.zarr", module_names=["fc"], batch_size=0)
    options = ExtractOptions(in_path="in", out_path="out.zarr", module_names=["fc"], shard="1/3",
                             amp="none")
    assert (options.shard, options.amp, options.num_workers >= 0) == ((1, 3), None, True)


def test_no_bare_user_error_is_raised():
    bare = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and getattr(node.exc.func, "id", None) == "UserError":
                bare.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert bare == []


def test_error_kinds_are_also_the_matching_builtins():
    from actstore.errors import (
        BadOptionError,
        LayerNotFoundError,
        MissingPackageError,
        StoreNotFoundError,
        UnknownModelError,
    )
    assert issubclass(StoreNotFoundError, FileNotFoundError) and issubclass(BadOptionError, ValueError)
    assert issubclass(LayerNotFoundError, KeyError) and issubclass(UnknownModelError, LookupError)
    assert issubclass(MissingPackageError, ImportError)
    assert str(LayerNotFoundError("no layer 'fc'")) == "no layer 'fc'"   # not KeyError's quoted form


def test_every_specific_error_is_a_user_error():
    kinds = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(kinds) >= 9 and all(issubclass(kind, UserError) for kind in kinds)


def test_library_callers_can_tell_store_conflicts_and_bad_images_apart(tmp_path, image_dir, weights_file):
    from actstore import extract
    common = dict(model_name="alexnet", model_path=weights_file("alexnet"), module_names=["classifier.4"],
                  num_workers=0, quiet=True)
    (tmp_path / "notes.zarr").mkdir()
    (tmp_path / "notes.zarr" / "mine.txt").write_text("keep")
    with pytest.raises(StoreConflictError, match="exists and is not an actstore store"):
        extract(in_path=image_dir, out_path=tmp_path / "notes.zarr", **common)
    with pytest.raises(BadImagesError, match="does not exist"):
        extract(in_path=tmp_path / "nowhere", out_path=tmp_path / "a.zarr", **common)
    assert (tmp_path / "notes.zarr" / "mine.txt").read_text() == "keep"


# --------------------------------------------------------------------------- one failure policy


def _interrupt_after(monkeypatch, owner, name: str, calls: int) -> None:
    """Make ``owner.name`` raise KeyboardInterrupt on its call number ``calls + 1``."""
    original, count = getattr(owner, name), [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapped)


def test_an_interrupted_import_keeps_an_incomplete_store_that_a_rerun_completes(tmp_path, monkeypatch):
    from actstore import open_store
    from actstore.legacy.convert import _SourceFile, import_legacy
    folder = tmp_path / "alexnet" / "classifier.4"
    folder.mkdir(parents=True)
    values = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    np.save(folder / "activations.npy", values)
    np.save(folder / "targets.npy", np.arange(40) % 4)
    original_blocks = _SourceFile.blocks

    def two_blocks_then_interrupt(self, rows):
        for k, block in enumerate(original_blocks(self, rows)):
            if k == 2:
                raise KeyboardInterrupt
            yield block
    monkeypatch.setattr(_SourceFile, "blocks", two_blocks_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_legacy(folder, tmp_path / "back.zarr", chunk_images=8, zarr_shard_rows=8)
    with open_store(tmp_path / "back.zarr") as store:
        assert (store.status, int(store.written.sum())) == ("incomplete", 16)

    monkeypatch.setattr(_SourceFile, "blocks", original_blocks)
    import_legacy(folder, tmp_path / "back.zarr", chunk_images=8, zarr_shard_rows=8)
    with open_store(tmp_path / "back.zarr") as store:
        assert store.status == "complete" and store.attrs["completed"]
        np.testing.assert_array_equal(store["classifier.4"][:], values)


def test_an_interrupted_rechunk_keeps_an_incomplete_store_that_a_rerun_completes(tmp_path, monkeypatch):
    from synthetic import write_store

    from actstore import open_store
    from actstore.store import rechunk as rechunk_module
    values = write_store(tmp_path / "src.zarr", "zarr", n=40, chunk_images=8)
    options = dict(layout="image-major", chunk_images=8, max_memory=2 * 4 * (6 * 5 * 4 + 10) * 8)
    _interrupt_after(monkeypatch, rechunk_module.Store, "__getitem__", 4)   # two layers a block
    with pytest.raises(KeyboardInterrupt):
        rechunk_module.rechunk(tmp_path / "src.zarr", tmp_path / "out.h5", **options)
    with open_store(tmp_path / "out.h5") as store:
        assert (store.status, int(store.written.sum())) == ("incomplete", 16)

    monkeypatch.undo()
    result = rechunk_module.rechunk(tmp_path / "src.zarr", tmp_path / "out.h5", **options)
    assert result.block_rows == 8
    with open_store(tmp_path / "out.h5") as store:
        assert store.status == "complete" and store.attrs["completed"]
        for name, expected in values.items():
            np.testing.assert_array_equal(store[name][:], expected)
    with pytest.raises(StoreConflictError, match="exists"):
        rechunk_module.rechunk(tmp_path / "src.zarr", tmp_path / "out.h5", **options)


def test_the_store_tests_run_without_torch(tmp_path):
    """The store package and its tests need no torch: with torch made
    unimportable, every store test module collects and the backend contract
    passes (tests that extract with a model skip)."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('torch is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(PACKAGE.parent)])}
    tests = PACKAGE.parent / "tests" / "store"
    # every store test module is collected (so imported); the contract's classes run
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
                          "-k", "TestZarrSharded or TestZarrUnsharded or TestHdf5"],
                         capture_output=True, text=True, env=env, cwd=PACKAGE.parent)
    assert ran.returncode == 0 and " passed" in ran.stdout and "error" not in ran.stdout.lower(), ran.stdout[-2000:]


def test_modules_and_functions_stay_small():
    """One idea per module (at most 400 lines), one step per function (at most 60 lines)."""
    too_big = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        relative = path.relative_to(PACKAGE)
        if len(text.splitlines()) > 400:
            too_big.append(f"{relative}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_big.append(f"{relative}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_big == []
