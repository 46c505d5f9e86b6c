"""scikit-learn estimators backed by a trained linear resistive network.

``ResistiveRegressor`` and ``ResistiveClassifier`` follow the scikit-learn API (``fit``,
``predict``, ``score``, ``get_params``/``set_params``; ``clone``, ``Pipeline`` and
``GridSearchCV`` work). Training is :class:`kirchnet.training.Trainer` with any rule
(default :class:`~kirchnet.rules.Analytical`, the exact gradient).

**Data to voltages.** Features are standardized (``z = (x - mean) / std``, fitted on the
training set). **Default circuit** (``circuit=None``): with ``hidden=0`` (the default) a
crossbar (:func:`default_circuit`) from an input layer to one output node per target
(regression) or per class (classification). ``hidden=H`` (an int) or ``hidden=(H1, H2, ...)``
builds a **deep resistive network** (:mod:`kirchnet.drn`, ``hidden_kind="drn"``, the default):
inputs ``gain (z, -z)``, dense conductances between consecutive layers, every hidden node tied
to ground by an ideal diode (half bounded below by 0, half above: ReLU-like units), two bias
sources at ``+drn_bias`` and ``-drn_bias`` tied to every non-input node, linear outputs read as
potentials (:func:`kirchnet.drn.deep_resistive_circuit`; the diodes' unit scales are never
trained). A passive linear hidden layer adds parameters but no expressivity (every free
potential stays a weighted average of the inputs); it is still available as
``hidden_kind="linear"`` (a layered linear network input -> H1 -> ... -> outputs, inputs as
the crossbar's). The crossbar's input layer holds the ground and ``2 d + 2`` clamped nodes driven by
``[z, -z, +1, -1]`` (:func:`augment_inputs`): a resistive network is linear in its input
voltages and every free potential is a convex combination of the clamped ones, so the
sign-flipped copies and the two bias rails let it represent ``o = C z + b`` with mixed
signs (``||C||_1 + |b| < 1`` per output). A user circuit receives ``z`` directly
(``circuit.n_inputs == n_features``).

**Regression targets** (default circuit) are centred and divided by
``s = max(2 ||w||_1, std(y))`` per target, ``w`` the least-squares coefficients on ``z``, so
that a linear (realizable) target lies well inside what the network can reach;
predictions are mapped back. A user circuit is trained on the targets as given.

**Classification**: one output node per class, decision ``argmax`` of the output
voltages. ``loss="cross_entropy"`` (default) trains softmax cross-entropy with the
voltages as logits divided by ``temperature``; ``loss="mse"`` trains
``1/2 ||o - 0.5 onehot(y)||^2`` (voltages cannot exceed the 1 V bias rails).
``predict_proba = softmax(o / temperature)`` with the temperature that trained.

**The estimator's loss is the training loss.** ``rule`` is None (the exact gradient), a
rule name of the TOML config (``"analytical"``, ``"ep"``, ``"gep"``, ``"cl"``, ``"acl"``,
``"insitu"``, ``"finite_difference"``), a ``[rule]`` table as a dict (``{"name": "cl",
"eta": 0.05}``; defaults from :mod:`kirchnet.defaults`) or a :class:`~kirchnet.rules.Rule`.
Every rule is trained on the estimator's loss (``loss`` and ``temperature``): a rule
instance is copied and given it; a rule instance that carries another non-default loss
(e.g. ``CrossEntropy(0.05)`` with ``temperature=0.1``, or cross-entropy in the
regressor) is refused with a :class:`~kirchnet.errors.ConfigError`.

**Tunable edges** (``tunable``): None (all), the config's forms ``"all"``,
``"random:F"``, ``"inputs:F"``, ``"outputs:F"`` (the fraction ``F`` of the edges, at random
or nearest the inputs / outputs; see :func:`kirchnet.experiments.run.build_mask`) or a
``[tunable]`` table as a dict, a float fraction, a boolean mask or edge indices, or an
object with ``.mask(circuit)`` (:mod:`kirchnet.partial`).

**Keeping a trained estimator**: it pickles; :meth:`export_circuit` returns a
:class:`kirchnet.Saved` (circuit, conductances, history, and the input / output mapping in
``metadata``) and :meth:`save` writes it with :func:`kirchnet.save`.

**Initial conductances**: ``init_conductance * exp(U(-0.5, 0.5))`` per edge, seeded by
``random_state`` (the spread breaks the symmetry between hidden nodes).
"""

