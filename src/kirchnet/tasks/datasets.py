"""Task factories: teacher-student regression, Iris, digits (8x8), node allostery."""

from __future__ import annotations

import numpy as np

from .. import defaults as D
from .._validation import check_choice, check_int, check_positive, check_real, check_seed
from ..losses import CrossEntropy
from ..errors import BoundaryConditionError, ParameterError
from ..network import Network
from .base import Task, class_patterns, encode_inputs, place_terminals, scale_features


def _split(n: int, test_fraction: float, rng: np.random.Generator, labels=None):
    """Seeded (stratified when ``labels`` are given) train/test index split."""
    check_real(test_fraction, "test_fraction", low=0.0, high=1.0, high_open=True)
    if labels is None:
        perm = rng.permutation(n)
        n_test = int(round(test_fraction * n))
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    tr, te = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * idx.size))
        te.append(idx[:k]); tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


def teacher_student(network: Network, n_inputs: int = 3, n_outputs: int = 2, n_train: int = 64,
                    n_test: int = 64, voltage: float = 1.0, g_range=(0.5, 2.0), noise: float = 0.0,
                    seed: int = 0) -> Task:
    """Realizable regression: targets are the outputs of the same circuit at hidden
    ("teacher") conductances ``g* ~ U(g_range)``; inputs ``x ~ U(-v, v)``;
    optional Gaussian target noise (std ``noise``). ``info["teacher"]`` holds ``g*``.
    """
    n_inputs, n_outputs = check_int(n_inputs, "n_inputs", 1), check_int(n_outputs, "n_outputs", 1)
    n_train, n_test = check_int(n_train, "n_train", 1), check_int(n_test, "n_test", 0)
    voltage, noise = check_positive(voltage, "voltage"), check_real(noise, "noise", low=0.0)
    g_range = _check_range(g_range, "g_range", positive=True)
    rng = np.random.default_rng(check_seed(seed))
    ground, inputs, outputs = place_terminals(network, n_inputs, n_outputs)
    task = Task("teacher_student", "regression", np.zeros((0, n_inputs)), np.zeros((0, n_outputs)),
                np.zeros((0, n_inputs)), np.zeros((0, n_outputs)), n_outputs,
                terminals=(ground, inputs, outputs), network=network)
    circuit = task.circuit()
    g_star = rng.uniform(g_range[0], g_range[1], network.n_edges)
    x = rng.uniform(-voltage, voltage, (n_train + n_test, n_inputs))
    y = circuit.factorize(g_star).solve(x).outputs
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    return Task("teacher_student", "regression", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                n_outputs, terminals=(ground, inputs, outputs), network=network,
                info={"teacher": g_star, "seed": seed, "voltage": voltage})


def _check_range(pair, name: str, positive: bool = False) -> tuple[float, float]:
    """``(low, high)``: two finite numbers with ``low <= high`` (both > 0 if ``positive``)."""
    try:
        lo, hi = pair
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a pair (low, high), got {pair!r}") from None
    check = check_positive if positive else check_real
    lo, hi = check(lo, f"{name}[0]"), check(hi, f"{name}[1]")
    if lo > hi:
        raise ParameterError(f"{name} must satisfy low <= high, got {pair!r}; swap the two values")
    return lo, hi


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _classification(name, X, labels, n_classes, test_fraction, seed, voltage, signed, bias,
                    loss, target_low, target_high, decision, max_train, low=None, high=None,
                    network=None, temperature: float = D.TEMPERATURE) -> Task:
    voltage = check_positive(voltage, "voltage")
    signed, bias = _check_flag(signed, "signed"), _check_flag(bias, "bias")
    check_choice(loss, "loss", ("mse", "cross_entropy", "ce"))
    target_low, target_high = _check_range((target_low, target_high), "(target_low, target_high)")
    if target_low == target_high:
        raise ParameterError(f"target_low and target_high must differ (both {target_low!r}): "
                             f"the class patterns would be identical")
    check_choice(decision, "decision", ("argmax", "nearest"))
    if max_train is not None:
        max_train = check_int(max_train, "max_train", 1)
    temperature = check_positive(temperature, "temperature")
    rng = np.random.default_rng(check_seed(seed))
    tr, te = _split(X.shape[0], test_fraction, rng, labels)
    if max_train is not None and tr.size > max_train:
        tr = np.sort(rng.choice(tr, size=int(max_train), replace=False))
    xs_tr, xs_te = scale_features(X[tr], X[te], low=low, high=high)
    x_tr = encode_inputs(xs_tr, voltage, signed, bias)
    x_te = encode_inputs(xs_te, voltage, signed, bias)
    pats = class_patterns(n_classes, target_low, target_high)
    if loss == "mse":
        y_tr, y_te = pats[labels[tr]], pats[labels[te]]
    elif loss in ("cross_entropy", "ce"):
        y_tr, y_te = labels[tr], labels[te]
        loss = CrossEntropy(temperature)
    else:
        raise ParameterError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    return Task(name, "classification", x_tr, y_tr, x_te, y_te, n_classes,
                labels_train=labels[tr], labels_test=labels[te], patterns=pats, loss=loss,
                decision=decision, network=network,
                info={"seed": seed, "voltage": voltage, "signed": signed, "bias": bias,
                      "n_features": X.shape[1]})


