"""Output-port algebra shared by the two-phase rules (theory.md, 2-3).

Every nudge of a two-phase rule acts on the few outputs only. Whatever it is (an
injected current, a clamp of the outputs, an energy term ``beta * C(o)``), the nudged
state of a linear network differs from the free state by port currents ``mu`` (b, k)
injected as ``J = P^T mu``:

* free potentials: ``u_F' = u_F + Z mu``, with ``Z = L_FF^{-1} P_F^T`` (n_free x k,
  :meth:`CircuitFactorization.adjoint_basis`, k solves shared by the whole batch);
* outputs: ``o' = o + K mu`` with the output compliance ``K = P_F L_FF^{-1} P_F^T``
  (k x k), the inverse of the output stiffness ``S = K^{-1}`` (the Schur complement of
  ``L`` on the output ports with the inputs clamped);
* edge voltages: ``w' = w + W mu`` with ``W = B_F^T Z`` (m x k).

A clamp ``o' = t`` is the port current ``mu = S (t - o)``; an energy term is a k-dim
fixed point on the outputs. So no nudged or clamped solve ever refactorizes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import scipy.linalg as sla

from ..circuit import CircuitFactorization, State
from ..errors import BoundaryConditionError, ConvergenceError
from ..losses import CrossEntropy, Loss, SquaredError


class LowRankFree:
    """The free state of a batch through the factorization's bases (batch larger than the
    drivers and the outputs): ``u = Zd Hfull^T`` is never formed. The outputs are
    ``Zd (P Hfull)^T`` and the edge-voltage correlations of the Hebbian estimate are
    ``sum_s w_s mu_s^T = (B^T Hfull) (Zd^T mu)`` (plus ``xs^T mu`` on the series-source
    edges), ``O((D + k) m)``, as :func:`kirchnet.gradient.loss_and_grad`'s low-rank path. Any
    other attribute (``potentials``, ``currents``, ...) solves the full state on first access.
    """

    def __init__(self, factorization: CircuitFactorization, x, drivers: np.ndarray, xs: np.ndarray):
        c = factorization.circuit
        self._fac, self._x, self._Zd, self._xs = factorization, x, drivers, xs
        self._state = None
        factorization.prepare()  # transfer and adjoint basis in one multi-column solve
        self.circuit = c
        self.conductances = factorization.conductances
        self.outputs = drivers @ c.read_outputs(factorization.transfer_full().T)

    @property
    def batch_size(self) -> int:
        return self._Zd.shape[0]

    def resolve(self) -> State:
        """The full free state (solved once)."""
        if self._state is None:
            self._state = self._fac.solve(self._x)
        return self._state

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def correlation(self, mu: np.ndarray) -> np.ndarray:
        """``sum_s w_s mu_s^T`` (m, k) through the driver drops ``B^T Hfull``."""
        out = self._fac.driver_drops() @ (self._Zd.T @ mu)
        c = self.circuit
        if c.source_edges.size:
            out[c.source_edges] += self._xs.T @ mu
        return out


def free_state(factorization: CircuitFactorization, x) -> "State | LowRankFree":
    """The free state of ``x``: a :class:`LowRankFree` when the batch exceeds both the drivers
    and the outputs (the bases are then cheaper than the (batch x n) potentials), else solved."""
    c = factorization.circuit
    xn, xs, xc, _ = c.driver_values(x, None)
    b = xn.shape[0]
    if b > c.n_drivers and b > c.n_outputs and not c.elements.constraint_edges.size:
        Zd = np.concatenate([xn, xs, xc], axis=1) if xs.size or xc.size else xn
        return LowRankFree(factorization, x, Zd, xs)
    return factorization.solve(x)


def resolved(free) -> "State | Callable[[], State]":
    """What a :class:`~kirchnet.rules.base.RuleResult` takes: the state, or its lazy solve."""
    return free.resolve if isinstance(free, LowRankFree) else free


class Ports:
    """``Z``, ``K`` and ``W`` of one factorization (see the module docstring)."""

    def __init__(self, factorization: CircuitFactorization):
        c = factorization.circuit
        self.factorization = factorization
        self.circuit = c
        self.Z = factorization.adjoint_basis()  # (n_free, k)
        K = c.readout_free_T.T @ self.Z
        self.K = 0.5 * (K + K.T)
        self.W = factorization.adjoint_drops()  # (m, k), cached with the factorization
        self._stiffness = None

    def stiffness_solve(self, r: np.ndarray) -> np.ndarray:
        """Rows of ``r`` (b, k) times ``S = K^{-1}``: the port currents of a clamp ``o' - o = r``."""
        if self._stiffness is None:
            try:
                self._stiffness = sla.cho_factor(self.K)
            except np.linalg.LinAlgError:
                raise BoundaryConditionError(
                    "the outputs cannot be clamped: the output compliance P_F L_FF^-1 P_F^T is "
                    "singular (an output reads only clamped nodes, or outputs are linearly "
                    "dependent)") from None
        return sla.cho_solve(self._stiffness, np.asarray(r, dtype=float).T).T

    def state(self, free: State, mu: np.ndarray) -> State:
        """The nudged state ``u_F + Z mu`` (clamped nodes and sources unchanged)."""
        u = free.potentials.copy()
        u[:, self.circuit.free_nodes] += mu @ self.Z.T
        return State(self.circuit, free.conductances, u, free.sources)

    def drive_correlation(self, free: State, mu: np.ndarray) -> np.ndarray:
        """``sum_s w_s mu_s^T`` (m, k) from potentials, without forming (b, m) arrays.

        ``w = B^T u + s``, so ``w^T mu = B^T (u^T mu) + s^T mu``.
        """
        if isinstance(free, LowRankFree):
            return free.correlation(mu)
        out = np.asarray(self.circuit._BT @ (free.potentials.T @ mu))
        if free.sources is not None:
            out = out + free.sources.T @ mu
        return out

    def hebbian(self, free: State, mu1: np.ndarray | None, mu2: np.ndarray | None,
                b1: float, b2: float) -> np.ndarray:
        """``mean_s 1/2 [(w + W mu2)^2 - (w + W mu1)^2] / (b2 - b1)`` (m,), per edge.

        Expanded in the port currents (``None`` = free state, no current):
        ``[sum_k W_ek (w^T dmu)_ek + 1/2 sum_kl W_ek (dmu^T smu)_kl W_el] / (b (b2 - b1))``
        with ``dmu = mu2 - mu1``, ``smu = mu1 + mu2``: O(b m k) work, no (b, m)
        temporaries and no cancellation of squares.
        """
        zero = np.zeros((free.batch_size, self.K.shape[0]))
        m1 = zero if mu1 is None else mu1
        m2 = zero if mu2 is None else mu2
        dmu, smu = m2 - m1, m1 + m2
        first = np.einsum("ek,ek->e", self.W, self.drive_correlation(free, dmu))
        second = np.einsum("ek,ek->e", self.W @ (dmu.T @ smu), self.W)
        return (first + 0.5 * second) / (free.batch_size * (b2 - b1))

    def energy_gap(self, mu: np.ndarray) -> np.ndarray:
        """``E(u') - E(u) = 1/2 mu^T K mu`` per sample (b,), exact for a linear network."""
        return 0.5 * np.einsum("bk,kl,bl->b", mu, self.K, mu)