from __future__ import annotations

import copy

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import defaults as D
from ._validation import check_int, check_positive, check_real
from .circuit import Circuit
from .errors import ConfigError, ParameterError
from .losses import CrossEntropy, Loss, SquaredError
from .rules.base import Analytical, Rule
from .topologies import layered
from .training import Trainer
from ._interrupt import reraises_ctrl_c

__all__ = ["ResistiveRegressor", "ResistiveClassifier", "default_circuit", "augment_inputs"]

_INIT_SPREAD = 0.5
#: saturation warning threshold of the estimators' Trainer: in the signed crossbar one edge of
#: a (+z, -z) input pair often switches off (to the 1e-6 S floor) by design, so the
#: estimators warn only when more than half of the tunable edges sit at a bound
#: (``history_["n_at_lower"]`` / ``["n_at_upper"]`` always hold the counts)
_SATURATION_WARNING = 0.5


def augment_inputs(z: np.ndarray) -> np.ndarray:
    """``[z, -z, +1, -1]`` (n, 2 d + 2): the input voltages of the default circuit."""
    z = np.asarray(z, dtype=float)
    ones = np.ones((z.shape[0], 1))
    return np.hstack([z, -z, ones, -ones])


def default_circuit(n_features: int, n_outputs: int, hidden=0, backend: str = "auto") -> Circuit:
    """Crossbar (``hidden=0``) or linear layered network (``hidden`` an int or a tuple of
    layer sizes) for ``n_features`` inputs and ``n_outputs`` (the ``hidden_kind="linear"``
    circuit of the estimators).

    Layer 0: node 0 is the ground, nodes ``1 .. 2 n_features + 2`` are the inputs
    (driven by :func:`augment_inputs`); optional hidden layers; last layer: the outputs.
    Consecutive layers are completely connected.
    """
    n_in = 2 * int(n_features) + 2
    hidden = [int(hidden)] if np.isscalar(hidden) else [int(h) for h in hidden]
    sizes = [n_in + 1] + [h for h in hidden if h] + [int(n_outputs)]
    net = layered(sizes)
    n = net.n_nodes
    return Circuit(net, ground=0, inputs=list(range(1, n_in + 1)),
                   outputs=list(range(n - n_outputs, n)), backend=backend)


def _mean_std(A: np.ndarray):
    """Column mean, standard deviation and largest magnitude of ``A`` without overflow or
    underflow: computed on ``A / max|A|`` and scaled back (features of 1e300 or 1e-300 work)."""
    unit = np.max(np.abs(A), axis=0)
    unit = np.where(unit > 0, unit, 1.0)
    Au = A / unit
    return unit * Au.mean(axis=0), unit * Au.std(axis=0), unit


