"""Run directories: atomic writes, cached cells, resume.

Layout of a run directory::

    config.json                 resolved configuration of every selected experiment + seed
    results.json                claims of all experiments, versions, timings
    report.html                 self-contained report
    <experiment>/results.json   written last: its presence marks the experiment finished
    <experiment>/tables/*.parquet
    <experiment>/figures/*.png
    <experiment>/cells/*.npz    intermediate results (one simulation each), reused on resume; each
                                name carries the hash of the code that produced it (:func:`code_hash`),
                                so a resumed run never mixes results of two versions

Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted run leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["RunStore", "atomic_write", "code_hash"]


@functools.lru_cache(maxsize=None)
def code_hash() -> str:
    """12 hex digits of the SHA-256 of every source file of the installed memdyn package (paths and
    contents): it changes with any change of the code that computes results."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
        """Return the arrays stored at ``rel`` (.npz), computing and storing them if absent.

        ``compute`` returns a dict of arrays / numbers; what comes back is always the stored
        form (float64 / int64 numpy arrays), so a resumed run and a fresh one see the same values.
        """
        p = self.path(rel)
        if not p.exists():
            arrays = {k: np.asarray(v) for k, v in compute().items()}
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write(p, buf.getvalue())
        with np.load(p) as z:
            return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
