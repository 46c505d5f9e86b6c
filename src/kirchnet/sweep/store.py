"""Persistence of run results: atomic files, reading them back, the results table."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..experiments.io import write_bytes, write_text
from .spec import _RESERVED_COLUMNS, _canonical_json, run_id_of

__all__ = ["load_records", "build_table", "record_problem", "trusted_records"]


# --------------------------------------------------------------------------- persistence


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON (NaN/inf raise), atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def load_records(out_dir: str | os.PathLike, run_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """Read ``OUT/runs/*.json`` (only ``run_ids`` if given); unreadable files are skipped."""
    runs = Path(out_dir) / "runs"
    records = {}
    paths = (runs / f"{r}.json" for r in run_ids) if run_ids is not None else runs.glob("*.json")
    for p in paths:
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
            continue
        if isinstance(rec, dict) and rec.get("run_id") == p.stem:
            records[p.stem] = rec
    return records


def record_problem(rec: Any, run) -> str | None:
    """Why a run record cannot be trusted for ``run`` (a :class:`~kirchnet.sweep.RunSpec`),
    or None when it can: it must be a JSON object with this run's id, the status ``ok``
    (with a non-empty ``metrics`` table) or ``failed`` (with an ``error`` text), and a
    ``config`` whose hash is the run id and equals the run's config."""
    if not isinstance(rec, Mapping):
        return "not a JSON object"
    if rec.get("run_id") != run.run_id:
        return f"run_id {rec.get('run_id')!r} is not {run.run_id!r}"
    status = rec.get("status")
    if status == "ok":
        metrics = rec.get("metrics")
        if not isinstance(metrics, Mapping) or not metrics:
            return "status 'ok' without metrics"
    elif status == "failed":
        if not isinstance(rec.get("error"), str):
            return "status 'failed' without an error"
    else:
        return f"unknown status {status!r}"
    config = rec.get("config")
    if not isinstance(config, Mapping):
        return "no config"
    try:
        rid = run_id_of(config)
    except (TypeError, ValueError):
        return "config is not canonical JSON"
    if rid != run.run_id or _canonical_json(config) != _canonical_json(run.config):
        return f"config hash {rid} does not match the run id"
    return None


def trusted_records(out_dir, runs) -> tuple[dict[str, dict], dict[str, str]]:
    """``(trusted, rejected)``: the records of ``runs`` in ``OUT/runs/`` that validate
    (:func:`record_problem`), and for the others that exist, why they were rejected
    (those runs execute again)."""
    records = load_records(out_dir, [r.run_id for r in runs])
    trusted, rejected = {}, {}
    for r in runs:
        if r.run_id in records:
            problem = record_problem(records[r.run_id], r)
            if problem is None:
                trusted[r.run_id] = records[r.run_id]
            else:
                rejected[r.run_id] = problem
    return trusted, rejected


def build_table(records: Mapping[str, dict] | Sequence[dict], axes: Sequence[str] | None = None):
    """One row per run: run_id, status, axis values, metrics, wall_s, error (pandas DataFrame)."""
    import pandas as pd

    recs = list(records.values()) if isinstance(records, Mapping) else list(records)
    if axes is None:
        axes = []
        for r in recs:
            axes += [k for k in r.get("labels", {}) if k not in axes]
    rows = []
    for r in recs:
        row = {"run_id": r["run_id"], "status": r.get("status")}
        for a in axes:
            v = r.get("labels", {}).get(a)
            row[a] = _canonical_json(v) if isinstance(v, (list, dict)) else v
        for k, v in (r.get("metrics") or {}).items():
            name = k if k not in row and k not in _RESERVED_COLUMNS else f"metric.{k}"
            row[name] = _canonical_json(v) if isinstance(v, (list, dict)) else v
        row["wall_s"] = r.get("wall_s")
        row["error"] = r.get("error")
        row["worker"] = r.get("worker")
        row["pid"] = r.get("pid")
        row["finished_at"] = r.get("finished_at")
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["run_id", "status", *axes, *_RESERVED_COLUMNS[2:]])
    return df


def preload_table_libraries() -> None:
    """Import now what writing ``results.csv``/``.parquet`` imports on first use (pandas, its
    CSV writer, pyarrow and pandas' Parquet module where pyarrow is installed), by writing a
    one-row table to memory. A sweep calls this before its loop: a Ctrl-C that lands in the
    middle of a first import leaves a half-initialized module in ``sys.modules``, and every
    later import of it fails (pandas: "partially initialized module"), the report included."""
    import pandas as pd

    frame = pd.DataFrame({"run_id": ["r"], "loss": [0.0]})
    frame.to_csv(index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    with contextlib.suppress(Exception):  # as _write_tables: Parquet is a convenience
        frame.to_parquet(io.BytesIO(), index=False)


def _write_tables(out: Path, df) -> list[Path]:
    paths = [out / "results.csv"]
    write_text(paths[0], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return paths
    buf = io.BytesIO()
    frame = df.copy()
    for col in frame.columns:  # mixed-type object columns cannot go to Parquet as they are
        if frame[col].dtype == object:
            vals = frame[col].dropna()
            if len({type(v) for v in vals}) > 1:
                frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    try:
        frame.to_parquet(buf, index=False)
    except Exception:  # noqa: BLE001 - Parquet is a convenience; CSV is the reference
        return paths
    paths.append(out / "results.parquet")
    write_bytes(paths[1], buf.getvalue())
    return paths


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")
