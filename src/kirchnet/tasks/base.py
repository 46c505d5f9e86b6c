"""The :class:`Task` container, input encoding, class patterns and terminal placement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_finite_array, check_int, check_positive
from ..circuit import Circuit
from ..errors import BoundaryConditionError, ParameterError, ShapeError
from ..losses import get_loss
from ..network import Network

DECISIONS = ("argmax", "nearest")


# --------------------------------------------------------------------- encoding
def scale_features(x_train, x_test=None, low=None, high=None):
    """Scale features to ``[-1, 1]``: ``x_s = 2 (x - low) / (high - low) - 1``.

    ``low``/``high`` default to the per-feature minimum/maximum of ``x_train`` (the
    test set is scaled with the training statistics, so it may leave ``[-1, 1]``).
    Constant features (``high == low``) map to 0. Returns ``(x_train_s, x_test_s)``.
    """
    xtr = check_finite_array(x_train, "x_train", fix="remove or impute them first")
    if x_test is not None:
        check_finite_array(x_test, "x_test", fix="remove or impute them first")
    lo = xtr.min(axis=0) if low is None else np.broadcast_to(np.asarray(low, float), xtr.shape[1:])
    hi = xtr.max(axis=0) if high is None else np.broadcast_to(np.asarray(high, float), xtr.shape[1:])
    span = hi - lo
    const = span <= 0
    span = np.where(const, 1.0, span)

    def f(x):
        s = 2.0 * (np.asarray(x, dtype=float) - lo) / span - 1.0
        return np.where(const, 0.0, s)

    return f(xtr), (None if x_test is None else f(x_test))


def encode_inputs(x_scaled, voltage: float = 1.0, signed: bool = True, bias: bool = True):
    """Input voltages ``[+v x, -v x, +v, -v]`` (the last blocks if ``signed`` / ``bias``).

    ``x_scaled`` (b, d) in about ``[-1, 1]``; returns (b, d * (1 + signed) + 2 * bias).
    """
    x = check_positive(voltage, "voltage") * check_finite_array(x_scaled, "x_scaled")
    parts = [x]
    if signed:
        parts.append(-x)
    if bias:
        ones = np.full((x.shape[0], 1), float(voltage))
        parts += [ones, -ones]
    return np.concatenate(parts, axis=1)


def class_patterns(n_classes: int, low: float = 0.0, high: float = 0.5) -> np.ndarray:
    """Target output voltages per class: ``p_c = low + (high - low) e_c`` (n_classes, n_classes)."""
    n_classes = check_int(n_classes, "n_classes", 1)
    return low + (high - low) * np.eye(n_classes)


# ------------------------------------------------------------------- placement
def place_terminals(network: Network, n_inputs: int, n_outputs: int):
    """Deterministic ``(ground, inputs, outputs)`` for a network.

    With stored positions, inputs are the ``n_inputs`` nodes of smallest x coordinate
    and outputs the ``n_outputs`` nodes of largest x (ties broken by closeness to the
    median y, then node id). Without positions the axis is graph distance: ``a`` is the
    node farthest from node 0, ``b`` the node farthest from ``a``, and nodes are sorted
    by ``d(a) - d(b)``. The ground is the remaining node that maximizes the hop
    distance to the nearest input or output (ties: most balanced, then lowest id).
    """
    n = network.n_nodes
    n_inputs, n_outputs = check_int(n_inputs, "n_inputs"), check_int(n_outputs, "n_outputs")
    if n_inputs < 1 or n_outputs < 1:
        raise BoundaryConditionError(f"need at least one input and one output, got {n_inputs}, {n_outputs}")
    if n_inputs + n_outputs + 1 > n:
        raise BoundaryConditionError(
            f"the network has {n} nodes but {n_inputs} inputs + {n_outputs} outputs + 1 ground "
            f"= {n_inputs + n_outputs + 1} terminals are needed; use a larger network"
        )
    if network.positions is not None:
        pos = np.asarray(network.positions, dtype=float)
        key = pos[:, 0]
        second = np.abs(pos[:, 1] - np.median(pos[:, 1]))
    else:
        d0 = network.hop_distances([0])
        a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
        da = network.hop_distances([a])
        b = int(np.argmax(np.where(np.isfinite(da), da, -1)))
        db = network.hop_distances([b])
        key = np.nan_to_num(da - db, nan=0.0, posinf=0.0, neginf=0.0)
        second = np.zeros(n)
    ids = np.arange(n)
    inputs = np.lexsort((ids, second, key))[:n_inputs]
    rest = np.setdiff1d(ids, inputs)
    outputs = rest[np.lexsort((rest, second[rest], -key[rest]))][:n_outputs]
    rest = np.setdiff1d(rest, outputs)
    d_in = network.hop_distances(inputs)[rest]
    d_out = network.hop_distances(outputs)[rest]
    d_in = np.where(np.isfinite(d_in), d_in, -1)
    d_out = np.where(np.isfinite(d_out), d_out, -1)
    order = np.lexsort((rest, np.abs(d_in - d_out), -np.minimum(d_in, d_out)))
    ground = int(rest[order[0]])
    return ground, [int(v) for v in inputs], [int(v) for v in outputs]


# ------------------------------------------------------------------------ Task
@dataclass(frozen=True, eq=False)
class Task:
    """A supervised task for a resistive network.

    ``x_*`` (b, n_inputs) are input voltages; ``y_*`` are the targets the loss sees
    (target voltages (b, n_outputs) for ``loss="mse"``, integer labels for
    ``"cross_entropy"``). Classification tasks also carry ``labels_*`` and, for the
    squared error, the class ``patterns`` (n_classes, n_outputs).
    ``terminals = (ground, inputs, outputs)`` is set when the task fixes them for its
    ``network`` (teacher-student, allostery); otherwise :func:`place_terminals` chooses.
    """

    name: str
    kind: str  # "regression" | "classification"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    patterns: np.ndarray | None = None
    loss: Any = "mse"  # a loss name or a kirchnet Loss instance
    decision: str = "argmax"
    terminals: tuple | None = None
    network: Network | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("regression", "classification"):
            raise ParameterError(f"kind must be 'regression' or 'classification', got {self.kind!r}")
        if self.decision not in DECISIONS:
            raise ParameterError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        for a, b, what in ((self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")):
            if np.shape(a)[0] != np.shape(b)[0]:
                raise ShapeError(f"{what}: x has {np.shape(a)[0]} samples but y has {np.shape(b)[0]}")

    @property
    def n_inputs(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    def circuit(self, network: Network | None = None, backend: str = "auto") -> Circuit:
        """The :class:`Circuit` of this task on ``network`` (default: the task's own)."""
        net = network if network is not None else self.network
        if net is None:
            raise BoundaryConditionError(f"task {self.name!r} needs a network to build its circuit")
        if self.terminals is not None and (self.network is None or net is self.network):
            ground, inputs, outputs = self.terminals
        else:
            if self.terminals is not None:
                raise BoundaryConditionError(
                    f"task {self.name!r} was generated for its own network; build it again for a new one")
            ground, inputs, outputs = place_terminals(net, self.n_inputs, self.n_outputs)
        if net.labels is not None:  # terminals are internal ids; Circuit reads the stored labels
            lab = net.labels
            ground, inputs, outputs = lab[ground], [lab[v] for v in inputs], [lab[v] for v in outputs]
        return Circuit(net, ground=ground, inputs=inputs, outputs=outputs, backend=backend)

    def predict_labels(self, outputs) -> np.ndarray:
        """Class decision: ``argmax_k o_k`` or the nearest class pattern (see module docs)."""
        o = np.atleast_2d(np.asarray(outputs, dtype=float))
        if self.decision == "nearest" and self.patterns is not None:
            d2 = ((o[:, None, :] - self.patterns[None, :, :]) ** 2).sum(axis=2)
            return np.argmin(d2, axis=1)
        return np.argmax(o, axis=1)

    def accuracy(self, outputs, labels) -> float:
        """Fraction of samples whose predicted class equals ``labels``."""
        return float(np.mean(self.predict_labels(outputs) == np.asarray(labels)))

    def evaluate(self, circuit: Circuit, conductances, factorization=None) -> dict[str, float]:
        """Train/test loss (and accuracy) at ``conductances`` with one factorization."""
        fac = circuit.factorization_for(conductances, factorization)
        loss = get_loss(self.loss)
        out: dict[str, float] = {}
        for split, x, y, lab in (("train", self.x_train, self.y_train, self.labels_train),
                                 ("test", self.x_test, self.y_test, self.labels_test)):
            if len(x) == 0:
                continue
            o = fac.solve(x).outputs
            out[f"{split}_loss"] = float(loss(o, y)[0].mean())
            if self.is_classification and lab is not None:
                out[f"{split}_accuracy"] = self.accuracy(o, lab)
        return out