def loss_hessian(loss: Loss, outputs: np.ndarray, targets) -> np.ndarray:
    """``d^2 C_s / do^2`` per sample (b, k, k).

    Closed form for :class:`CrossEntropy` (``s (diag(q) - q q^T) / T^2``,
    ``q = softmax(o/T)``, ``s`` the target mass); other losses by central differences of
    their ``delta`` (squared error never gets here: its energy nudge is linear).
    """
    b, k = outputs.shape
    if isinstance(loss, CrossEntropy):
        p = loss.targets(targets, outputs)
        z = outputs / loss.temperature
        q = np.exp(z - z.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
        s = p.sum(axis=1)[:, None, None]
        H = q[:, :, None] * np.eye(k)[None] - q[:, :, None] * q[:, None, :]
        return s * H / loss.temperature ** 2
    h = 1e-5 * (1.0 + np.abs(outputs))
    H = np.empty((b, k, k))
    for j in range(k):  # k is the (small) number of outputs
        step = np.zeros_like(outputs)
        step[:, j] = h[:, j]
        dp = loss(outputs + step, targets)[1]
        dm = loss(outputs - step, targets)[1]
        H[:, :, j] = (dp - dm) / (2 * h[:, j:j + 1])
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def energy_nudge_currents(loss: Loss, ports: Ports, outputs: np.ndarray, targets, beta: float,
                          tol: float = 1e-12, max_iter: int = 50) -> np.ndarray:
    """Port currents of the energy nudge ``E(u) + beta C(P u)`` (b, k).

    Stationarity gives ``o' = o - beta K dC/do(o')``: a k-dimensional equation per
    sample, linear for squared error (``(I + beta K) delta' = delta``, ``K`` symmetric),
    else solved by Newton (``J = I + beta K H(o')``). The currents are
    ``mu = -beta dC/do(o')``.
    """
    o0 = np.asarray(outputs, dtype=float)
    k = o0.shape[1]
    if isinstance(loss, SquaredError):
        delta = loss(o0, targets)[1]
        return -beta * np.linalg.solve(np.eye(k) + beta * ports.K, delta.T).T
    o = o0.copy()
    scale = 1.0 + np.abs(o0).max(initial=0.0)
    for _ in range(max_iter):
        grad = loss(o, targets)[1]
        r = o - o0 + beta * grad @ ports.K
        if np.abs(r).max(initial=0.0) <= tol * scale:
            return -beta * grad
        J = np.eye(k)[None] + beta * np.einsum("kl,blj->bkj", ports.K, loss_hessian(loss, o, targets))
        o = o - np.linalg.solve(J, r[:, :, None])[:, :, 0]
    raise ConvergenceError(
        f"the energy nudge (beta={beta}) did not converge in {max_iter} Newton steps on the outputs; "
        f"use a smaller |beta| (for beta < 0 the nudged energy may not be convex)")


class LazyStates(Mapping):
    """A read-only ``{name: State}`` mapping whose states are built on first access.

    Rules return their nudged/clamped states as diagnostics; building them costs a
    (b, n) array each, which a training step that only reads ``estimate`` never pays.
    """

    def __init__(self, factories: dict[str, Callable[[], State]]):
        self._factories = dict(factories)
        self._cache: dict[str, State] = {}

    def __getitem__(self, key: str) -> State:
        if key not in self._cache:
            self._cache[key] = self._factories[key]()
        return self._cache[key]

    def __iter__(self):
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"LazyStates({list(self._factories)})"
