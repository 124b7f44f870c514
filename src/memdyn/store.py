"""Run directories: atomic writes, cached cells, resume.

Layout of a run directory::

    config.json                 resolved configuration of every selected experiment + seed
    config.toml                 the same as a config file (``memdyn run --config``)
    results.json                claims of all experiments, versions, timings
    report.html                 self-contained report
    <experiment>/results.json   written last: its presence marks the experiment finished
    <experiment>/tables/*.parquet
    <experiment>/figures/*.png
    <experiment>/cells/*.npz    intermediate results (one simulation each), reused on resume; each
                                name carries the hash of the code that produced it (:func:`code_hash`
                                of the experiment's module: its import closure), so a resumed run
                                never mixes results of two versions of that code

Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted run leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["RunStore", "atomic_write", "code_hash", "import_closure"]


_ROOT = Path(__file__).resolve().parent


def _module_file(name: str, root: Path = _ROOT) -> Path | None:
    """The source file of memdyn module ``name`` (a dotted name from ``memdyn``) under the package
    directory ``root``, or None."""
    parts = name.split(".")
    if parts[0] != "memdyn":
        return None
    base = root.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(name: str, tree: ast.Module, root: Path) -> set[str]:
    """The memdyn modules that module ``name`` imports anywhere in its code (inside functions too)."""
    package = name if _module_file(name, root).name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if _module_file(m, root) is not None}


def _without_docstrings(tree: ast.Module) -> str:
    """The code of a module as its syntax tree, without docstrings (comments and layout are not in it)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _closure(module: str, root: Path) -> dict[str, tuple[bytes, ast.Module]]:
    """{name: (source, syntax tree)} of ``module`` and every memdyn module it imports, each read once."""
    seen: dict[str, tuple[bytes, ast.Module]] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, root)
        if path is None:
            raise ValueError(f"{name!r} is not a module of memdyn")
        source = path.read_bytes()
        seen[name] = (source, ast.parse(source))
        todo.extend(_imports(name, seen[name][1], root) - set(seen))
    return seen


def import_closure(module: str, root: str | os.PathLike | None = None) -> list[str]:
    """``module`` and every memdyn module it imports, directly or through others (imports inside
    functions included; the packages above a module count only where it imports from them), sorted.
    ``root``: the package directory to read (default: this installed package)."""
    return sorted(_closure(module, _ROOT if root is None else Path(root)))


@functools.lru_cache(maxsize=None)
def code_hash(module: str = "memdyn", root: str | os.PathLike | None = None) -> str:
    """12 hex digits of a SHA-256 of the code that computes ``module``'s results: its own source
    text and the code of every memdyn module in its import closure (:func:`import_closure`).

    The cells of an experiment are keyed by the hash of its module, so any edit of the experiment,
    or a change of the code of anything it uses, computes them again, while an edit elsewhere, or a
    docstring, comment or layout edit in a module it uses, keeps them (those modules enter by
    their syntax tree without docstrings). The default, the package's ``__init__``, imports every
    public module. ``root`` as in :func:`import_closure`."""
    h = hashlib.sha256()
    for name, (source, tree) in sorted(_closure(module, _ROOT if root is None else Path(root)).items()):
        h.update(name.encode() + b"\0")
        h.update(source if name == module else _without_docstrings(tree).encode())
    return h.hexdigest()[:12]


def _umask() -> int:
    """The process's file-mode creation mask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, then put back
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename), with the permissions any
    other tool's new file gets: 0666 less the umask (0644 under the usual 022, 0600 under 077)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp makes it 0600
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _values(col) -> np.ndarray:
    """A numeric column's values as float64; a nullable column's NA entries (missing by design) left out."""
    import pandas as pd

    if pd.api.types.is_extension_array_dtype(col.dtype):
        col = col.dropna()
    return col.to_numpy(dtype=np.float64)


class TableError(ValueError):
    """A table the store refuses (NaN or infinite values): a defect of the code that made it."""


class RunStore:
    """A run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write_json(self, rel: str, obj) -> None:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
        atomic_write(self.path(rel), text.encode() + b"\n")

    def write_text(self, rel: str, text: str) -> None:
        atomic_write(self.path(rel), text.encode())

    def read_json(self, rel: str):
        p = self.path(rel)
        if not p.exists():
            return None
        return json.loads(p.read_text())

    def write_table(self, rel: str, df) -> None:
        """Write a pandas DataFrame as Parquet; refuses NaN or infinite values (a value missing by design
        is a pandas NA in a nullable column, e.g. ``Float64``)."""
        num = df.select_dtypes(include=[np.number])
        bad = [c for c in num.columns if not np.isfinite(_values(num[c])).all()]
        if bad:
            raise TableError(f"table {rel}: non-finite values in columns {bad}")
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write(self.path(rel), buf.getvalue())

    def write_figure(self, rel: str, fig) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        atomic_write(self.path(rel), buf.getvalue())

    def cell(self, rel: str, compute: Callable[[], dict]) -> dict:
        """Return the arrays stored at ``rel`` (.npz, compressed), computing and storing them if absent.

        ``compute`` returns a dict of arrays / numbers: what the experiment's claims, tables and
        figures read (reduced observables, not raw per-chain trajectories, so that a run directory
        stays small); what comes back is always the stored form, so a resumed run and a fresh one see
        the same values.
        """
        p = self.path(rel)
        if not p.exists():
            arrays = {k: np.asarray(v) for k, v in compute().items()}
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            atomic_write(p, buf.getvalue())
        with np.load(p) as z:
            return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
