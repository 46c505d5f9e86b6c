"""Experiment sweeps on Dask: expand a grid of training runs, execute, persist, resume.

A sweep file (TOML) holds a base training config and grid axes; :func:`expand` turns
it into independent runs, each identified by a stable ``run_id`` (the first 16 hex
digits of the SHA-256 of the canonical JSON of its validated config, values equal to
the schema defaults left out). :func:`run_sweep`
executes the runs that have no result yet on a Dask cluster (by default a local cluster
of processes; or an existing scheduler), and persists every finished run at once,
atomically, as ``OUT/runs/<run_id>.json`` (temp file + ``os.replace``). The results
table (``results.csv`` / ``results.parquet``), the aggregated ``summary.csv`` (mean and
sample std across seeds) and ``report.md`` with figures are rebuilt from those files.

Fault tolerance:

- resume: a run whose ``runs/<run_id>.json`` says ``"ok"`` is never executed again;
- a worker killed mid-run: the scheduler re-runs the lost run on another worker (up to
  ``distributed.scheduler.allowed-failures`` deaths, then it is recorded as failed
  with ``KilledWorker``); nothing else is lost because every other finished run is
  already on disk;
- a run that raises is retried ``retries`` times (Dask ``retries=``), then recorded as
  ``"failed"`` with its error and traceback; the sweep goes on.

Sweep file schema (unknown keys are errors)::

    [sweep]
    name = "rules-vs-tunable"      # used for the default output directory
    seeds = [0, 1, 2]              # or n_seeds = 3 (seeds 0..2); the seed axis
    seed_key = "seed"              # dotted path of the seed in the run config
    retries = 0                    # re-executions of a run that raised
    base_config = "train.toml"     # optional, relative to the sweep file
    runner = "pkg.module:function" # optional; default: kirchnet's run_training
    save_artifacts = false         # pass OUT/runs/<run_id>/ as the run's out_dir

    [base]                         # the base TrainConfig (merged over base_config)
    ...

    [grid]                         # cartesian axes: dotted config path -> values
    "tunable.fraction" = [1.0, 0.5]

    [variants.rule.ep]             # a labelled axis of coupled settings: axis "rule",
    set = { "rule.name" = "ep" }   #   value "ep"; ``set`` patches the config,
    grid = { "rule.beta" = [0.01, 0.1] }   # ``grid`` adds axes inside this variant only
    [variants.rule.analytical]
    set = { "rule.name" = "analytical" }

    [report]
    metrics = ["test_loss"]        # default: every numeric metric that varies
    x = "tunable.fraction"         # x axis of the plots (default: first numeric axis)
    facet = ["task.name"]          # one panel per value of these axes
    logx = false                   # default: log scale when x spans >= 20x

Run order: variants axes, then grid axes, then seeds (the innermost).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import tomllib
import traceback as _traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, KirchnetError

__all__ = [
    "SweepError", "SweepSpecError", "RunFailed", "SweepSpec", "RunSpec", "SweepResult",
    "load_sweep", "expand", "run_sweep", "load_records", "build_table", "summarize",
    "write_report", "train_runner", "run_id_of", "register",
]

DEFAULT_RUNNER = "kirchnet.sweep:train_runner"
EVENT_TOPIC = "kirchnet-sweep"
_RESERVED_COLUMNS = ("run_id", "status", "wall_s", "error", "worker", "pid", "finished_at")


class SweepError(KirchnetError):
    """A sweep could not be set up or executed (cluster, output directory, ...)."""


class SweepSpecError(SweepError, ConfigError):
    """The sweep file is invalid (syntax, schema, or an expanded run config)."""


class RunFailed(RuntimeError):
    """Raised on a worker when a run raises; carries the original error as text.

    Always picklable (only strings inside), so the client can record the error even
    when the original exception class cannot be unpickled there.
    """

    def __init__(self, error_type: str, message: str, traceback: str = ""):
        super().__init__(error_type, message, traceback)
        self.error_type, self.message, self.traceback = error_type, message, traceback

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


# --------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepSection(_Strict):
    """The ``[sweep]`` table."""

    name: str = Field("sweep", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seeds: list[int] | None = None
    n_seeds: int | None = Field(None, ge=1)
    seed_key: str = Field("seed", min_length=1)
    retries: int = Field(0, ge=0, le=100)
    base_config: str | None = None
    runner: str | None = None
    save_artifacts: bool = False

    @model_validator(mode="after")
    def _seeds(self):
        if self.seeds is not None and self.n_seeds is not None:
            raise ValueError("give either 'seeds' (a list) or 'n_seeds', not both")
        if self.seeds is not None:
            if not self.seeds:
                raise ValueError("'seeds' must not be empty")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"'seeds' has duplicates: {self.seeds}")
        if self.runner is not None and ":" not in self.runner:
            raise ValueError(f"'runner' must look like 'package.module:function', got {self.runner!r}")
        return self

    def seed_values(self) -> list[int] | None:
        if self.seeds is not None:
            return list(self.seeds)
        if self.n_seeds is not None:
            return list(range(self.n_seeds))
        return None


def _check_axes(axes: dict[str, list]) -> dict[str, list]:
    for key, values in axes.items():
        _check_path(key)
        if not values:
            raise ValueError(f"axis {key!r} has no values")
        seen = []
        for v in values:
            if v in seen:
                raise ValueError(f"axis {key!r} repeats the value {v!r}")
            seen.append(v)
    return axes


def _check_path(key: str) -> None:
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"invalid config path {key!r} (use dotted names like 'rule.beta')")


class Variant(_Strict):
    """One labelled value of a variants axis: a config patch plus its own sub-grid."""

    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v):
        return _check_axes(v)

    @field_validator("set")
    @classmethod
    def _set(cls, v):
        for key in v:
            _check_path(key)
        return v


class ReportSection(_Strict):
    """The ``[report]`` table."""

    metrics: list[str] | None = None
    x: str | None = None
    logx: bool | None = None
    facet: list[str] = Field(default_factory=list)

    @field_validator("facet", mode="before")
    @classmethod
    def _facet(cls, v):
        return [v] if isinstance(v, str) else v


class SweepSpec(_Strict):
    """A validated sweep file. Build with :meth:`from_toml` or :meth:`from_dict`."""

    sweep: SweepSection = Field(default_factory=SweepSection)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: dict[str, dict[str, Variant]] = Field(default_factory=dict)
    report: ReportSection = Field(default_factory=ReportSection)
    #: directory relative paths (base_config) are resolved against; not part of the file
    _source_dir: str | None = PrivateAttr(None)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v):
        return _check_axes(v)

    @field_validator("variants")
    @classmethod
    def _variants(cls, v):
        for axis, labels in v.items():
            if not labels:
                raise ValueError(f"variants axis {axis!r} has no variants")
            if axis in ("seed", *_RESERVED_COLUMNS):
                raise ValueError(f"variants axis name {axis!r} is reserved")
        return v

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>",
                  source_dir: str | os.PathLike | None = None) -> SweepSpec:
        """Validate a parsed sweep file; raises :class:`SweepSpecError` with every problem."""
        if not isinstance(data, Mapping):
            raise SweepSpecError(f"sweep {source}: expected a table, got {type(data).__name__}")
        try:
            spec = cls.model_validate(dict(data))
        except ValidationError as exc:
            raise SweepSpecError(f"invalid sweep file {source}:\n{_format_validation(exc)}") from None
        spec._source_dir = None if source_dir is None else str(source_dir)
        _axis_paths(spec, source)  # overlapping axes are errors
        axes = [a for a in spec.axis_names() if a != "seed"]
        rep = spec.report
        for key, names in (("x", [rep.x] if rep.x else []), ("facet", rep.facet)):
            bad = [n for n in names if n not in axes]
            if bad:
                raise SweepSpecError(f"invalid sweep file {source}: [report] {key}: {bad} is not an "
                                     f"axis of the sweep (axes: {axes})")
        return spec

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> SweepSpec:
        """Read and validate a sweep file."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SweepSpecError(f"sweep file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SweepSpecError(f"sweep file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path), source_dir=path.resolve().parent)

    def base_config(self) -> dict[str, Any]:
        """The base run config: ``base_config`` file (if any) patched with ``[base]``."""
        cfg: dict[str, Any] = {}
        if self.sweep.base_config:
            p = Path(self.sweep.base_config)
            if not p.is_absolute() and self._source_dir:
                p = Path(self._source_dir) / p
            try:
                with p.open("rb") as fh:
                    cfg = tomllib.load(fh)
            except FileNotFoundError:
                raise SweepSpecError(f"[sweep] base_config: file not found: {p}") from None
            except tomllib.TOMLDecodeError as exc:
                raise SweepSpecError(f"[sweep] base_config {p} is not valid TOML: {exc}") from None
        return _apply_patch(cfg, self.base)

    def axis_names(self) -> list[str]:
        """Columns that identify a run in the table, in expansion order (seed last)."""
        names = list(self.variants)
        for variants in self.variants.values():
            for v in variants.values():
                names += [k for k in v.grid if k not in names]
        names += [k for k in self.grid if k not in names]
        if self.sweep.seed_values() is not None:
            names.append("seed")
        return names


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep TOML file (see the module docstring for the schema)."""
    return SweepSpec.from_toml(path)


def _format_validation(exc: ValidationError, limit: int = 20) -> str:
    lines = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}")
    if len(exc.errors()) > limit:
        lines.append(f"  ... ({len(exc.errors())} errors in all)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- expansion


def _leaf_paths(patch: Mapping[str, Any], prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in patch.items():
        path = prefix + tuple(key.split("."))
        if isinstance(value, Mapping) and value:
            out += _leaf_paths(value, path)
        else:
            out.append(path)
    return out


def _axis_paths(spec: SweepSpec, source: str) -> None:
    """Raise if two different axes (or an axis and the seed) set the same config entry."""
    owners: list[tuple[tuple, str]] = []
    for axis, variants in spec.variants.items():
        paths = set()
        for label, v in variants.items():
            paths |= set(_leaf_paths(v.set)) | {tuple(k.split(".")) for k in v.grid}
        owners += [(p, f"variants axis {axis!r}") for p in sorted(paths)]
    owners += [(tuple(k.split(".")), f"grid axis {k!r}") for k in spec.grid]
    if spec.sweep.seed_values() is not None:
        owners.append((tuple(spec.sweep.seed_key.split(".")), "the seeds"))
    for (p1, o1), (p2, o2) in itertools.combinations(owners, 2):
        if o1 != o2 and (p1[: len(p2)] == p2 or p2[: len(p1)] == p1):
            short = p1 if len(p1) <= len(p2) else p2
            raise SweepSpecError(
                f"invalid sweep file {source}: {o1} and {o2} both set '{'.'.join(short)}'")


def _apply_patch(config: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``config`` with ``patch`` applied.

    Keys are dotted paths (``"rule.beta"``); a table value is merged into an existing
    table, any other value replaces the entry.
    """
    out = copy.deepcopy(dict(config))
    for key, value in patch.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _apply_patch(node[leaf], value)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def run_id_of(config: Mapping[str, Any]) -> str:
    """Stable id of a run: ``sha256(canonical JSON of the config)[:16]``."""
    return hashlib.sha256(_canonical_json(config).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: its id, its axis values (``labels``) and its full config."""

    run_id: str
    labels: dict[str, Any]
    config: dict[str, Any]


def _default_validator() -> Callable[[dict], dict]:
    try:
        from .config import TrainConfig
    except ImportError as exc:  # pragma: no cover - only before kirchnet.config exists
        raise SweepError("kirchnet.config.TrainConfig is not available to validate runs; "
                         "pass validate=False or a validator") from exc

    def validate(cfg: dict) -> dict:
        # defaults left out: equal spellings share an id, and new schema fields with
        # defaults do not invalidate finished runs
        model = TrainConfig.from_dict(cfg, source="run config")
        return model.model_dump(mode="json", exclude_defaults=True)

    return validate


def expand(spec: SweepSpec, validate: Callable[[dict], dict] | bool | None = True) -> list[RunSpec]:
    """Expand ``spec`` into runs (variants x grid x seeds, seeds innermost).

    ``validate``: ``True`` validates and normalizes each config with
    :class:`kirchnet.config.TrainConfig` (the normalized form leaves out every value
    equal to its default, so that adding a schema field with a default keeps the ids
    of finished runs); a callable ``cfg -> normalized cfg`` does it
    instead (raise to reject); ``False``/``None`` keeps the merged dicts as they are.
    The run id is the hash of the normalized config, so equivalent spellings of the
    same run share one id (duplicates are kept once). Every invalid run is reported in
    one :class:`SweepSpecError`.
    """
    if validate is True:
        validate = _default_validator()
    base = spec.base_config()
    seeds = spec.sweep.seed_values()

    # variants axes: list of (label, patch, {subgrid axis: value}) per axis
    variant_axes = []
    for axis, variants in spec.variants.items():
        options = []
        for label, v in variants.items():
            keys = list(v.grid)
            for combo in itertools.product(*(v.grid[k] for k in keys)):
                sub = dict(zip(keys, combo))
                options.append((axis, label, {**v.set, **sub}, sub))
        variant_axes.append(options)
    grid_keys = list(spec.grid)
    grid_combos = list(itertools.product(*(spec.grid[k] for k in grid_keys)))
    seed_list: list[int | None] = seeds if seeds is not None else [None]

    runs: dict[str, RunSpec] = {}
    problems: list[str] = []
    duplicates: list[tuple[dict, dict]] = []
    for vcombo in itertools.product(*variant_axes):
        for gcombo in grid_combos:
            for seed in seed_list:
                cfg, labels = base, {}
                for axis, label, patch, sub in vcombo:
                    cfg = _apply_patch(cfg, patch)
                    labels[axis] = label
                    labels.update(sub)
                gpatch = dict(zip(grid_keys, gcombo))
                cfg = _apply_patch(cfg, gpatch)
                labels.update(gpatch)
                if seed is not None:
                    cfg = _apply_patch(cfg, {spec.sweep.seed_key: seed})
                    labels["seed"] = seed
                if validate:
                    try:
                        cfg = validate(cfg)
                    except Exception as exc:  # noqa: BLE001 - every invalid run is reported
                        problems.append(f"run {_label_text(labels) or '(base)'}:\n"
                                        + _indent(_error_text(exc)))
                        continue
                try:
                    rid = run_id_of(cfg)
                except (TypeError, ValueError) as exc:
                    raise SweepSpecError(f"run config is not JSON-serializable: {exc}") from None
                if rid in runs:
                    duplicates.append((labels, runs[rid].labels))
                else:
                    runs[rid] = RunSpec(rid, labels, cfg)
    if duplicates:
        first, kept = duplicates[0]
        logging.getLogger(__name__).warning(
            "%d grid point(s) give the same run config as another one and run once, e.g. "
            "%s is the same run as %s", len(duplicates), _label_text(first), _label_text(kept))
    if problems:
        shown = "\n".join(problems[:5])
        more = f"\n... {len(problems) - 5} more invalid runs" if len(problems) > 5 else ""
        raise SweepSpecError(f"{len(problems)} run config(s) of sweep '{spec.sweep.name}' "
                             f"are invalid:\n{shown}{more}")
    return list(runs.values())


def _label_text(labels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items())


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return _format_validation(exc).replace("  ", "", 1)
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- runners


def train_runner(config: dict, out_dir: str | None = None) -> dict:
    """The default runner: one call of :func:`kirchnet.experiments.run.run_training`."""
    from .config import TrainConfig
    from .experiments.run import run_training

    cfg = TrainConfig.from_dict(config, source="run config")
    return run_training(cfg, out_dir=None if out_dir is None else Path(out_dir), progress=False)


def _resolve_runner(runner: str | Callable) -> Callable:
    if callable(runner):
        return runner
    module, _, attr = runner.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SweepError(f"cannot import runner {runner!r}: {exc}") from exc
    if not callable(obj):
        raise SweepError(f"runner {runner!r} is not callable")
    return obj


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars -> Python numbers, NaN/inf -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _emit(event: dict) -> None:
    with contextlib.suppress(Exception):
        from distributed import get_worker

        get_worker().log_event(EVENT_TOPIC, event)


def _execute_run(runner: str | Callable, run_id: str, config: dict,
                 artifacts: str | None) -> dict:
    """Worker side of one run: call the runner, return a result record or raise RunFailed."""
    started = time.time()
    _emit({"event": "start", "run_id": run_id, "pid": os.getpid(), "t": started})
    tmp = None
    try:
        fn = _resolve_runner(runner)
        if artifacts is not None:
            tmp = Path(artifacts).with_name(f".tmp-{Path(artifacts).name}-{uuid.uuid4().hex[:8]}")
            tmp.parent.mkdir(parents=True, exist_ok=True)
        metrics = fn(config, None if tmp is None else str(tmp))
        if not isinstance(metrics, Mapping):
            raise TypeError(f"the runner must return a dict of metrics, got {type(metrics).__name__}")
        metrics = _flatten(_jsonable(dict(metrics)))
        if tmp is not None and tmp.exists():
            target = Path(artifacts)
            if target.exists():  # a duplicate completion (its first result was lost)
                shutil.rmtree(target)
            os.replace(tmp, target)
    except Exception as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _emit({"event": "error", "run_id": run_id, "pid": os.getpid()})
        raise RunFailed(type(exc).__name__, str(exc), _traceback.format_exc()) from None
    finished = time.time()
    _emit({"event": "end", "run_id": run_id, "pid": os.getpid()})
    return {"status": "ok", "metrics": metrics, "wall_s": finished - started,
            "pid": os.getpid(), "worker": _worker_address(), "host": socket.gethostname(),
            "started_at": _iso(started), "finished_at": _iso(finished)}


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # noqa: BLE001 - not on a worker
        return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- persistence


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def _atomic_write_json(path: Path, obj: Any) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def load_records(out_dir: str | os.PathLike, run_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """Read ``OUT/runs/*.json`` (only ``run_ids`` if given); unreadable files are skipped."""
    runs = Path(out_dir) / "runs"
    records = {}
    paths = (runs / f"{r}.json" for r in run_ids) if run_ids is not None else runs.glob("*.json")
    for p in paths:
        try:
            rec = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("run_id") == p.stem:
            records[p.stem] = rec
    return records


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
    cols = ["run_id", "status", *axes]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*cols, "wall_s", "error", "worker", "pid", "finished_at"])
    return df


def _write_tables(out: Path, df) -> list[Path]:
    paths = [out / "results.csv"]
    _atomic_write_text(paths[0], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return paths
    import io

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
    _atomic_write_bytes(paths[1], buf.getvalue())
    return paths


# --------------------------------------------------------------------------- report


def _metric_columns(df, axes: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    import pandas as pd

    skip = {"run_id", "status", "error", "worker", "pid", "finished_at", *axes}
    if wanted:
        missing = [m for m in wanted if m not in df.columns]
        if missing and not df.empty:
            logging.getLogger(__name__).warning("report metrics not in the results: %s", missing)
        return [m for m in wanted if m in df.columns]
    cols = []
    for c in df.columns:
        if c in skip or c == "wall_s":
            continue
        num = pd.to_numeric(df[c], errors="coerce")
        if num.notna().any() and num.dropna().nunique() > 1:
            cols.append(c)
    return cols


def summarize(df, axes: Sequence[str], metrics: Sequence[str]):
    """Mean, sample std (ddof=1) and count across seeds, per combination of the other axes."""
    import pandas as pd

    ok = df[df["status"] == "ok"] if "status" in df else df
    group = [a for a in axes if a != "seed" and a in ok.columns]
    if ok.empty or not metrics:
        return pd.DataFrame(columns=[*group, "n"])
    num = ok[[*group, *metrics]].copy()
    for m in metrics:
        num[m] = pd.to_numeric(num[m], errors="coerce")
    if group:
        g = num.groupby(group, dropna=False, sort=False)
        agg = g[list(metrics)].agg(["mean", "std"])
        agg.columns = [f"{m}_{s}" for m, s in agg.columns]
        agg.insert(0, "n", g.size())
        return agg.reset_index()
    row = {"n": len(num)}
    for m in metrics:
        row[f"{m}_mean"], row[f"{m}_std"] = num[m].mean(), num[m].std()
    return pd.DataFrame([row])


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _plot_metric(summary, metric: str, x: str | None, hue: Sequence[str], facet: Sequence[str],
                 logx: bool | None, path: Path) -> None:
    """One PNG: mean +- std of ``metric`` vs ``x``, a line per ``hue`` combination,
    a panel per ``facet`` combination."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    panels = (list(summary.groupby(list(facet), dropna=False, sort=False)) if facet
              else [((), summary)])
    ncols = min(len(panels), math.ceil(math.sqrt(len(panels))))
    nrows = -(-len(panels) // ncols)
    width = 4.6 * ncols + 2.2
    fig, axs = plt.subplots(nrows, ncols, figsize=(width, 3.4 * nrows + 0.6), squeeze=False)
    fig.subplots_adjust(left=0.8 / width, right=1 - 2.4 / width, bottom=0.55 / (3.4 * nrows + 0.6),
                        top=1 - 0.75 / (3.4 * nrows + 0.6), wspace=0.3, hspace=0.45)
    xs_all = pd.to_numeric(summary[x], errors="coerce") if x else None
    numeric_x = xs_all is not None and xs_all.notna().any()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    hue_keys = (list(dict.fromkeys(tuple(_fmt(v) for v in row)
                                   for row in summary[list(hue)].itertuples(index=False)))
                if hue else [()])
    pos = xs_all[xs_all > 0] if numeric_x else ()
    auto_logx = numeric_x and len(pos) == xs_all.notna().sum() and pos.max() / pos.min() >= 20
    use_logx = numeric_x and (logx if logx is not None else auto_logx)
    if numeric_x:  # dodge the lines of different hues a little along x so they stay visible
        xu = np.unique(xs_all.dropna().to_numpy(float))
        span = (np.log(xu.max() / xu.min()) if use_logx else xu.max() - xu.min()) if xu.size > 1 else 0
        dodge = 0.012 * span
    for ax, (fkey, panel) in zip(axs.flat, panels):
        fkey = fkey if isinstance(fkey, tuple) else (fkey,)
        vals = panel[f"{metric}_mean"].to_numpy(float)
        finite = vals[np.isfinite(vals)]
        logy = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() >= 30
        groups = panel.groupby(list(hue), dropna=False, sort=False) if hue else [((), panel)]
        for key, sub in groups:
            key = key if isinstance(key, tuple) else (key,)
            idx = hue_keys.index(tuple(_fmt(k) for k in key)) if hue else 0
            color = colors[idx % len(colors)] if hue else None
            shift = (idx - (len(hue_keys) - 1) / 2) * dodge if numeric_x else 0.0
            label = ", ".join(f"{h}={_fmt(k)}" for h, k in zip(hue, key)) or metric
            m = sub[f"{metric}_mean"].to_numpy(float)
            s = sub[f"{metric}_std"].fillna(0.0).to_numpy(float)
            err = np.vstack([np.minimum(s, 0.9 * m), s]) if logy else s  # log axis: clip below
            if x is None:
                ax.errorbar([label], m, yerr=err, fmt="o", capsize=4, color=color)
                continue
            if numeric_x:
                xv = pd.to_numeric(sub[x], errors="coerce").to_numpy(float)
                if np.isnan(xv).all():  # this group does not use the x axis: a reference band
                    ax.axhline(m.mean(), ls="--", lw=1, color=color, label=f"{label} (no {x})")
                    ax.axhspan(m.mean() - s.mean(), m.mean() + s.mean(), color=color, alpha=0.12)
                    continue
                order = np.argsort(xv)
                xd = xv[order] * np.exp(shift) if use_logx else xv[order] + shift
                ax.errorbar(xd, m[order], yerr=err[..., order], marker="o", ms=4, capsize=3,
                            label=label, color=color)
            else:
                ax.errorbar(sub[x].astype(str).to_numpy(), m, yerr=err, marker="o", capsize=3,
                            label=label, color=color)
        if x is not None:
            ax.set_xlabel(x)
            if use_logx:
                ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_ylabel(metric)
        ax.set_title(", ".join(f"{f}={_fmt(k)}" for f, k in zip(facet, fkey)) or metric, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axs.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axs.flat[0].get_legend_handles_labels()
    for ax in list(axs.flat)[1:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles and (hue or x is not None):
        fig.legend(handles, labels, loc="upper right", bbox_to_anchor=(1.0, 1 - 0.6 / fig.get_figheight()),
                   fontsize=7, frameon=False)
    fig.suptitle(f"{metric}: mean ± std across seeds")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    _atomic_write_bytes(path, buf.getvalue())


def _choose_x(spec: SweepSpec, summary, group: Sequence[str]) -> str | None:
    import pandas as pd

    if spec.report.x is not None:
        return spec.report.x
    varying = [a for a in group if summary[a].nunique(dropna=True) > 1]
    for a in varying:
        if pd.to_numeric(summary[a], errors="coerce").notna().sum() > 1:
            return a
    return varying[0] if varying else None


def write_report(out_dir: str | os.PathLike, spec: SweepSpec, runs: Sequence[RunSpec],
                 records: Mapping[str, dict], info: Mapping[str, Any] | None = None) -> Path:
    """Write ``results.csv/.parquet``, ``summary.csv``, ``figures/*.png`` and ``report.md``."""
    out = Path(out_dir)
    axes = spec.axis_names()
    recs = [records[r.run_id] for r in runs if r.run_id in records]
    df = build_table(recs, axes)
    _write_tables(out, df)
    metrics = _metric_columns(df, axes, spec.report.metrics)
    summary = summarize(df, axes, metrics)
    _atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    group = [a for a in axes if a != "seed"]
    lines = [f"# Sweep report: {spec.sweep.name}", ""]
    n_ok = sum(r.get("status") == "ok" for r in recs)
    n_failed = sum(r.get("status") == "failed" for r in recs)
    lines += [f"- runs: {len(runs)} in the grid, {n_ok} ok, {n_failed} failed, "
              f"{len(runs) - n_ok - n_failed} without result",
              f"- axes: " + (", ".join(f"`{a}` ({len(set(map(_canonical_json, [r.labels.get(a) for r in runs])))})"
                                       for a in axes) or "none")]
    walls = [r["wall_s"] for r in recs if isinstance(r.get("wall_s"), (int, float))]
    if walls:
        lines.append(f"- compute: {sum(walls):.1f} s summed over {len(walls)} runs "
                     f"({sum(walls) / len(walls):.2f} s per run)")
    for k, v in (info or {}).items():
        lines.append(f"- {k}: {v}")
    lines += [f"- generated: {_iso(time.time())}", "",
              "Files: `results.csv` (one row per run), `summary.csv` (mean and sample std across "
              "seeds), `runs/<run_id>.json` (each run's config, metrics or error).", ""]
    if metrics and not summary.empty:
        lines += ["## Results (mean ± std across seeds; n = finished seeds)", ""]
        header = [*group, "n", *metrics]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for _, row in summary.iterrows():
            cells = [_fmt(row[a]) for a in group] + [str(int(row["n"]))]
            cells += [f"{_fmt(row[f'{m}_mean'])} ± {_fmt(row[f'{m}_std'])}" for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        x = _choose_x(spec, summary, group)
        facet = [f for f in spec.report.facet if f != x]
        hue = [a for a in group if a != x and a not in facet and summary[a].nunique(dropna=False) > 1]
        figs = out / "figures"
        lines += ["## Figures", ""]
        for m in metrics[:8]:
            if summary[f"{m}_mean"].notna().any():
                name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in m)
                _plot_metric(summary, m, x, hue, facet, spec.report.logx, figs / f"{name}.png")
                lines += [f"![{m}](figures/{name}.png)", ""]
    failed = [r for r in recs if r.get("status") == "failed"]
    if failed:
        lines += ["## Failed runs", "", "| run_id | axes | error |", "|---|---|---|"]
        for r in failed:
            err = (r.get("error") or "").splitlines()[0][:200].replace("|", "\\|")
            lines.append(f"| `{r['run_id']}` | {_label_text(r.get('labels', {}))} | {err} |")
        lines.append("")
    path = out / "report.md"
    _atomic_write_text(path, "\n".join(lines))
    return path


# --------------------------------------------------------------------------- execution


@dataclass
class SweepResult:
    """What :func:`run_sweep` did. ``records``: every run of the grid that has a result."""

    out_dir: Path
    n_runs: int
    n_skipped: int
    n_submitted: int
    n_ok: int
    n_failed: int
    wall_s: float
    interrupted: bool
    report: Path | None
    records: dict[str, dict] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return self.n_runs - sum(r.get("status") in ("ok", "failed") for r in self.records.values())


class _Tracker:
    """Counts for the progress display; fed by worker events (any thread) and results."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started: dict[str, int] = {}  # start events per run (> 1: restarted)
        self.last: dict[str, str] = {}  # last worker event per run: start, end or error
        self.done: set[str] = set()
        self.ok = self.failed = 0
        self.callback: Callable[[], None] | None = None

    def on_event(self, event) -> None:
        _, msg = event
        if not isinstance(msg, dict) or "run_id" not in msg:
            return
        with self.lock:
            rid = msg["run_id"]
            self.last[rid] = msg.get("event")
            if msg.get("event") == "start":
                self.started[rid] = self.started.get(rid, 0) + 1
        if self.callback:
            self.callback()

    def finish(self, run_id: str, ok: bool) -> None:
        with self.lock:
            self.done.add(run_id)
            if ok:
                self.ok += 1
            else:
                self.failed += 1

    @property
    def running(self) -> int:
        with self.lock:
            return sum(1 for rid, ev in self.last.items() if ev == "start" and rid not in self.done)

    @property
    def restarted(self) -> int:
        with self.lock:
            return sum(1 for c in self.started.values() if c > 1)


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None, client, n_tasks: int):
    if client is not None:
        yield client, f"{client.scheduler.address} (given client)"
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SweepError("sweeps need Dask: pip install 'kirchnet[dist]' "
                         "(dask[distributed], pandas, pyarrow)") from exc

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from exc
        try:
            yield c, scheduler
        finally:
            c.close()
        return
    n = workers or max(1, min(os.cpu_count() or 1, n_tasks))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        with Client(cluster) as c:
            yield c, f"LocalCluster, {n} worker process(es)"
    finally:
        cluster.close()


def _make_progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), transient=False)


def run_sweep(spec: SweepSpec | str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
              scheduler: str | None = None, workers: int | None = None, client=None,
              runner: str | Callable | None = None, validate: Callable | bool | None = None,
              retries: int | None = None, max_runs: int | None = None, rerun_failed: bool = True,
              progress: bool = True, report: bool = True, table_interval_s: float = 2.0,
              on_result: Callable[[dict], bool | None] | None = None) -> SweepResult:
    """Execute every run of the sweep that has no result yet; persist, tabulate, report.

    ``out_dir`` defaults to ``results/sweep-<name>``; rerunning with the same directory
    resumes (finished runs are skipped; failed ones are executed again unless
    ``rerun_failed=False``). Cluster: ``client`` (an existing ``distributed.Client``),
    else ``scheduler`` (``tcp://HOST:PORT``), else a ``LocalCluster`` of ``workers``
    single-threaded processes (default: one per core). ``runner`` (callable or
    ``"module:function"``, signature ``runner(config: dict, out_dir: str | None) ->
    dict``) overrides the file's; ``validate`` defaults to TrainConfig validation for
    the default runner and to none for a custom one. ``max_runs`` executes at most
    that many pending runs. ``on_result(record)`` is called after each run is
    persisted; returning ``False`` stops the sweep (pending runs are cancelled). A
    ``KeyboardInterrupt`` also stops it cleanly (tables and report are still written)
    and is re-raised.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    runner = runner if runner is not None else (spec.sweep.runner or DEFAULT_RUNNER)
    if validate is None:
        validate = runner == DEFAULT_RUNNER
    retries = spec.sweep.retries if retries is None else int(retries)
    if retries < 0:
        raise SweepSpecError(f"retries must be >= 0, got {retries}")
    if workers is not None and workers < 1:
        raise SweepSpecError(f"workers must be >= 1, got {workers}")
    if max_runs is not None and max_runs < 0:
        raise SweepSpecError(f"max_runs must be >= 0, got {max_runs}")
    if isinstance(runner, str) and scheduler is None and client is None:
        _resolve_runner(runner)  # fail fast (local workers share this environment)
    runs = expand(spec, validate=validate)
    out = Path(out_dir) if out_dir is not None else Path("results") / f"sweep-{spec.sweep.name}"
    if out.exists() and not out.is_dir():
        raise SweepError(f"output path {out} exists and is not a directory")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _atomic_write_json(out / "sweep.json", {
        "name": spec.sweep.name, "axes": spec.axis_names(),
        "spec": spec.model_dump(mode="json"),
        "runs": [{"run_id": r.run_id, "labels": r.labels} for r in runs]})

    records = load_records(out, [r.run_id for r in runs])
    done_status = ("ok",) if rerun_failed else ("ok", "failed")
    todo = [r for r in runs if records.get(r.run_id, {}).get("status") not in done_status]
    n_skipped = len(runs) - len(todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    t0 = time.perf_counter()
    tracker = _Tracker()
    interrupted = False
    info: dict[str, Any] = {}

    if todo:
        with _client(scheduler, workers, client, len(todo)) as (c, where), _make_progress(progress) as bar:
            info["cluster"] = where
            task = None
            if bar is not None:
                task = bar.add_task(spec.sweep.name, total=len(todo), counts="")

                def refresh():
                    bar.update(task, counts=f"ok {tracker.ok} · running {tracker.running} · "
                                            f"failed {tracker.failed} · skipped {n_skipped}")

                tracker.callback = refresh
                refresh()
            with contextlib.suppress(Exception):
                c.subscribe_topic(EVENT_TOPIC, tracker.on_event)
            by_key = {}
            tag = uuid.uuid4().hex[:8]
            for r in todo:
                art = str((out / "runs" / r.run_id).resolve()) if spec.sweep.save_artifacts else None
                fut = c.submit(_execute_run, runner, r.run_id, r.config, art,
                               key=f"kirchnet-run-{r.run_id}-{tag}", pure=False, retries=retries)
                by_key[fut.key] = (fut, r)
            last_table = time.perf_counter()
            from distributed import as_completed

            futures = [f for f, _ in by_key.values()]
            clean = False
            try:
                for fut in as_completed(futures):
                    _, r = by_key[fut.key]
                    rec = _collect(fut, r)
                    if rec is None:  # cancelled or lost connection: no result, resume reruns it
                        continue
                    _atomic_write_json(out / "runs" / f"{r.run_id}.json", rec)
                    records[r.run_id] = rec
                    tracker.finish(r.run_id, rec["status"] == "ok")
                    if bar is not None:
                        bar.advance(task)
                        tracker.callback()
                    fut.release()
                    if time.perf_counter() - last_table >= table_interval_s:
                        _write_tables(out, build_table([records[x.run_id] for x in runs
                                                        if x.run_id in records], spec.axis_names()))
                        last_table = time.perf_counter()
                    if on_result is not None and on_result(rec) is False:
                        interrupted = True
                        break
                clean = True
            finally:
                if not clean:  # KeyboardInterrupt or a lost scheduler: stop what is left
                    interrupted = True
                if interrupted:
                    with contextlib.suppress(Exception):
                        c.cancel([f for f in futures if not f.done()])
                with contextlib.suppress(Exception):
                    c.unsubscribe_topic(EVENT_TOPIC)
                wall = time.perf_counter() - t0
                info.update(_invocation_info(len(todo), tracker, n_skipped, wall, interrupted))
                try:
                    _finish_outputs(out, spec, runs, records, info, report)
                except Exception:  # an error in flight matters more than the report
                    if clean:
                        raise
                    logging.getLogger(__name__).exception("could not write the sweep report")
    else:
        info.update(_invocation_info(0, tracker, n_skipped, 0.0, False))
        _finish_outputs(out, spec, runs, records, info, report)
    wall = time.perf_counter() - t0
    in_grid = {r.run_id: records[r.run_id] for r in runs if r.run_id in records}
    return SweepResult(out_dir=out, n_runs=len(runs), n_skipped=n_skipped, n_submitted=len(todo),
                       n_ok=tracker.ok, n_failed=tracker.failed, wall_s=wall,
                       interrupted=interrupted, report=(out / "report.md") if report else None,
                       records=in_grid)


def _invocation_info(n_submitted, tracker, n_skipped, wall, interrupted) -> dict:
    text = (f"{n_submitted} submitted, {tracker.ok} ok, {tracker.failed} failed, "
            f"{n_skipped} already done, wall time {wall:.1f} s")
    if tracker.restarted:
        text += f", {tracker.restarted} restarted after a worker loss"
    if interrupted:
        text += " (interrupted: rerun the same command to resume)"
    return {"last invocation": text}


def _finish_outputs(out, spec, runs, records, info, report: bool) -> None:
    if report:
        write_report(out, spec, runs, records, info)
    else:
        _write_tables(out, build_table([records[r.run_id] for r in runs if r.run_id in records],
                                       spec.axis_names()))


def _collect(fut, run: RunSpec) -> dict | None:
    """Turn a finished future into a run record (None if it was cancelled)."""
    from . import __version__

    base = {"run_id": run.run_id, "labels": run.labels, "config": run.config,
            "kirchnet_version": __version__}
    status = fut.status
    if status == "finished":
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be deserialized
            return {**base, "status": "failed", "error": _error_text(exc), "traceback": "",
                    "metrics": {}}
        return {**base, **res}
    if status == "cancelled":
        return None
    try:
        exc = fut.exception()
    except Exception as e:  # noqa: BLE001 - cancelled while we asked
        if type(e).__name__ in ("CancelledError", "FutureCancelledError"):
            return None
        exc = e
    if exc is None:
        return None
    if isinstance(exc, RunFailed):
        error, tb = str(exc), exc.traceback
    else:  # KilledWorker (the run killed its worker too often) or a transport error
        error, tb = _error_text(exc), ""
    return {**base, "status": "failed", "error": error, "traceback": tb, "metrics": {},
            "finished_at": _iso(time.time())}


# --------------------------------------------------------------------------- CLI


def register(app) -> None:
    """Add the ``sweep`` command to a typer app: ``kirchnet sweep SWEEP.toml [options]``."""
    import typer

    @app.command("sweep")
    def sweep(
        sweep_file: Path = typer.Argument(..., help="sweep TOML file (grid of training runs)"),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler, tcp://HOST:PORT; "
                                             "default: a local cluster of processes"),
        workers: int | None = typer.Option(None, "--workers", min=1, help="local worker processes "
                                           "(default: one per core)"),
        out: Path | None = typer.Option(None, "--out", help="output directory (default: "
                                        "results/sweep-<name>); rerun with the same one to resume"),
        max_runs: int | None = typer.Option(None, "--max-runs", min=0, help="execute at most N pending runs"),
        retries: int | None = typer.Option(None, "--retries", min=0, help="re-executions of a run that "
                                           "raised (default: the file's, 0)"),
        skip_failed: bool = typer.Option(False, "--skip-failed", help="do not re-execute runs recorded "
                                         "as failed"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and what is done; run nothing"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Run a sweep of training runs on Dask, resumable, with a results table and report."""
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=True)
        try:
            spec = load_sweep(sweep_file)
            if dry_run:
                _dry_run(spec, out, console, skip_failed)
                return
            res = run_sweep(spec, out, scheduler=scheduler, workers=workers, max_runs=max_runs,
                            retries=retries, rerun_failed=not skip_failed, progress=progress)
        except SweepError as exc:  # exit status 2: invalid sweep file, 1: anything else
            console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, SweepSpecError) else 1) from None
        except KeyboardInterrupt:
            console.print("interrupted; finished runs are saved: rerun the same command to resume")
            raise typer.Exit(130) from None
        console.print(f"sweep '{spec.sweep.name}': {res.n_runs} runs, {res.n_skipped} already done, "
                      f"{res.n_ok} ok, {res.n_failed} failed in {res.wall_s:.1f} s -> {res.out_dir}",
                      highlight=False, soft_wrap=True)
        if res.report is not None:
            console.print(f"report: {res.report}", highlight=False, soft_wrap=True)
        if res.n_failed:
            raise typer.Exit(1)


def _dry_run(spec: SweepSpec, out, console, skip_failed: bool) -> None:
    runner = spec.sweep.runner or DEFAULT_RUNNER
    runs = expand(spec, validate=runner == DEFAULT_RUNNER)
    out = Path(out) if out is not None else Path("results") / f"sweep-{spec.sweep.name}"
    records = load_records(out, [r.run_id for r in runs]) if out.exists() else {}
    for r in runs:
        status = records.get(r.run_id, {}).get("status", "pending")
        console.print(f"{r.run_id}  {status:8s} {_label_text(r.labels)}", highlight=False, soft_wrap=True)
    done = sum(records.get(r.run_id, {}).get("status") == "ok" for r in runs)
    console.print(f"{len(runs)} runs, {done} done, output {out}", highlight=False, soft_wrap=True)
