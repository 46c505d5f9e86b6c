"""Training loop: minibatches, epochs, optimizers, constraints, metrics, checkpoints.

One step (architecture.md)::

    fac = fac.update(g)            # low-rank update when few edges changed, else refactor
    est = rule.estimate(circuit, g, x_b, y_b, factorization=fac).estimate      # dC/dg (m,)
    d   = est            (parametrization "conductance")
        = -g^2 * est     (parametrization "resistance": dC/dr = -g^2 dC/dg)
    p   <- optimizer.step(p, d * tunable, lr * schedule(epoch))
    g   <- constraints(where(tunable, g(p), g_old), g_old); non-tunable edges keep g_old

On devices (a :class:`~kirchnet.devices.PulseProgrammer` among the constraints) the
proposed update is programmed as pulses and non-tunable edges take what their devices
reach (no pulses, but retention drift). A programmer with ``protocol="in_situ"`` replaces
the optimizer step: ``g <- programmer.in_situ_products(g, tunable * dC/dr, gain * schedule)``
(``dC/dr = -g^2 dC/dg``: one pulse per edge from its own local product), then the other
constraints. Device arrays are stored in the checkpoint's npz.

Per epoch the trainer evaluates the loss (and accuracy for classification) on the
whole training set and on the validation set with one factorization and one batched
solve, records the learning rate, the mean minibatch loss, the number of low-rank
updates, and optionally the mean cosine similarity between the rule's estimate and the
exact gradient (on the tunable edges). ``history[0]`` is the evaluation before training.

A stop requested mid-epoch (``trainer.stop_training`` in ``on_step_end``) records the partial
epoch but does not checkpoint it.

Checkpoints (every ``checkpoint_every`` epochs) hold the conductances, optimizer and
constraint state and the history; they are written atomically (temporary file +
``os.replace``; the JSON index is replaced last). Shuffling draws the permutation of
epoch ``e`` from ``default_rng([seed, e])``, every epoch starts from a fresh
factorization (cached solves of an evaluation would change the rounding), and random state of constraints
and rules (``state_dict()`` or a ``_rng`` generator) is checkpointed, so a resumed run
reproduces the uninterrupted history exactly. Callbacks with ``state_dict()`` /
``load_state_dict()`` are checkpointed too. A checkpoint carries a fingerprint of the run
(rule, parametrization, optimizer, constraints, batching, circuit, tunable mask, initial
conductances, data, and ``Trainer(fingerprint=...)``): resuming a different run raises
:class:`CheckpointMismatchError`, a damaged checkpoint :class:`CheckpointError`.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import defaults as D
from . import parametrization as _param
from .circuit import Circuit
from .constraints import Bounds, Compose, Levels, _check_space, as_constraint, from_space, to_space
from .errors import KirchnetError, ParameterError, SaturationWarning, ShapeError
from .experiments.io import write_bytes, write_text
from .gradient import loss_and_grad
from . import errors as _errors
from ._validation import check_choice, check_finite_array, check_int, check_real, check_seed
from .losses import CrossEntropy
from .optim import Optimizer, get_optimizer, get_schedule
from .partial import next_factorization, resolve_mask
from .rules.base import Analytical, Rule
from . import small as _small
from ._interrupt import reraises_ctrl_c

__all__ = ["Trainer", "TrainResult", "History", "Callback", "EarlyStopping", "LambdaCallback",
           "evaluate", "conductance_bounds", "saturation_counts", "CheckpointError", "CheckpointMismatchError"]

CHECKPOINT_INDEX = "checkpoint.json"


class CheckpointError(KirchnetError, ValueError):
    """A checkpoint is damaged (unreadable index or arrays); the message names the file."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written by a different run (config, data, rule, parametrization, ...)."""


