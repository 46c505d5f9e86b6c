"""Element laws: what an edge does with the voltage across it (theory.md, 6).

Every edge ``e = (a, b)`` carries a law. Its current (flowing ``a -> b``) is

    i_e = g_e phi(w_e),    w_e = u_a - u_b + s_e,

with ``g_e`` the edge's trainable scale (the conductance of a resistor, the area factor
of a diode) and ``phi`` the law's shape. A law gives, vectorized over arrays of edge
voltages (batch first):

* ``phi(w)``: the current per unit scale;
* ``dphi(w)``: the incremental conductance ``phi'(w)`` (stamped as ``g_e phi'(w_e)``
  into the tangent Laplacian of Newton steps and adjoints);
* ``Phi(w)``: the co-content, ``Phi' = phi``, ``Phi(0) = 0``. The equilibrium of a
  monotone network minimizes ``E(u) = sum_e g_e Phi(w_e) - J . u``; ``dE/dg_e = Phi(w_e)``
  is the local (Hebbian) quantity of two-phase rules;
* ``spice(name, a, b, g)``: its SPICE element card(s) (``model_card()`` for laws with a
  ``.model`` line).

Laws:

* :class:`Resistor`: ``phi(w) = w`` (the default of every edge).
* :class:`Diode`: Shockley, ``phi(w) = Is (exp(w / (n Vt)) - 1)``, anode ``a``, cathode
  ``b``; defaults are ngspice's default diode at its default temperature 27 C
  (``IS = 1e-14`` A, ``N = 1``, ``Vt = k T / q`` at 300.15 K). Overflow protection: above
  ``w_max = max_exponent * n Vt`` (default 100 n Vt, about 2.6 V, where a unit-area diode
  would carry 2.7e29 A) the exponential is continued *linearly* with the slope it has at
  ``w_max`` (``phi`` is C1, ``Phi`` C2, the law stays monotone and the energy convex). The
  continued law is the one the solvers solve exactly; below ``w_max`` it is Shockley's.
* :class:`Rectifier`: ``phi(w) = max(w, 0)``: an ideal diode in series with the edge's
  resistance ``1/g`` (piecewise linear; ``phi'`` at the kink ``w = 0`` is taken as 0).
* :class:`IdealDiode`: an edge *constraint*, not a function: ``i >= 0``, ``w <= 0``,
  ``i w = 0`` (zero drop when conducting, zero current when blocking). Its current is a
  multiplier the solver finds (``constraint = True``); ``g`` plays no role and its
  gradient is 0; ``Phi`` is 0 on the feasible set ``w <= 0``.

An :class:`ElementMap` assigns laws to edges (``{law: edge_ids}``; edges not named are
resistors) and evaluates them on all edges at once. Three-terminal elements (a
conductance controlled by a gate potential, non-symmetric Jacobian) would add
``ElementMap.symmetric = False`` and extra Jacobian entries; the solvers take the
Jacobian from the map, so the interface does not change for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np

from .errors import ParameterError, TopologyError

#: Boltzmann constant (J/K) and elementary charge (C), CODATA 2018 exact values
BOLTZMANN = 1.380649e-23
ELEMENTARY_CHARGE = 1.602176634e-19
#: ngspice's default temperature 27 C in kelvin
SPICE_TNOM = 300.15
#: thermal voltage ``k T / q`` at 27 C (25.864917 mV), computed exactly as ngspice does
#: (``CONSTKoverQ * T`` with its ``const.h`` CODATA 2014 constants k = 1.38064852e-23 J/K,
#: q = 1.6021766208e-19 C), so that a default :class:`Diode` is ngspice's default diode
#: bit for bit (its netlist card has ``N = 1`` and reads back as an equal law)
THERMAL_VOLTAGE_27C = (1.38064852e-23 / 1.6021766208e-19) * SPICE_TNOM


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a finite positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ParameterError(f"{name} must be a finite positive number, got {value!r}")
    return v


def _fmt(v: float) -> str:
    return f"{v:.17g}"


class Law:
    """Interface of an element law (module docstring). Subclasses are frozen dataclasses."""

    #: registry name used by :meth:`to_dict` / :func:`law_from_dict`
    kind: ClassVar[str] = "law"
    #: ``phi`` is linear (``phi(w) = w``): the circuit keeps the linear fast paths
    linear: ClassVar[bool] = False
    #: ``phi`` is piecewise linear (exact finite-step solutions exist)
    piecewise_linear: ClassVar[bool] = False
    #: an edge constraint with a multiplier current instead of a function ``phi``
    constraint: ClassVar[bool] = False

    def phi(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dphi(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def Phi(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def spice(self, name: str, a, b, g: float) -> str:
        raise NotImplementedError

    def model_card(self) -> str | None:
        """The ``.model`` line this law's cards refer to (``None`` if it needs none)."""
        return None

    #: voltage at which a cold start linearizes the law (SPICE's initial junction voltage)
    initial_voltage: float = 0.0
    #: highest voltage at which a warm start linearizes the law in its first Newton step
    #: (solver heuristic: a start far up an exponential has a tangent too ill-conditioned
    #: for a step in double precision)
    max_start_voltage: float = math.inf

    def max_step(self, w: np.ndarray, dw: np.ndarray) -> np.ndarray | None:
        """Largest fraction ``t`` of a Newton change ``dw`` the solver should take at ``w``
        (elementwise; ``None``: no limit). Solver heuristic only: it never changes the
        equilibrium, only how fast Newton reaches it."""
        return None

    #: the law limits its linearization voltage between Newton iterations (:meth:`limit`)
    limits: ClassVar[bool] = False

    def limit(self, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The voltage at which the next Newton iteration linearizes the law, given the one
        it used (``v``) and the voltage the linearized network just produced (``w``);
        default ``w`` (plain Newton). Solver heuristic only (SPICE's junction limiting):
        the converged state has ``v = w``, so it never changes the equilibrium."""
        return w

    def to_dict(self) -> dict:
        """``{"kind": ..., **parameters}`` (JSON-serializable; :func:`law_from_dict` inverts it)."""
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Resistor(Law):
    """``phi(w) = w``, ``phi' = 1``, ``Phi(w) = w^2 / 2``: a linear resistor of conductance ``g``."""

    kind: ClassVar[str] = "resistor"
    linear: ClassVar[bool] = True
    piecewise_linear: ClassVar[bool] = True

    def phi(self, w):
        return np.asarray(w, dtype=float)

    def dphi(self, w):
        return np.ones(np.shape(w))

    def Phi(self, w):
        w = np.asarray(w, dtype=float)
        return 0.5 * w * w

    def spice(self, name, a, b, g):
        return f"R{name} {a} {b} {_fmt(1.0 / float(g))}"


@dataclass(frozen=True)
class Diode(Law):
    """Shockley diode ``phi(w) = Is (exp(w / (n Vt)) - 1)`` (anode ``a``, cathode ``b``).

    ``g`` is the area factor. ``Phi(w) = Is (n Vt (exp(w / (n Vt)) - 1) - w)``. Above
    ``w_max = max_exponent n Vt`` the law is continued linearly (C1; module docstring).
    """

    saturation_current: float = 1e-14
    emission: float = 1.0
    thermal_voltage: float = THERMAL_VOLTAGE_27C
    max_exponent: float = 100.0

    kind: ClassVar[str] = "diode"

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _positive(f"Diode.{f.name}", getattr(self, f.name)))
        if self.max_exponent > 700:
            raise ParameterError(
                f"Diode.max_exponent must be at most 700 (exp overflows float64 beyond ~709), "
                f"got {self.max_exponent!r}")

    @property
    def nvt(self) -> float:
        """``n Vt`` (volts)."""
        return self.emission * self.thermal_voltage

    @property
    def max_voltage(self) -> float:
        """``w_max``: above it the exponential is continued linearly."""
        return self.max_exponent * self.nvt

    def phi(self, w):
        w = np.asarray(w, dtype=float)
        X, nvt, Is = self.max_exponent, self.nvt, self.saturation_current
        x = w / nvt
        xc = np.minimum(x, X)
        out = Is * np.expm1(xc)
        over = x > X
        if np.any(over):
            out = out + np.where(over, Is * math.exp(X) * (x - X), 0.0)
        return out

    def dphi(self, w):
        w = np.asarray(w, dtype=float)
        nvt = self.nvt
        return (self.saturation_current / nvt) * np.exp(np.minimum(w / nvt, self.max_exponent))

    def Phi(self, w):
        w = np.asarray(w, dtype=float)
        X, nvt, Is = self.max_exponent, self.nvt, self.saturation_current
        x = w / nvt
        xc = np.minimum(x, X)
        # Is (nVt expm1(x) - w), written as Is nVt (expm1(x) - x) to avoid cancellation
        out = Is * nvt * (np.expm1(xc) - xc)
        over = x > X
        if np.any(over):
            d = np.where(over, x - X, 0.0)
            out = out + Is * nvt * (math.expm1(X) * d + 0.5 * math.exp(X) * d * d)
        return out

    @property
    def initial_voltage(self) -> float:
        """Cold starts linearize the diode at :attr:`critical_voltage` (as SPICE does)."""
        return self.critical_voltage

    #: a warm start linearizes the diode at most this many ``n Vt`` above ``vcrit``
    start_headroom: ClassVar[float] = 20.0

    @property
    def max_start_voltage(self) -> float:
        """``vcrit + 20 n Vt``: the diode then carries ``e^20`` (5e8) times its current at
        ``vcrit``, far above any operating point of a sensible circuit; a warm start from
        another operating point (new inputs) can put a diode volts forward, where the
        tangent's weights span 40 decades and neither LAPACK's nor the envelope's Cholesky
        gives a step with a correct digit (the two then wander apart)."""
        return self.critical_voltage + self.start_headroom * self.nvt

    @property
    def critical_voltage(self) -> float:
        """SPICE's ``vcrit = n Vt ln(n Vt / (sqrt(2) Is))``: where the exponential takes over."""
        return self.nvt * math.log(self.nvt / (math.sqrt(2.0) * self.saturation_current))

    def max_step(self, w, dw):
        """Forward voltage may grow at most ``10 n Vt`` beyond ``max(w, vcrit)`` per Newton
        step (the current by at most ``e^10``): without it one diode pushed far forward
        needs one iteration per ``n Vt`` to come back."""
        lim = np.maximum(w, self.critical_voltage) + 10.0 * self.nvt
        over = (dw > 0) & (w + dw > lim)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(over, (lim - w) / np.where(over, dw, 1.0), np.inf)

    limits: ClassVar[bool] = True
    #: a stiff forward diode steps down at most this many ``n Vt`` per Newton iteration
    max_descent: ClassVar[float] = 5.0
    #: ... and downward steps smaller than this many ``n Vt`` are plain Newton steps
    min_descent: ClassVar[float] = 0.01

    def limit(self, v, w):
        """Junction limiting, SPICE's rule upward and its mirror downward.

        Upward (Nagel's SPICE2 rule): a voltage ``w`` above :attr:`critical_voltage` that
        moved more than ``2 n Vt`` from the last linearization voltage ``v`` is replaced by
        ``v + n Vt ln(1 + (w - v) / (n Vt))`` if ``v > 0`` (the voltage at which the diode
        carries the current its linearization at ``v`` predicted: Newton on the inverse,
        logarithmic law; ``vcrit`` when the argument is not positive), else by
        ``n Vt ln(w / (n Vt))``.

        Downward, from a forward linearization ``v > 0``: the same logarithmic step
        ``v + n Vt ln(max(1 + (w - v) / (n Vt), e^-K))`` with ``K = max_descent``. Newton on
        the exponential from above (a stiff diode fed by the rest of the network) moves
        down by less than ``n Vt`` per iteration; the logarithmic step lands where the
        predicted current is carried, and where the linear model predicts a reverse current
        (argument <= 0) it descends ``K n Vt``. Steps below ``min_descent n Vt`` are left as
        they are (plain Newton near convergence)."""
        v, w = np.asarray(v, dtype=float), np.asarray(w, dtype=float)
        nvt, vcrit = self.nvt, self.critical_voltage
        jump = (w > vcrit) & (np.abs(w - v) > 2.0 * nvt)
        down = (w < v - self.min_descent * nvt) & (v > 0) & ~jump
        if not np.any(jump | down):
            return w
        arg = 1.0 + (w - v) / nvt
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(v > 0, np.where(arg > 0, v + nvt * np.log(np.where(arg > 0, arg, 1.0)), vcrit),
                          nvt * np.log(np.where(w > 0, w, nvt) / nvt))
            descent = v + nvt * np.log(np.maximum(arg, math.exp(-self.max_descent)))
        return np.where(jump, up, np.where(down, descent, w))

    @property
    def model_name(self) -> str:
        return f"KN_D_{abs(hash((self.saturation_current, self.emission))) % 10**8:08d}"

    def model_card(self):
        return f".model {self.model_name} D(IS={_fmt(self.saturation_current)} N={_fmt(self.emission)})"

    def spice(self, name, a, b, g):
        return f"D{name} {a} {b} {self.model_name} area={_fmt(float(g))}"


@dataclass(frozen=True)
class Rectifier(Law):
    """``phi(w) = max(w, 0)``: an ideal diode in series with the resistance ``1/g``.

    ``phi'(w) = 1 for w > 0, else 0``; ``Phi(w) = max(w, 0)^2 / 2``.
    """

    kind: ClassVar[str] = "rectifier"
    piecewise_linear: ClassVar[bool] = True

    def phi(self, w):
        return np.maximum(np.asarray(w, dtype=float), 0.0)

    def dphi(self, w):
        return (np.asarray(w) > 0).astype(float)

    def Phi(self, w):
        p = np.maximum(np.asarray(w, dtype=float), 0.0)
        return 0.5 * p * p

    def model_card(self):
        return IdealDiode().model_card()

    def spice(self, name, a, b, g):
        mid = f"{name}_rd"
        return (f"R{name} {a} {mid} {_fmt(1.0 / float(g))}\n"
                f"D{name} {mid} {b} {IdealDiode.MODEL}")


@dataclass(frozen=True)
class IdealDiode(Law):
    """Ideal diode constraint: ``i >= 0``, ``w <= 0``, ``i w = 0`` (anode ``a``).

    Not a function of ``w``: ``phi``/``dphi`` raise; ``Phi`` is 0 on the feasible set
    (its current is the solver's multiplier, :class:`~kirchnet.nonlinear.NonlinearState`).
    SPICE has no exact equivalent: the card is a diode with the steep model
    ``IS=1e-15 N=0.001`` (documented approximation, forward drop ~1 mV at 1 A).
    """

    kind: ClassVar[str] = "ideal_diode"
    piecewise_linear: ClassVar[bool] = True
    constraint: ClassVar[bool] = True
    MODEL: ClassVar[str] = "KN_IDEAL"

    def phi(self, w):
        raise ParameterError("IdealDiode is a constraint (i >= 0, w <= 0, i w = 0), not a "
                             "function phi(w); its current is the solver's multiplier")

    dphi = phi

    def Phi(self, w):
        return np.zeros(np.shape(w))

    def model_card(self):
        return f".model {self.MODEL} D(IS=1e-15 N=0.001)"

    def spice(self, name, a, b, g):
        return f"D{name} {a} {b} {self.MODEL}"


LAWS: dict[str, type[Law]] = {cls.kind: cls for cls in (Resistor, Diode, Rectifier, IdealDiode)}


def law_from_dict(d: Mapping) -> Law:
    """Inverse of :meth:`Law.to_dict`."""
    if not isinstance(d, Mapping) or "kind" not in d:
        raise ParameterError(f"a law must be a mapping with a 'kind' key, got {d!r}")
    kind = d["kind"]
    if kind not in LAWS:
        raise ParameterError(f"unknown law kind {kind!r}; choose one of {sorted(LAWS)}")
    cls = LAWS[kind]
    names = {f.name for f in fields(cls)}
    params = {k: v for k, v in d.items() if k != "kind"}
    extra = sorted(set(params) - names)
    if extra:
        raise ParameterError(f"law {kind!r}: unknown parameter(s) {extra}; valid: {sorted(names)}")
    return cls(**params)


class ElementMap:
    """Which law each edge carries: ``laws`` (unique laws, ``laws[0]`` is the resistor) and
    ``law_index`` (m,) into them. Built from ``{law: edge_ids}``; unnamed edges are resistors.

    Evaluates on edge voltages ``w`` (..., m) at once (one vectorized call per law).
    """

    symmetric = True  # two-terminal laws: the tangent Laplacian is symmetric

    def __init__(self, n_edges: int, elements: Mapping | None = None):
        index = np.zeros(n_edges, dtype=np.int64)
        laws: list[Law] = [Resistor()]
        named = np.full(n_edges, -1, dtype=np.int64)
        if elements is None:
            elements = {}
        if not isinstance(elements, Mapping):
            raise ParameterError(
                f"elements must be a mapping {{law: edge_ids}}, got {type(elements).__name__}")
        for law, edges in elements.items():
            if not isinstance(law, Law):
                raise ParameterError(
                    f"elements: keys must be laws (Resistor(), Diode(), Rectifier(), IdealDiode()), "
                    f"got {law!r}")
            idx = np.atleast_1d(np.asarray(edges))
            if idx.size and (idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer)):
                raise TopologyError(f"elements[{law!r}]: edge ids must be integers, got {edges!r}")
            idx = idx.astype(np.int64).ravel()
            bad = idx[(idx < 0) | (idx >= n_edges)]
            if bad.size:
                raise TopologyError(
                    f"elements[{law!r}]: unknown edge index {int(bad[0])}; valid indices are "
                    f"0..{n_edges - 1}")
            if law not in laws:
                laws.append(law)
            j = laws.index(law)
            twice = idx[named[idx] >= 0]
            if twice.size or np.unique(idx).size != idx.size:
                e = int(twice[0]) if twice.size else int(idx[np.argmax(np.bincount(idx) > 1)])
                raise TopologyError(f"elements: edge {e} is given more than one law; give each edge one law")
            named[idx] = j
            index[idx] = j
        self.n_edges = int(n_edges)
        self.laws = tuple(laws)
        self.law_index = index
        self.law_index.setflags(write=False)
        self._groups = [(law, np.flatnonzero(index == j)) for j, law in enumerate(self.laws)]
        self._groups = [(law, e) for law, e in self._groups if e.size]

    # ------------------------------------------------------------- queries
    @property
    def is_linear(self) -> bool:
        return all(law.linear for law, _ in self._groups)

    @property
    def piecewise_linear(self) -> bool:
        return all(law.piecewise_linear for law, _ in self._groups)

    @property
    def constraint_edges(self) -> np.ndarray:
        """Edges that are constraints (ideal diodes), sorted."""
        parts = [e for law, e in self._groups if law.constraint]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def edges_of(self, law: Law) -> np.ndarray:
        return np.flatnonzero(self.law_index == self.laws.index(law)) if law in self.laws else \
            np.zeros(0, dtype=np.int64)

    def law_of(self, edge: int) -> Law:
        return self.laws[int(self.law_index[edge])]

    @property
    def kinds(self) -> np.ndarray:
        """(m,) each edge's :attr:`Law.kind` (``"resistor"``, ``"diode"``, ...)."""
        return np.array([law.kind for law in self.laws], dtype=object)[self.law_index]

    # ------------------------------------------------------------- evaluation
    def _apply(self, method: str, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=float)
        out = np.zeros(w.shape)
        for law, e in self._groups:
            if law.constraint:
                continue  # multiplier currents, not a function of w (0 here)
            if law.linear and method != "dphi":
                out[..., e] = w[..., e] if method == "phi" else 0.5 * w[..., e] ** 2
            else:
                out[..., e] = getattr(law, method)(w[..., e])
        return out

    def per_edge(self, name: str, default: float = 0.0) -> np.ndarray:
        """(m,) the law attribute ``name`` on each edge (``default`` where the law has none
        and on constraint edges)."""
        out = np.full(self.n_edges, float(default))
        for law, e in self._groups:
            if not law.constraint:
                out[e] = getattr(law, name, default)
        return out

    @property
    def initial_voltages(self) -> np.ndarray:
        """(m,) the voltage each law is linearized at by a cold start (0 except diodes)."""
        return self._per_edge_once("initial_voltage").copy()

    @property
    def max_start_voltages(self) -> np.ndarray:
        """(m,) :attr:`Law.max_start_voltage` per edge (inf except diodes)."""
        return self._per_edge_once("max_start_voltage", np.inf).copy()

    def _per_edge_once(self, name: str, default: float = 0.0) -> np.ndarray:
        """:meth:`per_edge`, computed once per map (the laws are immutable; every solve asks)."""
        cache = self.__dict__.setdefault("_per_edge_cache", {})
        if name not in cache:
            cache[name] = self.per_edge(name, default)
        return cache[name]

    def max_step(self, w, dw) -> np.ndarray:
        """Per sample (leading axes) the smallest :meth:`Law.max_step` over all edges (inf: none)."""
        w, dw = np.asarray(w, dtype=float), np.asarray(dw, dtype=float)
        out = np.full(w.shape[:-1], np.inf)
        for law, e in self._groups:
            t = law.max_step(w[..., e], dw[..., e])
            if t is not None:
                out = np.minimum(out, t.min(axis=-1, initial=np.inf))
        return out

    @property
    def limits(self) -> bool:
        """Some law limits its linearization voltage (:meth:`Law.limit`)."""
        return any(law.limits for law, _ in self._groups)

    def limit(self, v, w) -> np.ndarray:
        """:meth:`Law.limit` on every edge: the next linearization voltages (..., m)."""
        w = np.asarray(w, dtype=float)
        out = w.copy()
        for law, e in self._groups:
            if law.limits:
                out[..., e] = law.limit(v[..., e], w[..., e])
        return out

    def phi(self, w):
        """``phi_e(w_e)`` on every edge (0 on constraint edges)."""
        return self._apply("phi", w)

    def dphi(self, w):
        """``phi_e'(w_e)`` (0 on constraint edges)."""
        return self._apply("dphi", w)

    def Phi(self, w):
        """``Phi_e(w_e)`` (0 on constraint edges, whose co-content vanishes when feasible)."""
        return self._apply("Phi", w)

    # ------------------------------------------------------------- (de)serialization
    def to_dict(self) -> dict:
        """``{"n_edges": m, "elements": [{"law": law.to_dict(), "edges": [...]}, ...]}`` (non-resistors)."""
        return {"n_edges": self.n_edges,
                "elements": [{"law": law.to_dict(), "edges": e.tolist()}
                             for law, e in self._groups if not isinstance(law, Resistor)]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ElementMap":
        return cls(int(d["n_edges"]), {law_from_dict(item["law"]): item["edges"]
                                       for item in d.get("elements", [])})

    def as_mapping(self) -> dict:
        """``{law: edge_ids}`` of the non-resistor edges (the ``elements=`` argument)."""
        return {law: e.copy() for law, e in self._groups if not isinstance(law, Resistor)}

    def __eq__(self, other):
        if not isinstance(other, ElementMap):
            return NotImplemented
        return self.n_edges == other.n_edges and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.n_edges, repr(self.to_dict())))

    def __repr__(self):
        parts = ", ".join(f"{law!r}: {e.size} edge(s)" for law, e in self._groups)
        return f"ElementMap({parts})"