class _ResistiveBase(BaseEstimator):
    """Shared fitting machinery; subclasses define the loss, targets and output mapping."""

    def _hidden(self) -> tuple:
        """``hidden`` as a tuple of hidden-layer sizes (``()``: crossbar)."""
        h = self.hidden
        if isinstance(h, (tuple, list)):
            sizes = tuple(check_int(v, f"hidden[{i}]", 1) for i, v in enumerate(h))
        else:
            sizes = (check_int(h, "hidden", 0),)
        return tuple(v for v in sizes if v)

    def _check_params(self):
        # kirchnet's ParameterError is a ValueError, as scikit-learn's checks expect
        self._hidden()
        if self.hidden_kind not in ("drn", "linear"):
            raise ParameterError(f"hidden_kind must be 'drn' (deep resistive network) or 'linear', "
                                 f"got {self.hidden_kind!r}")
        check_positive(self.gain, "gain")
        check_real(self.drn_bias, "drn_bias")
        check_positive(self.init_conductance, "init_conductance")
        check_int(self.epochs, "epochs", 0)
        if self.batch_size is not None:  # None: full batch
            check_int(self.batch_size, "batch_size", 1)

    def _standardize(self, X):
        # X / s - mean / s: no intermediate leaves the range of X / s (features of any scale)
        return X / self.x_scale_ - self.x_mean_ / self.x_scale_

    def _voltages(self, X):
        z = self._standardize(X)
        if getattr(self, "drn_", None) is not None:
            return self.drn_.circuit_inputs(z)
        return augment_inputs(z) if self._augment_ else z

    def input_voltages(self, X) -> np.ndarray:
        """The input voltages (n, circuit.n_inputs) the fitted circuit sees for ``X``."""
        check_is_fitted(self, "conductances_")
        return self._voltages(validate_data(self, X, reset=False))

    def _build(self, X, n_outputs, rng):
        self.x_mean_, scale, unit = _mean_std(X)
        # a feature is constant when its spread is below 1e-12 of its largest magnitude
        self.x_scale_ = np.where(scale > 1e-12 * unit, scale, np.maximum(unit, 1.0))
        self.drn_ = None
        if self.circuit is None and self._hidden() and self.hidden_kind == "drn":
            from .drn import deep_resistive_circuit

            self.drn_, circuit, g0 = deep_resistive_circuit(
                (X.shape[1],) + self._hidden() + (n_outputs,), seed=int(rng.randint(2 ** 31 - 1)),
                init_scale=float(self.init_conductance), gain=float(self.gain), bias=float(self.drn_bias))
            self._augment_ = False
            self.circuit_ = circuit
            return g0
        if self.circuit is None:
            circuit = default_circuit(X.shape[1], n_outputs, self._hidden())
            self._augment_ = True
        else:
            if not isinstance(self.circuit, Circuit):
                raise TypeError(f"circuit must be a kirchnet.Circuit or None, got {type(self.circuit).__name__}")
            circuit = copy.deepcopy(self.circuit)
            if circuit.n_inputs != X.shape[1]:
                raise ValueError(f"the circuit has {circuit.n_inputs} inputs but X has {X.shape[1]} features")
            if circuit.n_outputs != n_outputs:
                raise ValueError(f"the circuit has {circuit.n_outputs} outputs but the task needs {n_outputs}")
            self._augment_ = False
        self.circuit_ = circuit
        m = circuit.network.n_edges
        return float(self.init_conductance) * np.exp(rng.uniform(-_INIT_SPREAD, _INIT_SPREAD, m))

    def _make_rule(self, loss: Loss, seed: int) -> Rule:
        """The rule, trained on the estimator's ``loss`` (module docstring)."""
        rule = self.rule
        if rule is None:
            return Analytical(loss)
        if isinstance(rule, (str, dict)):
            from pydantic import ValidationError

            from .config import RuleConfig, format_validation_error
            from .experiments.run import build_rule

            spec = {"name": rule} if isinstance(rule, str) else dict(rule)
            try:
                cfg = RuleConfig.model_validate(spec)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, "rule").replace("  ", "  rule.")) from None
            return build_rule(cfg, loss=loss, seed=seed)
        if not isinstance(rule, Rule) and not callable(getattr(rule, "estimate", None)):
            raise TypeError(f"rule must be None, a rule name ({', '.join(D.RULE_NAMES)}), a dict like the "
                            f"config's [rule] table or a kirchnet Rule, got {type(rule).__name__}")
        rule = copy.deepcopy(rule)
        own = getattr(rule, "loss", None)
        if own is not None and own != loss and own != SquaredError():
            raise ConfigError(
                f"rule {type(rule).__name__} carries the loss {own!r} but the estimator trains and reports "
                f"{loss!r} (loss={getattr(self, 'loss', 'mse')!r}"
                f"{', temperature=%r' % self.temperature if isinstance(loss, CrossEntropy) else ''}); build the "
                f"rule without a loss (the estimator sets it) or set the estimator's loss / temperature to match")
        target = rule
        while target is not None:  # e.g. partial.Masked wraps another rule
            if hasattr(target, "loss"):
                target.loss = loss
            target = getattr(target, "rule", None) if isinstance(getattr(target, "rule", None), Rule) else None
        return rule

    def _make_tunable(self, seed: int):
        """The ``tunable`` argument of the Trainer (module docstring)."""
        t = self.tunable
        if isinstance(t, (str, dict)):
            from pydantic import ValidationError

            from .config import TunableConfig, format_validation_error
            from .experiments.run import build_mask

            if isinstance(t, str):
                mode, _, frac = t.partition(":")
                if mode not in ("all", "random", "inputs", "outputs") or (mode != "all" and not frac):
                    raise ConfigError(f"tunable={t!r}: use 'all', 'random:F', 'inputs:F' or 'outputs:F' with a "
                                      f"fraction F in (0, 1], e.g. 'random:0.5'")
                spec = {"mode": mode} if mode == "all" else {"mode": mode, "fraction": frac}
            else:
                spec = dict(t)
            try:
                cfg = TunableConfig.model_validate(spec)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc, f"tunable={t!r}")) from None
            return build_mask(cfg, self.circuit_, seed=seed)
        return t

    def _train(self, X, T, loss, rng, g0):
        seed = int(rng.randint(2 ** 31 - 1))
        rule = self._make_rule(loss, seed)
        tunable = self._make_tunable(seed)
        if tunable is None and getattr(self, "drn_", None) is not None:  # never the diodes' scales
            tunable = np.arange(g0.size) < self.drn_.params.size
        trainer = Trainer(rule, copy.deepcopy(self.optimizer), lr=self.lr,
                          epochs=int(self.epochs), batch_size=None if self.batch_size is None else min(int(self.batch_size), len(X)),
                          seed=seed, schedule=copy.deepcopy(self.schedule),
                          tunable=tunable, constraints=copy.deepcopy(self.constraints),
                          parametrization=self.parametrization, progress=bool(self.verbose),
                          saturation_warning=_SATURATION_WARNING)
        result = trainer.fit(self.circuit_, g0, self._voltages(X), T)
        self.conductances_ = result.conductances
        self.history_ = result.history
        self.tunable_ = result.tunable
        self.rule_ = rule
        self.loss_ = loss
        return self

    def _outputs(self, X):
        check_is_fitted(self, "conductances_")
        X = validate_data(self, X, reset=False)
        return self.circuit_.solve(self.conductances_, self._voltages(X)).outputs

    def _mapping(self) -> dict:
        out = {"augment_inputs": bool(self._augment_), "x_mean": self.x_mean_, "x_scale": self.x_scale_}
        if getattr(self, "drn_", None) is not None:  # inputs drn.circuit_inputs(z)
            sp = self.drn_.spec
            out["drn"] = {"layers": list(sp.layers), "gain": sp.gain, "bias": sp.bias,
                          "diode_split": sp.diode_split}
        return out

    def export_circuit(self):
        """The trained circuit as a :class:`kirchnet.Saved`: ``circuit``, ``conductances``,
        ``history``, ``tunable`` and, in ``metadata``, the estimator class, its parameters
        (``repr``), the loss and the mapping from data to voltages (``x_mean``, ``x_scale``,
        ``augment_inputs``: inputs ``[z, -z, +1, -1]`` with ``z = (x - x_mean) / x_scale``) and
        back (``y_mean``, ``y_scale`` or ``classes``), so that
        ``circuit.solve(conductances, est.input_voltages(X)).outputs`` are the fitted outputs."""
        from .persist import Saved

        check_is_fitted(self, "conductances_")
        meta = {"estimator": type(self).__name__, "params": repr(self), "loss": repr(self.loss_),
                **{k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in self._mapping().items()}}
        return Saved(self.circuit_, np.array(self.conductances_), None, self.history_.to_dicts(), meta,
                     np.array(self.tunable_))

    def save(self, path):
        """Write :meth:`export_circuit` with :func:`kirchnet.save` (a directory or ``.zip``)."""
        from .persist import save

        s = self.export_circuit()
        return save(path, s.circuit, s.conductances, history=s.history, metadata=s.metadata, tunable=s.tunable)


