"""The training configuration schema (pydantic), loadable from TOML or a dict.

A config file looks like (every table and key optional except ``task.name``)::

    name = "lattice-iris"      # free text, used in reports
    seed = 0                   # seeds network, task split, initial conductances, shuffling
    epochs = 40                # defaults: kirchnet.defaults (the same in Python and TOML)
    batch_size = 32
    parametrization = "conductance"   # or "resistance" (step on r with dC/dr = -g^2 dC/dg)
    checkpoint_every = 5       # kirchnet train: checkpoint for --resume (default epochs // 20; 0: none)

    [network]                  # kind: lattice | delaunay | random | regular | layered | complete | drn
    kind = "lattice"
    rows = 8
    cols = 8
    g_init = [0.5, 2.0]        # initial conductances ~ U(low, high)

    [task]                     # name: teacher_student | iris | digits | allostery | xor | moons | circles | mnist5k | mnist
    name = "iris"

    [rule]                     # name: analytical | ep | cl | acl | insitu | gep | finite_difference
    name = "ep"
    beta = 0.1
    variant = "centered"

    [optimizer]                # name: sgd | momentum | adam
    name = "adam"
    lr = 0.05                  # the learning rate is called lr everywhere

    [constraints]              # bounds, levels, update noise
    g_min = 0.001

    [tunable]                  # which edges learn: mode all | random | inputs | outputs
    fraction = 1.0

    [device]                   # optional: train by programming pulses (DeviceConfig)
    preset = "rram"            # rram | pcm | digital_potentiometer | ideal
    mode = "pulses"            # or "in_situ" (no optimizer; pulse amplitude from dC/dr_e)
    params = {c2c = 0.1}       # preset overrides

A deep resistive network (:mod:`kirchnet.drn`): ``kind = "drn"`` with ``hidden = [128]``
(hidden layer sizes; the input and output sizes come from the task), ``gain`` (inputs
``gain (x, -x)``), ``diode_split``, ``diode_bias`` and ``bias`` (the bias-source voltage, 0:
none); the task then gives raw features (``signed = false``, ``bias = false``) and the
initial conductances are the DRN's ``W_l ~ U(0, 2 / sqrt(n_l))`` (``g_init`` is not used).

Unknown keys, wrong types and impossible values raise :class:`ConfigError` whose
message names the offending key (``network.rows: ...``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import defaults as D
from .errors import ConfigError

__all__ = ["ConfigError", "NetworkConfig", "TaskConfig", "RuleConfig", "OptimizerConfig",
           "ConstraintsConfig", "TunableConfig", "DeviceConfig", "TrainConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class NetworkConfig(_Model):
    """Topology (see :mod:`kirchnet.topologies`) and initial conductances."""

    kind: Literal["lattice", "delaunay", "random", "regular", "layered", "complete", "drn"] = "lattice"
    rows: int = Field(8, ge=1, description="lattice rows")
    cols: int = Field(8, ge=1, description="lattice columns")
    diagonals: bool = False
    n: int | None = Field(None, ge=2, description="nodes (delaunay, random, regular, complete)")
    mean_degree: float | None = Field(None, gt=0)
    m: int | None = Field(None, ge=1, description="edges (random)")
    degree: int | None = Field(None, ge=1, description="degree (regular)")
    sizes: list[int] | None = Field(None, description="layer sizes (layered)")
    seed: int | None = Field(None, ge=0, description="topology seed (default: the run seed)")
    g_init: tuple[float, float] = Field((0.5, 2.0), description="initial g ~ U(low, high)")
    backend: Literal["auto", "dense", "cholmod", "splu", "pcg", "pcg-amg"] = "auto"
    hidden: list[int] | None = Field(None, description="drn: hidden layer sizes, e.g. [128]")
    gain: float = Field(1.0, gt=0, description="drn: input gain, inputs gain * (x, -x)")
    diode_split: float = Field(0.5, ge=0, le=1, description="drn: fraction of hidden nodes bounded below")
    diode_bias: float = Field(0.0, description="drn: diode bound voltage")
    bias: float = Field(0.0, description="drn: bias-source voltage (+bias, -bias; 0: none)")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "drn" and (not self.hidden or min(self.hidden) < 1):
            raise ValueError("network kind 'drn' needs hidden = [at least one positive hidden layer size]")
        lo, hi = self.g_init
        if not (0 < lo <= hi):
            raise ValueError(f"g_init must satisfy 0 < low <= high, got {list(self.g_init)}")
        if self.kind in ("delaunay", "random", "regular", "complete") and self.n is None:
            raise ValueError(f"network kind {self.kind!r} needs n (number of nodes)")
        if self.kind == "delaunay" and self.n is not None and self.n < 3:
            raise ValueError("a Delaunay network needs n >= 3")
        if self.kind == "random" and self.m is None and self.mean_degree is None:
            raise ValueError("network kind 'random' needs mean_degree or m")
        if self.kind == "random" and self.m is not None and self.mean_degree is not None:
            raise ValueError("network kind 'random': give only one of mean_degree and m")
        if self.kind == "regular" and self.degree is None:
            raise ValueError("network kind 'regular' needs degree")
        if self.kind == "random" and self.n is not None:
            m = self.m if self.m is not None else int(round(self.n * self.mean_degree / 2))
            key = "m" if self.m is not None else f"mean_degree (m = n * mean_degree / 2 = {m})"
            if not self.n - 1 <= m <= self.n * (self.n - 1) // 2:
                raise ValueError(f"network.{key}: a connected simple graph on n = {self.n} nodes has "
                                 f"between n - 1 = {self.n - 1} and n(n-1)/2 = {self.n * (self.n - 1) // 2} "
                                 f"edges, got {m}")
        if self.kind == "regular" and self.n is not None and self.degree is not None:
            if self.degree >= self.n or (self.n * self.degree) % 2:
                raise ValueError(f"network.degree: no {self.degree}-regular graph on n = {self.n} nodes "
                                 f"(need degree < n and n * degree even)")
        if self.kind == "layered":
            if not self.sizes or len(self.sizes) < 2 or min(self.sizes) < 1:
                raise ValueError("network kind 'layered' needs sizes = [at least two positive ints]")
        if self.kind == "lattice" and self.rows * self.cols < 2:
            raise ValueError("a lattice needs at least 2 nodes")
        return self


#: the tasks of :mod:`kirchnet.tasks.nonlinear`
NONLINEAR = ("xor", "moons", "circles", "mnist5k", "mnist")


class TaskConfig(_Model):
    """The task (see :mod:`kirchnet.tasks`); keys that do not apply to it are ignored."""

    name: Literal["teacher_student", "iris", "digits", "allostery", "xor", "moons", "circles", "mnist5k",
                  "mnist"]
    n_inputs: int = Field(3, ge=1, description="teacher_student inputs")
    n_outputs: int = Field(2, ge=1, description="teacher_student outputs")
    n_train: int = Field(64, ge=1, description="teacher_student training samples")
    n_test: int = Field(64, ge=0, description="teacher_student test samples")
    noise: float = Field(0.0, ge=0, description="teacher_student target noise std")
    test_fraction: float = Field(0.3, ge=0, lt=1)
    max_train: int | None = Field(None, ge=1, description="digits, mnist: subsample the training set")
    n_samples: int = Field(1000, ge=4, description="moons / circles samples")
    path: str | None = Field(None, description="mnist: the IDX files' directory or an .npz file")
    voltage: float = Field(1.0, gt=0)
    signed: bool = True
    bias: bool = True
    loss: Literal["mse", "cross_entropy"] = "mse"
    decision: Literal["argmax", "nearest"] = "argmax"
    temperature: float = Field(D.TEMPERATURE, gt=0, description="cross-entropy: logits are o / temperature")
    target_low: float = 0.0
    target_high: float = 0.5
    n_sources: int = Field(2, ge=1, description="allostery sources")
    n_targets: int = Field(2, ge=1, description="allostery targets")

    @model_validator(mode="after")
    def _check(self):
        if self.loss == "cross_entropy" and self.name in ("teacher_student", "allostery"):
            raise ValueError(f"task {self.name!r} is a regression task: use loss = 'mse'")
        if self.target_high <= self.target_low:
            raise ValueError("target_high must be larger than target_low")
        if self.name in NONLINEAR and self.loss != "mse":
            raise ValueError(f"task {self.name!r} trains the squared error on target potentials: use loss = 'mse'")
        if self.name == "mnist" and self.path is None:
            raise ValueError("task.path: task.name = 'mnist' needs path (a directory with the four MNIST IDX "
                             "files, or an .npz with x_train, y_train, x_test, y_test)")
        return self

    def kwargs(self, seed: int) -> dict[str, Any]:
        common = {"seed": seed}
        if self.name == "teacher_student":
            return {**common, "n_inputs": self.n_inputs, "n_outputs": self.n_outputs,
                    "n_train": self.n_train, "n_test": self.n_test, "voltage": self.voltage,
                    "noise": self.noise}
        if self.name == "allostery":
            return {**common, "n_sources": self.n_sources, "n_targets": self.n_targets,
                    "voltage": self.voltage}
        kw = {**common, "test_fraction": self.test_fraction, "voltage": self.voltage,
              "signed": self.signed, "bias": self.bias, "loss": self.loss,
              "target_low": self.target_low, "target_high": self.target_high,
              "decision": self.decision, "temperature": self.temperature}
        if self.name in NONLINEAR:  # the tasks' own defaults unless a key is given
            kw = {**common, "voltage": self.voltage, "signed": self.signed, "bias": self.bias,
                  "target_low": self.target_low, "target_high": self.target_high}
            given = self.model_fields_set
            if self.name == "xor":
                kw.update({k: getattr(self, k) for k in ("n_train", "n_test", "noise") if k in given})
            elif self.name in ("moons", "circles"):
                kw.update({k: getattr(self, k) for k in ("n_samples", "noise", "test_fraction") if k in given})
            elif self.name == "mnist5k":
                kw.update({k: getattr(self, k) for k in ("test_fraction",) if k in given})
            else:
                kw.update(path=self.path, max_train=self.max_train)
            return kw
        if self.name == "digits":
            kw["max_train"] = self.max_train
        return kw


class RuleConfig(_Model):
    """Learning rule and its nudge / noise parameters."""

    name: Literal["analytical", "ep", "cl", "acl", "insitu", "gep", "finite_difference"] = "analytical"
    beta: float = Field(D.EP_BETA, gt=0, description="EP / GEP nudge strength")
    variant: Literal["positive", "negative", "centered"] | None = Field(
        None, description="two-phase variant (default: the rule's, centered for EP/GEP, positive for CL/ACL)")
    nudge: Literal["current", "energy"] = D.EP_NUDGE
    eta: float = Field(D.CL_ETA, gt=0, le=1, description="CL / ACL clamping strength")
    eps: float = Field(D.FD_EPS, gt=0, description="finite-difference step")
    noise: float = Field(0.0, ge=0, description="in-situ relative measurement noise")
    noise_abs: float = Field(0.0, ge=0, description="in-situ absolute measurement noise")
    adc_bits: int | None = Field(None, ge=2, le=32, description="in-situ ADC bits")
    mode: Literal["sequential", "superposed"] = "sequential"


class OptimizerConfig(_Model):
    name: Literal["sgd", "momentum", "adam"] = D.OPTIMIZER
    lr: float = Field(D.LR, gt=0, description="learning rate")
    momentum: float = Field(D.MOMENTUM, ge=0, lt=1)
    schedule: Literal["constant", "step", "exponential", "cosine"] = "constant"
    decay: float = Field(0.5, gt=0, le=1, description="step / exponential decay factor")
    step_size: int = Field(10, ge=1, description="epochs between step decays")


class ConstraintsConfig(_Model):
    """Device constraints applied after every update (conductance space)."""

    g_min: float | None = Field(1e-3, gt=0)
    g_max: float | None = Field(None, gt=0)
    levels: int | None = Field(None, ge=2, description="number of log-spaced levels in [g_min, g_max]")
    rounding: Literal["nearest", "stochastic"] = "nearest"
    update_noise: float = Field(0.0, ge=0, description="multiplicative update noise std")

    @model_validator(mode="after")
    def _check(self):
        if self.g_min is not None and self.g_max is not None and self.g_max <= self.g_min:
            raise ValueError(f"g_max ({self.g_max}) must be larger than g_min ({self.g_min})")
        if self.levels is not None and (self.g_min is None or self.g_max is None):
            raise ValueError("levels need both g_min and g_max")
        return self


class TunableConfig(_Model):
    """Which edges learn: all, a random fraction, or the fraction nearest inputs/outputs."""

    mode: Literal["all", "random", "inputs", "outputs"] = "random"
    fraction: float = Field(1.0, gt=0, le=1)


class DeviceConfig(_Model):
    """Train on devices: every update is programmed with pulses (:class:`kirchnet.devices.PulseProgrammer`).

    ``preset``: a pulse device of :func:`kirchnet.devices.preset` (``params`` overrides its
    parameters, e.g. ``{c2c = 0.1, step_down = 2e-6}``); ``mode = "pulses"``: the optimizer's
    update becomes pulse counts ``n = dg / step(g)`` rounded by ``rounding``; ``"in_situ"``:
    no optimizer, one pulse per edge with amplitude ``min(gain |dC/dr_e|, v_max)`` (the rule's
    local product). ``dt``: seconds per step (retention drift). ``seed``: device variation and
    noise (default: the run seed + 13). Conductances are in siemens: ``network.g_init`` must
    lie in the device window and ``constraints.g_min`` at or below it.
    """

    preset: Literal["digital_potentiometer", "pcm", "rram", "ideal"] = "rram"
    params: dict[str, float | int | str] = Field(default_factory=dict, description="preset overrides")
    mode: Literal["pulses", "in_situ"] = "pulses"
    rounding: Literal["round", "stochastic", "sign"] = "stochastic"
    max_pulses: int = Field(100, ge=1, description="cap on |pulses| per device and step")
    threshold: float = Field(0.5, ge=0, description="rounding = 'sign': fractional pulses needed for one")
    dt: float = Field(0.0, ge=0, description="seconds per step (drift)")
    seed: int | None = Field(None, ge=0)
    gain: float = Field(1.0, gt=0, description="in_situ: pulse amplitude per unit |dC/dr|")
    v_max: float | None = Field(None, gt=0, description="in_situ: largest amplitude (default the device's v_pulse)")

    def build(self, run_seed: int = 0):
        """The :class:`~kirchnet.devices.PulseProgrammer` (``ParameterError`` for bad ``params``)."""
        from .devices import PulseProgrammer, preset

        return PulseProgrammer(preset(self.preset, **self.params), mode=self.rounding,
                               max_pulses=self.max_pulses, threshold=self.threshold, dt=self.dt,
                               seed=run_seed + 13 if self.seed is None else self.seed,
                               protocol=self.mode, gain=self.gain, v_max=self.v_max)

    def window(self) -> tuple[float, float]:
        """The nominal device window ``(g_min, g_max)`` in siemens."""
        from .devices import preset

        model = preset(self.preset, **self.params)
        return float(model.g_min), float(model.g_max)

    @model_validator(mode="after")
    def _check(self):
        from .errors import KirchnetError

        try:
            self.window()
        except (KirchnetError, TypeError, ValueError) as exc:
            raise ValueError(f"params: {exc}") from None
        return self


class TrainConfig(_Model):
    """One training run: network, task, rule, optimizer, constraints, tunable edges, device."""

    name: str = "run"
    seed: int = Field(0, ge=0, description="run seed (non-negative)")
    epochs: int = Field(D.EPOCHS, ge=1)
    batch_size: int | None = Field(D.BATCH_SIZE, ge=1,
                                   description="minibatch size (None, in a dict or JSON config: full batch)")
    parametrization: Literal["conductance", "resistance"] = "conductance"
    eval_every: int = Field(1, ge=1, description="epochs between evaluations")
    checkpoint_every: int | None = Field(
        None, ge=0, description="kirchnet train: epochs between checkpoints for --resume "
                                "(default: about 20 per run, at least every epoch; 0: none)")
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    task: TaskConfig
    rule: RuleConfig = Field(default_factory=RuleConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    tunable: TunableConfig = Field(default_factory=TunableConfig)
    device: DeviceConfig | None = Field(None, description="train through device programming pulses")

    @model_validator(mode="after")
    def _check_drn(self):
        if self.network.kind == "drn" and (self.task.signed or self.task.bias):
            raise ValueError("task.signed / task.bias: a DRN (network.kind = 'drn') duplicates and inverts its "
                             "inputs itself (gain (x, -x)) and has its own bias sources (network.bias); set "
                             "task.signed = false and task.bias = false")
        if self.network.kind == "drn" and self.task.name in ("teacher_student", "allostery"):
            raise ValueError(f"network.kind = 'drn' needs a classification task, not {self.task.name!r}")
        return self

    @model_validator(mode="after")
    def _check_device(self):
        if self.device is None:
            return self
        lo, hi = self.device.window()
        g0, g1 = self.network.g_init
        if g0 < lo * (1 - 1e-9) or g1 > hi * (1 + 1e-9):
            raise ValueError(f"network.g_init {list(self.network.g_init)} must lie in the device window "
                             f"[{lo:.4g}, {hi:.4g}] S of device.preset {self.device.preset!r}; set g_init in "
                             f"siemens inside it (e.g. [{lo * 2:.3g}, {hi / 2:.3g}])")
        c = self.constraints
        if c.g_min is not None and c.g_min > lo * (1 + 1e-9):
            raise ValueError(f"constraints.g_min ({c.g_min:g} S) is above the device's g_min ({lo:.4g} S), so "
                             f"it would override the device window; set constraints.g_min to at most {lo:.4g}")
        return self

    def checkpoint_interval(self) -> int:
        """Epochs between checkpoints: ``checkpoint_every``, or by default
        ``max(1, epochs // 20)`` (so every run can be resumed); 0 means none."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return max(1, self.epochs // 20)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        """Validate a dict; raise :class:`ConfigError` naming each bad key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table/dict, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from None

    @classmethod
    def from_toml(cls, path) -> "TrainConfig":
        """Read and validate a TOML file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a directory; give the path of a TOML file") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: "
                              f"{exc.reason}); save it as UTF-8 TOML") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        """Plain JSON-able dict (round-trips through :meth:`from_dict`)."""
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """One line per problem: ``source: a.b.c: message (got value)``."""
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the schema; check the spelling)"
            if loc.split(".")[-1] in ("learning_rate", "learningrate"):
                msg = "unknown key: the learning rate is called lr, in the [optimizer] table"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        suffix = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{suffix}")
    return "\n".join(lines)
