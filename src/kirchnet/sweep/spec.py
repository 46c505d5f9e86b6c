"""Sweep files: the schema (pydantic), validation and expansion into runs with stable ids."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, KirchnetError

__all__ = ["SweepError", "SweepSpecError", "SweepSpec", "RunSpec", "load_sweep", "expand",
           "run_id_of"]

_RESERVED_COLUMNS = ("run_id", "status", "wall_s", "error", "worker", "pid", "finished_at")


class SweepError(KirchnetError):
    """A sweep could not be set up or executed (cluster, output directory, ...)."""


class SweepSpecError(SweepError, ConfigError):
    """The sweep file is invalid (syntax, schema, or an expanded run config)."""


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


#: grid axes: dotted config path -> its values (non-empty, no repeats)
_Axes = Annotated[dict[str, list[Any]], AfterValidator(_check_axes)]


class Variant(_Strict):
    """One labelled value of a variants axis: a config patch plus its own sub-grid."""

    set: dict[str, Any] = Field(default_factory=dict)
    grid: _Axes = Field(default_factory=dict)

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
    grid: _Axes = Field(default_factory=dict)
    variants: dict[str, dict[str, Variant]] = Field(default_factory=dict)
    report: ReportSection = Field(default_factory=ReportSection)
    #: directory relative paths (base_config) are resolved against; not part of the file
    _source_dir: str | None = PrivateAttr(None)
    #: the sweep file's name without suffix (default output names); not part of the file
    _source_stem: str | None = PrivateAttr(None)

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
        data = _read_toml(path, "sweep file")
        spec = cls.from_dict(data, source=str(path), source_dir=path.resolve().parent)
        spec._source_stem = path.stem
        return spec

    def default_out_prefix(self) -> str:
        """``sweep-<file name>`` (or ``sweep-<name>`` without a file): the prefix of the
        default, timestamped output directory."""
        return f"sweep-{self._source_stem or self.sweep.name}"

    def base_config(self) -> dict[str, Any]:
        """The base run config: ``base_config`` file (if any) patched with ``[base]``."""
        cfg: dict[str, Any] = {}
        if self.sweep.base_config:
            p = Path(self.sweep.base_config)
            if not p.is_absolute() and self._source_dir:
                p = Path(self._source_dir) / p
            cfg = _read_toml(p, "[sweep] base_config")
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


def _read_toml(path: Path, what: str) -> dict:
    """Parse a TOML file; every problem (missing, a directory, not UTF-8, unreadable, bad
    TOML) is a :class:`SweepSpecError` naming the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SweepSpecError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise SweepSpecError(f"{what} {path} is a directory; give the path of a TOML file") from None
    except UnicodeDecodeError as exc:
        raise SweepSpecError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                             f"save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"{what} {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SweepSpecError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


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
        for v in variants.values():
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
        from ..config import TrainConfig
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