class ResistiveRegressor(RegressorMixin, _ResistiveBase):
    """Regression with a trained resistive network (see the module docstring), squared error.

    Parameters
    ----------
    circuit: a :class:`kirchnet.Circuit` with ``n_features`` inputs and one output per target
        (regression) or class, or None for :func:`default_circuit`.
    rule: None (the exact gradient), a rule name (``"analytical"``, ``"ep"``, ``"gep"``,
        ``"cl"``, ``"acl"``, ``"insitu"``, ``"finite_difference"``), a dict like the config's
        ``[rule]`` table, or a :class:`~kirchnet.rules.Rule`; trained on the estimator's loss.
    hidden: hidden units of the default circuit: 0 (a crossbar), an int (one hidden layer) or a
        tuple (one entry per layer), e.g. ``hidden=(64, 32)``; a deep resistive network
        (ideal-diode ReLU units, see the module docstring) unless ``hidden_kind="linear"``.
    hidden_kind: ``"drn"`` (default) or ``"linear"`` (passive linear hidden layers).
    gain, drn_bias: the DRN's input gain (inputs ``gain (z, -z)`` on standardized features)
        and bias-source voltage (``+-drn_bias``; 0: no bias sources).
    optimizer, lr, epochs, batch_size, schedule: as in :class:`~kirchnet.training.Trainer`
        (defaults from :mod:`kirchnet.defaults`: adam, 0.05, 40, 32).
    init_conductance: scale of the initial conductances.
    tunable: which edges learn (module docstring: ``"random:0.5"``, ``"inputs:0.3"``, masks...).
    constraints, parametrization: device constraints and the optimized parameter (g or r).
    random_state: seed of the initial conductances, of the shuffling and of random masks.
    verbose: progress bar.
    Estimator checks: all of scikit-learn's checks pass (``tests/test_estimators.py``);
    none is skipped.
    """

    def __init__(self, circuit=None, rule=None, hidden=0, optimizer=D.OPTIMIZER, lr=D.LR,
                 epochs=D.EPOCHS, batch_size=D.BATCH_SIZE, schedule=None, init_conductance=1.0, tunable=None,
                 constraints=None, parametrization="conductance", random_state=0, verbose=False,
                 hidden_kind="drn", gain=1.0, drn_bias=1.0):
        self.circuit = circuit
        self.rule = rule
        self.hidden = hidden
        self.hidden_kind = hidden_kind
        self.gain = gain
        self.drn_bias = drn_bias
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.schedule = schedule
        self.init_conductance = init_conductance
        self.tunable = tunable
        self.constraints = constraints
        self.parametrization = parametrization
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @reraises_ctrl_c
    def fit(self, X, y):
        """Train on ``X`` (n, d) and ``y`` (n,) or (n, n_targets)."""
        self._check_params()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
        Y = np.asarray(y, dtype=float)
        self._y_1d_ = Y.ndim == 1
        Y = Y.reshape(len(Y), -1)
        rng = check_random_state(self.random_state)
        g0 = self._build(X, Y.shape[1], rng)
        self.y_mean_, _, _ = _mean_std(Y)
        Yc = Y - self.y_mean_
        if self.circuit is None:
            _, yc_std, y_unit = _mean_std(Yc)  # least squares on Yc / max|Yc|: no overflow
            w = np.linalg.lstsq(self._standardize(X), Yc / y_unit, rcond=None)[0] * y_unit
            s = np.maximum(2.0 * np.abs(w).sum(axis=0), yc_std)
            self.y_scale_ = np.where(s > 1e-12 * np.maximum(1.0, np.abs(self.y_mean_)), s, 1.0)
        else:  # a user circuit is trained on the targets as given
            self.y_mean_ = np.zeros(Y.shape[1])
            self.y_scale_ = np.ones(Y.shape[1])
            Yc = Y
        self.n_outputs_ = Y.shape[1]
        return self._train(X, Yc / self.y_scale_, SquaredError(), rng, g0)

    def _mapping(self):
        return {**super()._mapping(), "y_mean": self.y_mean_, "y_scale": self.y_scale_}

    def predict(self, X):
        """Output voltages mapped back to target units: ``o * s + mean``."""
        pred = self._outputs(X) * self.y_scale_ + self.y_mean_
        return pred[:, 0] if self._y_1d_ else pred


