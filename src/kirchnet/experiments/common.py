"""Shared helpers of the experiments: statistics, slopes, progress, writing results."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import io


def fit_loglog_slope(x, y, floor: float = 1e-12) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the points with ``y > floor``
    (NaN with fewer than two such points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (y > floor) & (x > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if v.size > 1 else 0.0


def aggregate(metrics: list[dict], keys, **labels) -> dict:
    """``labels`` plus ``key`` and ``key_std`` (mean and sample std over seeds) for each key present."""
    out = {**labels, "n_seeds": len(metrics)}
    for key in keys:
        if key in metrics[0]:
            out[key], out[key + "_std"] = mean_std([m[key] for m in metrics])
    return out


def pm(mean: float, std: float | None = None, digits: int = 3) -> str:
    """``mean +- std`` with ``digits`` significant digits (for report tables)."""
    if std is None:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {std:.2g}"


class Ticker:
    """Advance a rich progress task (or do nothing without one)."""

    def __init__(self, progress=None, total: int = 1, description: str = ""):
        self.progress = progress
        self.task = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, n: int = 1, description: str | None = None):
        if self.progress is not None:
            kw = {"description": description} if description else {}
            self.progress.update(self.task, advance=n, **kw)


def markdown_table(rows: list[dict], columns: list[str], headers: list[str] | None = None) -> str:
    headers = headers or columns
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def task_panels(tasks, table: list[dict]):
    """A figure with one panel per task: ``fig`` and ``[(ax, task, rows of table for it)]``."""
    from .. import plotting

    fig, axes = plotting.figure(figsize=(5.5 * len(tasks), 4.0), ncols=len(tasks))
    return fig, [(ax, task, [e for e in table if e["task"] == task])
                 for ax, task in zip(np.atleast_1d(axes), tasks)]


def write_results(out_dir, name: str, data: dict, rows: list[dict], figures: dict[str, Any]) -> dict:
    """Write ``name.json`` (``data``), ``name.csv`` (``rows``) and ``figures`` (file -> Figure)
    atomically into ``out_dir``; return ``data`` with a ``files`` entry."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [f"{name}.json", f"{name}.csv"]
    for fname, fig in figures.items():
        io.save_figure(fig, out / fname)
        files.append(fname)
    data = {**data, "files": files}
    io.write_csv(out / f"{name}.csv", rows)
    io.write_json(out / f"{name}.json", data)
    return data


@contextmanager
def timed(store: dict, key: str = "wall_time"):
    t0 = time.perf_counter()
    yield
    store[key] = time.perf_counter() - t0


# ----------------------------------------------------------------- task presets
def preset(task: str, quick: bool, seed: int = 0, **overrides) -> dict:
    """Config dict of the reference setup of a task used by E2-E5.

    * ``regression``: teacher-student, 3 inputs / 2 outputs, on a Delaunay network.
    * ``iris``: layered crossbar ``[11, 16, 3]`` (8 signed inputs + 2 bias + ground).
    * ``digits``: layered ``[131, 20, 10]`` (128 signed inputs + 2 bias + ground).
    All use the squared error on target voltages (classes as patterns, argmax decision),
    Adam, and conductances bounded below by 1e-3.
    """
    if task == "regression":
        cfg = {"name": "regression", "epochs": 40 if quick else 150, "batch_size": 16,
               "network": {"kind": "delaunay", "n": 60 if quick else 200},
               "task": {"name": "teacher_student", "n_inputs": 3, "n_outputs": 2,
                        "n_train": 64, "n_test": 64},
               "optimizer": {"name": "adam", "lr": 0.05}}
    elif task == "iris":
        cfg = {"name": "iris", "epochs": 30 if quick else 100, "batch_size": 16,
               "network": {"kind": "layered", "sizes": [11, 16, 3]},
               "task": {"name": "iris"}, "optimizer": {"name": "adam", "lr": 0.03}}
    elif task == "digits":
        cfg = {"name": "digits", "epochs": 8 if quick else 30, "batch_size": 32,
               "network": {"kind": "layered", "sizes": [131, 20, 10]},
               "task": {"name": "digits", **({"max_train": 400} if quick else {})},
               "optimizer": {"name": "adam", "lr": 0.02}}
    else:
        raise ValueError(f"unknown preset {task!r}")
    cfg["seed"] = seed
    return deep_update(cfg, overrides)


def deep_update(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def curve(histories: list[list[dict]], key: str):
    """``(epochs, mean, std)`` of ``key`` across runs with identical epoch grids."""
    ep = [r["epoch"] for r in histories[0]]
    vals = np.array([[r[key] for r in h] for h in histories], float)
    return ep, vals.mean(axis=0), (vals.std(axis=0, ddof=1) if len(histories) > 1 else None)