def iris(test_fraction: float = 0.3, seed: int = 0, voltage: float = 1.0, signed: bool = True,
         bias: bool = True, loss: str = "mse", target_low: float = 0.0, target_high: float = 0.5,
         decision: str = "argmax", network: Network | None = None, temperature: float = D.TEMPERATURE) -> Task:
    """Iris (scikit-learn's bundled copy): 4 features -> 3 classes, stratified split.

    ``temperature`` scales the logits of the cross-entropy loss (``o / T``).
    """
    from sklearn.datasets import load_iris

    d = load_iris()
    return _classification("iris", d.data, d.target.astype(np.int64), 3, test_fraction, seed, voltage,
                           signed, bias, loss, target_low, target_high, decision, None, network=network,
                           temperature=temperature)


def digits(test_fraction: float = 0.3, seed: int = 0, voltage: float = 1.0, signed: bool = True,
           bias: bool = True, loss: str = "mse", target_low: float = 0.0, target_high: float = 0.5,
           decision: str = "argmax", max_train: int | None = None, network: Network | None = None,
           temperature: float = D.TEMPERATURE) -> Task:
    """Handwritten digits 8x8 (``sklearn.datasets.load_digits``): 64 pixels -> 10 classes.

    Pixels are scaled from the fixed range ``[0, 16]``; ``max_train`` subsamples the
    training split (seeded) for quick runs.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return _classification("digits", d.data, d.target.astype(np.int64), 10, test_fraction, seed,
                           voltage, signed, bias, loss, target_low, target_high, decision, max_train,
                           low=0.0, high=16.0, network=network, temperature=temperature)


def allostery(network: Network, n_sources: int = 2, n_targets: int = 2, voltage: float = 1.0,
              seed: int = 0) -> Task:
    """Node allostery (coupled-learning papers): fixed source voltages at ``n_sources``
    random nodes, desired voltages at ``n_targets`` random target nodes (ground: another
    random node). Sources ``~ U(v/2, v)``; targets ``~ U(0.2, 0.8) * min(sources)`` (inside
    the range a passive network can reach). One sample; train = test.
    """
    n_sources, n_targets = check_int(n_sources, "n_sources", 1), check_int(n_targets, "n_targets", 1)
    voltage, seed = check_positive(voltage, "voltage"), check_seed(seed)
    if n_sources + n_targets + 1 > network.n_nodes:
        raise BoundaryConditionError(
            f"allostery needs {n_sources + n_targets + 1} distinct nodes, the network has {network.n_nodes}")
    rng = np.random.default_rng(seed)
    nodes = rng.choice(network.n_nodes, size=n_sources + n_targets + 1, replace=False)
    ground, inputs, outputs = int(nodes[0]), [int(v) for v in nodes[1:1 + n_sources]], \
        [int(v) for v in nodes[1 + n_sources:]]
    x = rng.uniform(0.5 * voltage, voltage, (1, n_sources))
    y = rng.uniform(0.2, 0.8, (1, n_targets)) * x.min()
    return Task("allostery", "regression", x, y, x.copy(), y.copy(), n_targets,
                terminals=(ground, inputs, outputs), network=network, info={"seed": seed})


TASKS = {"teacher_student": teacher_student, "iris": iris, "digits": digits, "allostery": allostery}


def make_task(name: str, network: Network | None = None, **kwargs) -> Task:
    """Build a task by name (``teacher_student``, ``iris``, ``digits``, ``allostery``)."""
    if not isinstance(name, str) or name not in TASKS:
        raise ParameterError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if name in ("teacher_student", "allostery"):
        if network is None:
            raise BoundaryConditionError(f"task {name!r} needs a network")
        return TASKS[name](network, **kwargs)
    return TASKS[name](network=network, **kwargs)