class ResistiveClassifier(ClassifierMixin, _ResistiveBase):
    """Classification with one output node per class; decision ``argmax`` of the outputs.

    Parameters
    ----------
    loss: ``"cross_entropy"`` (default; logits ``o / temperature``) or ``"mse"`` (on 0.5-scaled
        one-hot targets): the loss every rule trains (module docstring).
    temperature: cross-entropy temperature (default :data:`kirchnet.defaults.TEMPERATURE`);
        ``predict_proba`` uses the one that trained.
    circuit: a :class:`kirchnet.Circuit` with ``n_features`` inputs and one output per target
        (regression) or class, or None for :func:`default_circuit`.
    rule: None (the exact gradient), a rule name (``"analytical"``, ``"ep"``, ``"gep"``,
        ``"cl"``, ``"acl"``, ``"insitu"``, ``"finite_difference"``), a dict like the config's
        ``[rule]`` table, or a :class:`~kirchnet.rules.Rule`; trained on the estimator's loss.
    hidden: hidden units of the default circuit: 0 (a crossbar), an int (one hidden layer) or a
        tuple (one entry per layer), e.g. ``hidden=(64, 32)``; a deep resistive network
        (ideal-diode ReLU units, see the module docstring) unless ``hidden_kind="linear"``.
    hidden_kind: ``"drn"`` (default) or ``"linear"`` (passive linear hidden layers).
    gain, drn_bias: the DRN's input gain (inputs ``gain (z, -z)`` on standardized features)
        and bias-source voltage (``+-drn_bias``; 0: no bias sources).
    optimizer, lr, epochs, batch_size, schedule: as in :class:`~kirchnet.training.Trainer`
        (defaults from :mod:`kirchnet.defaults`: adam, 0.05, 40, 32).
    init_conductance: scale of the initial conductances.
    tunable: which edges learn (module docstring: ``"random:0.5"``, ``"inputs:0.3"``, masks...).
    constraints, parametrization: device constraints and the optimized parameter (g or r).
    random_state: seed of the initial conductances, of the shuffling and of random masks.
    verbose: progress bar.
    Estimator checks: all of scikit-learn's checks pass (``tests/test_estimators.py``);
    none is skipped.
    """

    def __init__(self, circuit=None, rule=None, loss="cross_entropy", temperature=D.TEMPERATURE, hidden=0,
                 optimizer=D.OPTIMIZER, lr=D.LR, epochs=D.EPOCHS, batch_size=D.BATCH_SIZE, schedule=None,
                 init_conductance=1.0, tunable=None, constraints=None, parametrization="conductance",
                 random_state=0, verbose=False, hidden_kind="drn", gain=1.0, drn_bias=1.0):
        self.circuit = circuit
        self.rule = rule
        self.loss = loss
        self.temperature = temperature
        self.hidden = hidden
        self.hidden_kind = hidden_kind
        self.gain = gain
        self.drn_bias = drn_bias
        self.optimizer = optimizer
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.schedule = schedule
        self.init_conductance = init_conductance
        self.tunable = tunable
        self.constraints = constraints
        self.parametrization = parametrization
        self.random_state = random_state
        self.verbose = verbose

    def _loss(self):
        if self.loss in ("cross_entropy", "ce"):
            if not float(self.temperature) > 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
            return CrossEntropy(float(self.temperature))
        if self.loss in ("mse", "squared_error"):
            return SquaredError()
        raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {self.loss!r}")

    @reraises_ctrl_c
    def fit(self, X, y):
        """Train on ``X`` (n, d) and class labels ``y`` (n,)."""
        self._check_params()
        loss = self._loss()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        enc = LabelEncoder()
        idx = enc.fit_transform(y)
        self.classes_ = enc.classes_
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"ResistiveClassifier needs samples of at least 2 classes; the data has "
                             f"1 class ({self.classes_[0]!r})")
        rng = check_random_state(self.random_state)
        g0 = self._build(X, k, rng)
        T = idx if isinstance(loss, CrossEntropy) else 0.5 * np.eye(k)[idx]
        return self._train(X, T, loss, rng, g0)

    def _mapping(self):
        return {**super()._mapping(), "classes": self.classes_.tolist()}

    def decision_function(self, X):
        """Output voltages (n, n_classes); for two classes ``o_1 - o_0`` (n,)."""
        o = self._outputs(X)
        return o[:, 1] - o[:, 0] if o.shape[1] == 2 else o

    def predict_proba(self, X):
        """``softmax(o / T)`` (n, n_classes), ``T`` the temperature of the trained cross-entropy
        (for ``loss="mse"``: the ``temperature`` parameter)."""
        o = self._outputs(X)
        t = self.loss_.temperature if isinstance(self.loss_, CrossEntropy) else float(self.temperature)
        return softmax(o / t, axis=1)

    def predict(self, X):
        """The class whose output node has the highest voltage."""
        o = self._outputs(X)
        return self.classes_[np.argmax(o, axis=1)]
