"""Atomic file output (temp file + ``os.replace``) and output-directory safety."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import KirchnetError


class OutputExistsError(KirchnetError, FileExistsError):
    """The output directory exists and is not empty (pass ``force`` to reuse it)."""


def _default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder (flushed to disk),
    then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_default, allow_nan=True) + "\n")


def write_csv(path, rows: Iterable[Mapping[str, Any]], fieldnames: list[str] | None = None) -> Path:
    """Rows (dicts) as CSV; columns = ``fieldnames`` or the union of keys in first-seen order."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = []
        for r in rows:
            fieldnames += [k for k in r if k not in fieldnames]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    return write_text(path, buf.getvalue())


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


def prepare_out_dir(out, force: bool = False) -> Path:
    """Create ``out``; refuse an existing non-empty directory unless ``force``."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not force:
            raise OutputExistsError(
                f"output directory {out} already exists and is not empty; choose another --out, "
                f"or pass --force to write into it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def timestamped_dir(base, prefix: str) -> Path:
    """``base/prefix-YYYYmmdd-HHMMSS`` (with a numeric suffix if it already exists)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    cand = Path(base) / f"{prefix}-{stamp}"
    k = 1
    while cand.exists():
        cand = Path(base) / f"{prefix}-{stamp}-{k}"
        k += 1
    return cand