def _digest(*arrays) -> str:
    """SHA-256 (first 16 hex digits) of arrays' dtypes, shapes and bytes (or of raw bytes)."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, bytes):
            h.update(a)
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- state helpers
def _rule_state(rule) -> dict:
    """A rule's random state: its ``state_dict()`` if it has one, else the state of a
    ``_rng`` numpy Generator (e.g. measurement noise of the in-situ protocol)."""
    if callable(getattr(rule, "state_dict", None)):
        return {"state_dict": rule.state_dict()}
    rng = getattr(rule, "_rng", None)
    if isinstance(rng, np.random.Generator):
        return {"rng": rng.bit_generator.state}
    return {}


def _load_rule_state(rule, state: dict) -> None:
    if "state_dict" in state and callable(getattr(rule, "load_state_dict", None)):
        rule.load_state_dict(state["state_dict"])
    elif "rng" in state and isinstance(getattr(rule, "_rng", None), np.random.Generator):
        rule._rng.bit_generator.state = state["rng"]


def _programmers(constraints) -> list:
    """The :class:`~kirchnet.devices.PulseProgrammer` s among ``constraints`` (nested lists too)."""
    from .devices import PulseProgrammer

    out, stack = [], [constraints]
    while stack:
        c = stack.pop()
        if isinstance(c, Compose):
            stack += c.constraints[::-1]
        elif isinstance(c, PulseProgrammer):
            out.append(c)
    return out


def _apply_except(constraints, skip, g_new, g_old, space):
    """``constraints`` applied in order with the constraint ``skip`` left out."""
    if constraints is skip:
        return g_new
    if isinstance(constraints, Compose):
        for c in constraints.constraints:
            g_new = _apply_except(c, skip, g_new, g_old, space)
        return g_new
    return constraints.apply(g_new, g_old, space)


def _split_arrays(obj, prefix: str, arrays: dict):
    """``obj`` with every numpy array replaced by ``{"__npz__": key}`` (the array goes into
    ``arrays[key]``): checkpoint state whose arrays are stored in the npz, not in JSON."""
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        arrays[prefix] = obj
        return {"__npz__": prefix}
    if isinstance(obj, dict):
        return {k: _split_arrays(v, f"{prefix}.{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, f"{prefix}.{i}", arrays) for i, v in enumerate(obj)]
    return obj


def _join_arrays(obj, data):
    """Inverse of :func:`_split_arrays` (``data``: the npz or a dict of arrays)."""
    if isinstance(obj, dict):
        if set(obj) == {"__npz__"}:
            return np.array(data[obj["__npz__"]])
        return {k: _join_arrays(v, data) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, data) for v in obj]
    return obj


# ----------------------------------------------------------------------------- history
def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


class History:
    """Per-epoch records (list of dicts); ``history["loss"]`` is the column as an array
    (NaN where a record lacks the key)."""

    def __init__(self, records: Sequence[dict] | None = None):
        self.records: list[dict] = [dict(r) for r in (records or [])]

    def append(self, record: dict) -> None:
        self.records.append(dict(record))

    @property
    def keys(self) -> list[str]:
        keys: list[str] = []
        for r in self.records:
            keys += [k for k in r if k not in keys]
        return keys

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.keys:
            raise KeyError(f"history has no column {key!r}; columns: {self.keys}")
        return np.array([np.nan if r.get(key) is None else r[key] for r in self.records], dtype=float)

    def __len__(self):
        return len(self.records)

    def __eq__(self, other):
        return isinstance(other, History) and self.to_dicts() == other.to_dicts()

    def to_dicts(self) -> list[dict]:
        return [{k: _jsonable(v) for k, v in r.items()} for r in self.records]

    def to_json(self, path: str | None = None) -> str:
        """JSON text (a list of records, NaN written as null); written atomically to ``path``."""
        text = json.dumps(self.to_dicts(), indent=1)
        if path is not None:
            write_text(path, text)
        return text

    def to_csv(self, path: str | None = None) -> str:
        """CSV text with one row per epoch (empty cell for a missing value)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.keys, lineterminator="\n")
        w.writeheader()
        for r in self.to_dicts():
            w.writerow({k: ("" if r.get(k) is None else repr(r[k]) if isinstance(r[k], float) else r[k])
                        for k in self.keys})
        text = buf.getvalue()
        if path is not None:
            write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str) -> "History":
        text = path_or_text
        if not path_or_text.lstrip().startswith("["):
            with open(path_or_text, encoding="utf-8") as fh:
                text = fh.read()
        return cls(json.loads(text))

    def __repr__(self):
        return f"History({len(self)} epochs, columns={self.keys})"


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Final conductances (m,), the :class:`History`, and run information."""

    conductances: np.ndarray
    history: History
    tunable: np.ndarray
    epochs_run: int
    stopped: bool = False
    timings: list = field(default_factory=list)  # wall seconds per epoch run in this call

    @property
    def resistances(self) -> np.ndarray:
        return 1.0 / self.conductances


# ----------------------------------------------------------------------------- callbacks
class Callback:
    """Hooks called by :class:`Trainer`; set ``trainer.stop_training = True`` to stop after
    the current step (``on_step_end``) or epoch (``on_epoch_end``)."""

    def on_train_begin(self, trainer: "Trainer", info: dict) -> None: ...

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None: ...

    def on_step_end(self, trainer: "Trainer", info: dict) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", epoch: int, record: dict) -> None: ...

    def on_train_end(self, trainer: "Trainer", result: TrainResult) -> None: ...


class LambdaCallback(Callback):
    """A callback from plain functions (any of ``on_step_end``, ``on_epoch_end``, ...)."""

    def __init__(self, **hooks):
        allowed = {"on_train_begin", "on_epoch_begin", "on_step_end", "on_epoch_end", "on_train_end"}
        unknown = set(hooks) - allowed
        if unknown:
            raise ValueError(f"unknown callback hook(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str = "loss", patience: int = 5, min_delta: float = 0.0, mode: str = "min"):
        self.monitor, self.mode = monitor, check_choice(mode, "mode", ("min", "max"))
        self.patience = check_int(patience, "patience", 0)
        self.min_delta = check_real(min_delta, "min_delta", low=0.0)
        self.best, self.wait = None, 0

    def on_train_begin(self, trainer, info):
        self.best, self.wait = None, 0

    def on_epoch_end(self, trainer, epoch, record):
        v = record.get(self.monitor)
        if v is None or not math.isfinite(v):
            return
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - v) > self.min_delta:
            self.best, self.wait = v, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True


# ----------------------------------------------------------------------------- evaluation
def _check_training_data(x, y, x_val, y_val, circuit: Circuit, loss):
    """``(X, Y, Xv, Yv)``: the training set (non-empty) and the optional validation set
    (both or neither), each checked by :func:`_check_data`."""
    X, Y = _check_data(x, y, circuit, loss)
    if len(X) == 0:
        raise ShapeError("cannot train on an empty data set")
    if (x_val is None) != (y_val is None):
        raise ParameterError(f"x_val and y_val must be given together; got "
                             f"{'x_val' if y_val is None else 'y_val'} only")
    Xv = Yv = None
    if x_val is not None:
        Xv, Yv = _check_data(x_val, y_val, circuit, loss, "x_val", "y_val")
    return X, Y, Xv, Yv


def _check_data(x, y, circuit: Circuit, loss, xname: str = "x", yname: str = "y"):
    """``(X, Y)`` checked for training: ``X`` finite ``(n, n_inputs)``; ``Y`` finite numbers with
    ``n`` rows that ``loss`` accepts as targets (shape, class labels). Cross-entropy targets
    given as ``(n, k)`` floats must be probability rows (summing to 1): target voltages
    (e.g. 0.5-scaled one-hot patterns) belong to ``loss="mse"``."""
    X = check_finite_array(x, xname, fix="remove or impute them before training")
    if X.ndim != 2 or X.shape[1] != circuit.n_inputs:
        raise ShapeError(f"{xname} must have shape (n_samples, {circuit.n_inputs}), got {X.shape}")
    Y = check_finite_array(y, yname, dtype=None, fix="remove or impute them before training")
    if Y.dtype.kind not in "biuf":
        raise ShapeError(f"{yname} must hold numbers (targets or integer class labels), got "
                         f"{Y.dtype.name} values; encode class names as 0..k-1 first")
    if Y.ndim == 0 or len(Y) != len(X):
        raise ShapeError(f"{xname} has {len(X)} samples but {yname} has {len(Y) if Y.ndim else 0}")
    if len(X):
        try:
            loss.targets(Y, np.zeros((len(X), circuit.n_outputs)))  # shape, labels, range
        except NotImplementedError:  # a user loss without a targets() check
            pass
        if isinstance(loss, CrossEntropy) and Y.ndim == 2:
            sums = Y.sum(axis=1)
            bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
            if bad.size:
                raise ShapeError(
                    f"{yname}: a cross-entropy rule needs class labels (integers 0..{circuit.n_outputs - 1}) "
                    f"or probability rows summing to 1; row {bad[0]} sums to {sums[bad[0]]:.6g} "
                    f"({bad.size} such row(s)). Target voltages need loss='mse'")
    return X, Y


def _at_step(exc: Exception, epoch: int, step: int) -> Exception:
    """The same kirchnet error with ``epoch E, step S:`` in front of its message."""
    msg = f"epoch {epoch}, step {step}: {exc}"
    try:
        new = type(exc)(msg)
    except TypeError:
        new = _errors.SolverError(msg)
    new.__dict__.update(exc.__dict__)
    return new


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    return np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1).astype(np.int64)


def evaluate(circuit: Circuit, conductances, x, y, loss, accuracy: bool = False,
             factorization=None) -> dict:
    """``{"loss": mean C_s, "accuracy": mean(argmax o == label)}`` with one batched solve."""
    fac = circuit.factorization_for(conductances, factorization)
    out = fac.solve(x).outputs
    values, _ = loss(out, y)
    res = {"loss": float(values.mean())}
    if accuracy:
        res["accuracy"] = float(np.mean(np.argmax(out, axis=1) == _labels(y)))
    return res


def conductance_bounds(constraints, clip: tuple[float, float]) -> tuple[float, float]:
    """The tightest ``(g_low, g_high)`` in siemens that ``clip`` and the :class:`Bounds` /
    :class:`Levels` among ``constraints`` impose (resistance-space bounds inverted)."""
    lo, hi = float(clip[0]), float(clip[1])
    stack = [constraints]
    while stack:
        c = stack.pop()
        if isinstance(c, (Compose, list, tuple)):
            stack += c.constraints if isinstance(c, Compose) else list(c)
            continue
        if isinstance(c, Bounds):
            a, b = c._lo, c._hi
        elif isinstance(c, Levels):
            a, b = float(c.levels[0]), float(c.levels[-1])
        else:
            continue
        if c.space == "resistance":
            a, b = (1.0 / b if b > 0 else math.inf), (1.0 / a if a > 0 else math.inf)
        lo, hi = max(lo, a), min(hi, b)
    return lo, hi


def saturation_counts(g, mask, bounds: tuple[float, float], rtol: float = 1e-9) -> dict:
    """``{"n_at_lower", "n_at_upper"}``: tunable edges (``mask``) whose conductance sits at the
    lower / upper bound (within a relative ``rtol``)."""
    lo, hi = bounds
    g = np.asarray(g, dtype=float)[np.asarray(mask, dtype=bool)]
    return {"n_at_lower": int(np.count_nonzero(g <= lo * (1.0 + rtol))),
            "n_at_upper": int(np.count_nonzero(g >= hi * (1.0 - rtol))) if math.isfinite(hi) else 0}


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Minibatch training of a circuit's conductances with any :class:`~kirchnet.rules.Rule`.

    Parameters
    ----------
    rule: the gradient estimator (default :class:`~kirchnet.rules.Analytical` with MSE);
        its ``loss`` is the training loss. Estimates are ``dC/dg``; a result whose
        ``info["wrt"]`` is ``"resistance"`` (``InSitu(wrt="resistance")``) is read as ``dC/dr``.
    optimizer: an :class:`~kirchnet.optim.Optimizer` or ``"sgd" | "momentum" | "adam"``.
    lr: base learning rate when ``optimizer`` is a name (ignored for instances).
    epochs, batch_size: passes over the data and minibatch size (``batch_size=None``: the
        whole training set, one step per epoch).
    shuffle, seed: reshuffle every epoch with ``default_rng([seed, epoch])``.
    schedule: learning-rate multiplier per epoch (:mod:`kirchnet.optim`), ``None`` = constant.
    tunable: mask spec (:func:`kirchnet.partial.resolve_mask`); ``None`` = all edges.
    constraints: a :class:`~kirchnet.constraints.Constraint` or a list (applied in order).
    parametrization: ``"conductance"`` (optimize ``g``) or ``"resistance"`` (optimize ``r``).
    accuracy: record classification accuracy (default: when the loss is cross-entropy).
    cosine: record the mean cosine similarity of the estimate to the exact gradient.
    callbacks: :class:`Callback` instances.
    checkpoint_dir, checkpoint_every: write a checkpoint every N epochs (and at the end).
    history_dir: write ``history.json`` and ``history.csv`` there after every epoch.
    progress: show a progress bar (tqdm).
    clip: safety range for conductances ``(g_min, g_max)`` applied after every step so that
        the circuit stays well-posed (use :class:`~kirchnet.constraints.Bounds` for devices);
        widened to contain the initial conductances, so that circuits in other units (e.g.
        10 Mohm = 1e-7 S) are not moved by the clip itself.
    max_rank: low-rank update threshold passed to ``CircuitFactorization.update``
        (``None``: its default; ``0``: always refactor).
    fingerprint: extra ``{name: text}`` a checkpoint must match to be resumed (e.g. the hash
        of a training config); see :meth:`fingerprint_of`.
    evaluate_every: the per-epoch metrics (training and validation loss and accuracy, the
        saturation counts) are computed every N epochs and at the last epoch (or a stop);
        the records in between hold ``epoch``, ``lr``, ``batch_loss`` (and ``cosine``,
        ``low_rank_updates``) only. ``1`` (default): every epoch.
    fast: use the small-network kernel (:mod:`kirchnet.small`: dense, direct LAPACK, the
        same estimates to rounding and the same checks) when the circuit is linear with at
        most ``small.SMALL_MAX`` free nodes, the rule is one it computes and ``max_rank`` is
        ``None`` or ``0`` (it refactorizes every step); ``False``: always the general path.
    saturation_warning: every history record holds ``n_at_lower`` / ``n_at_upper``, the
        tunable edges whose conductance sits at the lower / upper bound (the ``clip`` range
        and the :class:`~kirchnet.constraints.Bounds` / ``Levels`` constraints, see
        :func:`conductance_bounds`); when their fraction of the tunable edges exceeds
        ``saturation_warning`` (default 0.25, :mod:`kirchnet.defaults`; None: never) a :class:`~kirchnet.SaturationWarning`
        is issued, once per :meth:`fit`.

    Defaults (``optimizer``, ``lr``, ``epochs``, ``batch_size``, ``clip``) come from
    :mod:`kirchnet.defaults`, as in the TOML schema and the estimators.
    """

    def __init__(self, rule: Rule | None = None, optimizer: Optimizer | str = D.OPTIMIZER, lr: float | None = None,
                 epochs: int = D.EPOCHS, batch_size: int = D.BATCH_SIZE, shuffle: bool = True, seed: int = 0,
                 schedule=None, tunable=None, constraints=None, parametrization: str = "conductance",
                 accuracy: bool | None = None, cosine: bool = False, callbacks: Sequence[Callback] = (),
                 checkpoint_dir: str | None = None, checkpoint_every: int = 1,
                 history_dir: str | None = None, progress: bool = False,
                 clip: tuple[float, float] = D.CLIP, max_rank: int | None = None,
                 fingerprint: dict | None = None,
                 saturation_warning: float | None = D.SATURATION_WARN_FRACTION, fast: bool = True,
                 evaluate_every: int = 1):
        self.fast = bool(fast)
        self.evaluate_every = check_int(evaluate_every, "evaluate_every", 1)
        self.rule = rule if rule is not None else Analytical()
        if not hasattr(self.rule, "estimate"):
            raise TypeError(f"rule must be a kirchnet Rule, got {type(rule).__name__}")
        self.optimizer = get_optimizer(optimizer, lr)
        self.epochs = check_int(epochs, "epochs", 0)
        self.full_batch = batch_size is None  # None: one step per epoch on the whole training set
        self.batch_size = None if self.full_batch else check_int(batch_size, "batch_size", 1)
        self.shuffle, self.seed = bool(shuffle), check_seed(seed)
        self.schedule = get_schedule(schedule, epochs)
        self.tunable = tunable
        self.constraints = as_constraint(constraints)
        self.parametrization = _check_space(parametrization, allow_none=False, name="parametrization")
        self.accuracy = isinstance(self.rule.loss, CrossEntropy) if accuracy is None else bool(accuracy)
        self.cosine = bool(cosine)
        self.callbacks = list(callbacks)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 1)
        self.history_dir = history_dir
        self.progress = bool(progress)
        try:
            lo, hi = (check_real(c, "clip") for c in clip)
        except (TypeError, ValueError) as exc:  # not a pair of numbers
            raise ParameterError(f"clip must be a pair (g_min, g_max) of numbers in siemens, got {clip!r}") from exc
        if not 0 < lo < hi:
            raise ParameterError(f"clip must satisfy 0 < g_min < g_max, got {clip}")
        self.clip = (lo, hi)
        self._clip_range = self.clip  # widened to the initial conductances by fit()
        self.max_rank = max_rank
        self.stop_training = False
        self.fingerprint = dict(fingerprint or {})
        if saturation_warning is not None and not 0 <= float(saturation_warning) <= 1:
            raise ParameterError(f"saturation_warning must be a fraction in [0, 1] or None, got "
                                 f"{saturation_warning!r}")
        self.saturation_warning = None if saturation_warning is None else float(saturation_warning)
        self._fingerprint: dict | None = None  # set by fit()

    # ------------------------------------------------------------------ checkpoints
    def _state_arrays(self, g) -> tuple[dict, dict]:
        arrays = {"conductances": g}
        scalars = {}
        for k, v in self.optimizer.state_dict().items():
            if isinstance(v, np.ndarray):
                arrays[f"opt.{k}"] = v
            else:
                scalars[k] = v
        return arrays, scalars

    def fingerprint_of(self, circuit, g0, mask, X, Y, Xv=None, Yv=None) -> dict:
        """What a checkpoint must match to be resumed: the rule, parametrization, optimizer,
        constraints, batching, the circuit, the tunable mask, the initial conductances and
        the data (SHA-256 of the arrays), plus ``self.fingerprint`` (e.g. a config hash).
        ``epochs`` and ``checkpoint_every`` are left out: a run may be resumed to more epochs."""
        fp = {"rule": repr(self.rule), "parametrization": self.parametrization,
              "optimizer": repr(self.optimizer), "constraints": repr(self.constraints),
              "batching": f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed!r}",
              "circuit": _digest(repr(circuit).encode(), np.asarray(circuit.network.edges)),
              "tunable edges": _digest(np.asarray(mask, dtype=bool)),
              "initial conductances": _digest(np.asarray(g0, dtype=float)),
              "data": _digest(X, np.asarray(Y), *(() if Xv is None else (Xv, np.asarray(Yv))))}
        if self.evaluate_every != 1:  # the history differs (only then: older checkpoints stay resumable)
            fp["evaluate_every"] = str(self.evaluate_every)
        fp.update({str(k): str(v) for k, v in (self.fingerprint or {}).items()})
        return fp

    def save_checkpoint(self, epoch: int, g: np.ndarray, history: History) -> str:
        """Write ``ckpt-EPOCH.npz`` and then ``checkpoint.json`` atomically; returns the npz path.

        The index holds the epoch, optimizer / constraint / rule random state, the history,
        the state of callbacks that have ``state_dict()`` and the run's fingerprint
        (:meth:`fingerprint_of`); it is replaced last, so a kill at any moment leaves the
        previous complete checkpoint (its npz is removed only after the new index is in place)."""
        d = self.checkpoint_dir
        os.makedirs(d, exist_ok=True)
        arrays, scalars = self._state_arrays(g)
        constraint_state = _split_arrays(self.constraints.state_dict(), "cons", arrays)  # device arrays: npz
        name = f"ckpt-{epoch:06d}.npz"
        path = os.path.join(d, name)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_bytes(path, buf.getvalue())
        index = {"format": 2, "epoch": epoch, "arrays": name, "n_edges": int(g.size),
                 "optimizer": type(self.optimizer).__name__, "optimizer_scalars": scalars,
                 "optimizer_none": [k for k, v in self.optimizer.state_dict().items() if v is None],
                 "constraints": constraint_state, "rule": repr(self.rule),
                 "rule_state": _rule_state(self.rule),
                 "callbacks": [cb.state_dict() if callable(getattr(cb, "state_dict", None)) else None
                               for cb in self.callbacks],
                 "fingerprint": self._fingerprint,
                 "parametrization": self.parametrization, "history": history.to_dicts()}
        write_text(os.path.join(d, CHECKPOINT_INDEX), json.dumps(index))
        for old in glob.glob(os.path.join(d, "ckpt-*.npz")):
            if os.path.basename(old) != name:
                os.remove(old)
        return path

    def load_checkpoint(self, n_edges: int):
        """``(epoch, conductances, history)`` from ``checkpoint_dir``, or None if there is none;
        restores optimizer, constraint, rule and callback state.

        Raises :class:`CheckpointMismatchError` when the checkpoint was written for another
        run (its fingerprint differs: rule, data, parametrization, ...), and
        :class:`CheckpointError` naming the file when the checkpoint is damaged."""
        if self.checkpoint_dir is None:
            raise ParameterError("resume=True needs checkpoint_dir")
        d = self.checkpoint_dir
        idx_path = os.path.join(d, CHECKPOINT_INDEX)
        if not os.path.exists(idx_path):
            return None
        fix = f"delete {d} to start the run over, or restore the file from a backup"
        try:
            with open(idx_path, encoding="utf-8") as fh:
                index = json.load(fh)
            if not isinstance(index, dict):
                raise ValueError(f"expected a JSON object, got {type(index).__name__}")
            missing = [k for k in ("epoch", "arrays", "n_edges", "optimizer", "optimizer_scalars",
                                   "optimizer_none", "constraints", "history") if k not in index]
            if missing:
                raise ValueError(f"missing entries {missing}")
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise CheckpointError(f"checkpoint index {idx_path} is damaged ({type(exc).__name__}: {exc}); "
                                  f"{fix}") from None
        saved = index.get("fingerprint")
        if self._fingerprint is not None:
            if not isinstance(saved, dict):
                raise CheckpointMismatchError(
                    f"checkpoint {idx_path} has no fingerprint (written by an older kirchnet), so it cannot "
                    f"be checked against this run; delete {d} to start the run over")
            diff = [k for k in sorted(set(saved) | set(self._fingerprint)) if saved.get(k) != self._fingerprint.get(k)]
            if diff:
                detail = "; ".join(f"{k}: checkpoint {saved.get(k, '-')!s:.120}, now {self._fingerprint.get(k, '-')!s:.120}"
                                   for k in diff)
                raise CheckpointMismatchError(
                    f"checkpoint in {d} was written by a different run ({', '.join(diff)} differ: {detail}); "
                    f"resume with the same settings, or delete {d} (or use another output directory) "
                    f"to start a new run")
        if index["n_edges"] != n_edges:
            raise ShapeError(f"checkpoint in {d} has {index['n_edges']} edges, the circuit has {n_edges}")
        if index["optimizer"] != type(self.optimizer).__name__:
            raise ParameterError(f"checkpoint was written with optimizer {index['optimizer']}, "
                                 f"resuming with {type(self.optimizer).__name__}")
        npz = os.path.join(d, str(index["arrays"]))
        try:
            with np.load(npz, allow_pickle=False) as data:
                g = np.array(data["conductances"], dtype=float)
                state = {k[4:]: np.array(data[k]) for k in data.files if k.startswith("opt.")}
                constraint_state = _join_arrays(index["constraints"], data)
            if g.shape != (n_edges,):
                raise ValueError(f"conductances of shape {g.shape}, expected ({n_edges},)")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"checkpoint file {npz} is damaged ({type(exc).__name__}: {exc}); "
                                  f"{fix}") from None
        try:
            state.update(index["optimizer_scalars"])
            state.update({k: None for k in index["optimizer_none"]})
            self.optimizer.load_state_dict(state)
            self.constraints.load_state_dict(constraint_state)
            _load_rule_state(self.rule, index.get("rule_state", {}))
            for cb, cb_state in zip(self.callbacks, index.get("callbacks") or []):
                if cb_state is not None and callable(getattr(cb, "load_state_dict", None)):
                    cb.load_state_dict(cb_state)
            history = History(index["history"])
            epoch = int(index["epoch"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint index {idx_path} is damaged (its saved state cannot be "
                                  f"restored: {type(exc).__name__}: {exc}); {fix}") from None
        return epoch, g, history

    # ------------------------------------------------------------------ helpers
    def _call(self, hook: str, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _evaluate(self, circuit, g, X, Y, Xv, Yv, fac, kernel=None) -> dict:
        loss = self.rule.loss
        ev = (lambda x, y: kernel.evaluate(g, x, y, loss, self.accuracy)) if kernel is not None else (
            lambda x, y: evaluate(circuit, g, x, y, loss, self.accuracy, fac() if callable(fac) else fac))
        rec = ev(X, Y)
        if Xv is not None:
            v = ev(Xv, Yv)
            rec.update({f"val_{k}": val for k, val in v.items()})
        return rec

    def _step(self, circuit, g, mask, xb, yb, lr, fac, kernel=None):
        if kernel is not None:  # small-network fast path (kirchnet.small): estimate and loss
            est, batch_loss = kernel.step(self.rule, g, xb, yb)
            wrt = getattr(self.rule, "wrt", None)
        else:
            res = self.rule.estimate(circuit, g, xb, yb, factorization=fac)
            est, batch_loss, wrt = np.asarray(res.estimate, dtype=float), float(res.loss), res.info.get("wrt")
        if est.shape != g.shape:
            raise ShapeError(f"rule {self.rule!r} returned an estimate of shape {est.shape}, expected {g.shape}")
        if wrt in ("resistance", "r"):  # e.g. InSitu(wrt="resistance"): dC/dr
            est = _param.RESISTANCE.grad_to_g(est, g)  # dC/dg = -r^2 dC/dr
        cos = math.nan
        if self.cosine:
            if kernel is not None:
                exact = kernel.step(Analytical(self.rule.loss), g, xb, yb)[0]
            else:
                _, exact = loss_and_grad(circuit, g, xb, yb, loss=self.rule.loss, factorization=fac)
            a, b = est[mask], exact[mask]
            den = np.linalg.norm(a) * np.linalg.norm(b)
            cos = float(a @ b / den) if den > 0 else math.nan
        space = self.parametrization
        lo, hi = self._clip_range
        programmers = getattr(self, "_fit_programmers", None)  # found once per fit
        if programmers is None:
            programmers = _programmers(self.constraints)
        in_situ = next((c for c in programmers if c.protocol == "in_situ"), None)
        if in_situ is not None:  # no optimizer: one pulse per edge from p_e = dC/dr_e
            prod = _param.RESISTANCE.grad_from_g(est, g)  # dC/dr = -g^2 dC/dg
            gain = in_situ.gain * lr / self.optimizer.lr  # the schedule's factor
            g_new = in_situ.in_situ_products(g, np.where(mask, prod, 0.0), gain, in_situ.v_max).conductances
            g_new = _apply_except(self.constraints, in_situ, g_new, g, space)
        else:
            d = _param.get(space).grad_from_g(est, g)  # dC/dp (resistance: -g^2 dC/dg)
            plain = getattr(self, "_fit_plain", False)  # every edge tunable, no constraints (fit)
            if not plain:
                d = np.where(mask, d, 0.0)
            if getattr(self, "_fit_lr_checked", False):  # lr validated once per epoch (fit)
                p_new = self.optimizer._update(to_space(g, space), d, lr)
            else:
                p_new = self.optimizer.step(to_space(g, space), d, lr)
            p_lo, p_hi = (lo, hi) if space == "conductance" else (1.0 / hi, 1.0 / lo)
            g_new = from_space(np.clip(p_new, p_lo, p_hi), space)
            # frozen edges propose no change (a device there gets no pulse) before the constraints
            if not plain:
                g_new = self.constraints.apply(np.where(mask, g_new, g), g, space)
        bad = np.flatnonzero(np.isnan(g_new) & mask) if np.isnan(g_new).any() else ()
        if len(bad):  # never turn NaN into a conductance and train on
            raise _errors.SolverError(
                f"the update gave NaN conductances on {bad.size} tunable edge(s) (e.g. edge "
                f"{int(bad[0])}); lower the learning rate or check the constraints")
        g_new = np.clip(g_new, lo, hi)
        if getattr(self, "_fit_plain", False):
            return g_new, batch_loss, cos
        # non-tunable edges keep g_old, except where devices drift (they get no pulses)
        g_new = np.where(mask, g_new, g_new if programmers else g)
        return g_new, batch_loss, cos

    # ------------------------------------------------------------------ fit
    @reraises_ctrl_c
    def fit_ensemble(self, circuit: Circuit, g0, x, y, x_val=None, y_val=None, lr=None, seeds=None
                     ) -> list[TrainResult]:
        """Train K networks of this circuit at once from ``g0`` (K, m), with per-member
        learning rates ``lr`` and shuffling ``seeds`` (one value or K); returns K
        :class:`TrainResult` s, each equal to its separate :meth:`fit` (:mod:`kirchnet.ensemble`)."""
        from .ensemble import fit_ensemble

        return fit_ensemble(self, circuit, g0, x, y, x_val, y_val, lr=lr, seeds=seeds)

    @reraises_ctrl_c
    def fit(self, circuit: Circuit, g0, x, y, x_val=None, y_val=None, resume: bool = False) -> TrainResult:
        """Train from conductances ``g0`` (m,) on ``x`` (n, n_inputs), ``y`` (targets of the
        rule's loss); with ``resume=True`` continue from the checkpoint in ``checkpoint_dir``
        when there is one. Returns a :class:`TrainResult`.

        ``g0`` of shape (K, m): an ensemble of K networks trained at once (:meth:`fit_ensemble`);
        returns a list of K results."""
        if np.ndim(g0) == 2:
            if resume:
                raise ParameterError("resume=True is for a single run; an ensemble (g0 of shape (K, m)) "
                                     "has no checkpoints")
            return self.fit_ensemble(circuit, g0, x, y, x_val, y_val)
        g = circuit.check_conductances(g0).copy()
        self._clip_range = (min(self.clip[0], float(g.min())), max(self.clip[1], float(g.max())))
        mask = resolve_mask(self.tunable, circuit)
        X, Y, Xv, Yv = _check_training_data(x, y, x_val, y_val, circuit, self.rule.loss)
        if self.full_batch:
            self.batch_size = len(X)
        self.stop_training = False
        self._fingerprint = self.fingerprint_of(circuit, g, mask, X, Y, Xv, Yv)
        loaded = self.load_checkpoint(g.size) if resume else None
        fac = None
        kernel = (_small.kernel_for(circuit, self.rule) if self.fast and self.max_rank in (None, 0)
                  else None)
        bounds = conductance_bounds(self.constraints, self._clip_range)
        warned = [False]
        self._fit_programmers = _programmers(self.constraints)
        # the per-step mask and constraint calls are identities: skipped (Trainer._step)
        self._fit_plain = bool(mask.all()) and type(self.constraints) is Compose and not self.constraints.constraints
        # Optimizer.step's own validation once per epoch, not per step (a subclass's step is called)
        self._fit_lr_checked = False
        lean_step = type(self.optimizer).step is Optimizer.step

        def saturation(g, epoch):
            counts = saturation_counts(g, mask, bounds)
            n_sat, n_tun = counts["n_at_lower"] + counts["n_at_upper"], int(mask.sum())
            if (self.saturation_warning is not None and not warned[0] and n_tun
                    and n_sat > self.saturation_warning * n_tun):
                warned[0] = True
                import warnings

                warnings.warn(SaturationWarning(
                    f"epoch {epoch}: {n_sat} of {n_tun} tunable edges ({n_sat / n_tun:.0%}) sit at a conductance "
                    f"bound ({counts['n_at_lower']} at the lower bound {bounds[0]:.3g} S, {counts['n_at_upper']} at "
                    f"the upper bound {bounds[1]:.3g} S): the targets may be out of reach within these bounds, or "
                    f"the learning rate too large. The counts are in history['n_at_lower'] / ['n_at_upper']; "
                    f"Trainer(saturation_warning=None) silences this warning"),
                    stacklevel=4)  # fit's caller: saturation <- fit <- reraises_ctrl_c's wrapper
            return counts

        if loaded is not None:
            start, g, history = loaded  # optimizer, constraint and rule state restored too
        else:
            self.optimizer.reset()
            history = History()
            start = 0
            history.append({"epoch": 0, "lr": math.nan, "batch_loss": math.nan,
                            **self._evaluate(circuit, g, X, Y, Xv, Yv, lambda: circuit.factorize(g), kernel),
                            **({"cosine": math.nan} if self.cosine else {}), "low_rank_updates": 0,
                            **saturation(g, 0)})
        self._call("on_train_begin", {"start_epoch": start, "tunable": mask, "conductances": g})
        n = len(X)
        timings = []
        bar = None
        if self.progress:
            try:
                from tqdm.auto import tqdm
                bar = tqdm(total=self.epochs, initial=min(start, self.epochs), desc="training", unit="epoch")
            except ImportError:  # pragma: no cover
                bar = None
        try:
            for epoch in range(start + 1, self.epochs + 1):
                t0 = time.perf_counter()
                self._call("on_epoch_begin", epoch)
                lr = self.optimizer.lr * float(self.schedule(epoch - 1))
                if lean_step:
                    try:
                        lr = check_real(lr, "lr (this step's learning rate)", low=0.0)
                    except _errors.KirchnetError as exc:
                        raise _at_step(exc, epoch, 0) from exc
                    self._fit_lr_checked = True
                order = (np.random.default_rng([int(self.seed), epoch]).permutation(n)
                         if self.shuffle and n > 1 else np.arange(n))  # one sample: nothing to shuffle
                batch_losses, cosines, low_rank, complete = [], [], 0, True
                for step, i in enumerate(range(0, n, self.batch_size)):
                    idx = order[i:i + self.batch_size]
                    if kernel is None:
                        fac, used_update = next_factorization(fac, circuit, g, self.max_rank)
                        low_rank += int(used_update)
                    try:
                        g, bl, cos = self._step(circuit, g, mask, X[idx], Y[idx], lr, fac, kernel)
                    except _errors.KirchnetError as exc:  # say where training stopped
                        raise _at_step(exc, epoch, step) from exc
                    batch_losses.append(bl)
                    cosines.append(cos)
                    self._call("on_step_end", {"epoch": epoch, "step": step, "conductances": g,
                                               "batch_loss": bl, "lr": lr, "tunable": mask})
                    if self.stop_training:
                        complete = i + self.batch_size >= n
                        break
                fac = None  # the next epoch starts from a fresh factorization (exact resume)
                metrics = (epoch % self.evaluate_every == 0 or epoch == self.epochs or self.stop_training)
                rec = {"epoch": epoch, "lr": lr,
                       "batch_loss": batch_losses[0] if len(batch_losses) == 1 else float(np.mean(batch_losses)),
                       **(self._evaluate(circuit, g, X, Y, Xv, Yv, lambda: circuit.factorize(g), kernel)
                          if metrics else {})}
                if self.cosine:
                    rec["cosine"] = float(np.nanmean(cosines)) if np.isfinite(cosines).any() else math.nan
                rec["low_rank_updates"] = low_rank
                if metrics:
                    rec.update(saturation(g, epoch))
                history.append(rec)
                self._call("on_epoch_end", epoch, rec)  # may set stop_training
                if complete and self.checkpoint_dir is not None and (
                        epoch % self.checkpoint_every == 0 or epoch == self.epochs or self.stop_training):
                    self.save_checkpoint(epoch, g, history)
                if self.history_dir is not None:
                    os.makedirs(self.history_dir, exist_ok=True)
                    history.to_json(os.path.join(self.history_dir, "history.json"))
                    history.to_csv(os.path.join(self.history_dir, "history.csv"))
                timings.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.4g}")
                if self.stop_training:
                    break
        finally:
            if bar is not None:
                bar.close()
        result = TrainResult(g, history, mask, epochs_run=len(history) - 1,
                             stopped=self.stop_training, timings=timings)
        self._call("on_train_end", result)
        return result
