"""Caravelli-Traversa-Di Ventra projector equation for linear-drift memristive networks (dense reference).

For a network of linear-drift memristors ``R(x) = R_on (1 + xi X)``, ``xi = (R_off - R_on) / R_on``,
driven by series sources ``S`` on the edges (Caravelli, Traversa, Di Ventra, PRE 95,
022140, 2017):

    ``dx/dt = alpha x - (1/beta) (I + xi Omega X)^{-1} Omega S``

with ``Omega = Omega_A`` the orthogonal projector on the cycle space
(:func:`kirchnet.projector.omega_A`) and ``X = diag(x)``.

Conventions, checked against one memristor in a loop with one source
(``tests/test_memristive.py``):

* ``S`` is the paper's source vector, the voltage counted as a *drop* along the edge:
  ``S = -s`` for kirchnet's series source ``s`` (:class:`~kirchnet.Edge` inputs, which
  add to the resistor voltage, ``w = dv + s``), as in :mod:`kirchnet.projector`.
* Kirchhoff: the currents ``i`` lie in the cycle space (``Omega i = i``) and the loop
  voltages vanish, ``Omega (R i + S) = 0``, so ``R_on (I + xi Omega X) i = -Omega S`` and
  ``i = -(1/R_on) (I + xi Omega X)^{-1} Omega S``: exactly kirchnet's edge currents.
* Hence the projector equation is, edge by edge, ``dx/dt = alpha x + (R_on / beta) i``:
  the linear-drift device ``dx/dt = k i`` (:class:`~kirchnet.devices.LinearIonDrift`, no
  window) with ``k = mu_v R_on / D^2 = R_on / beta`` (``beta = D^2 / mu_v``, time
  units), plus the linear term ``alpha x``
  (:meth:`~kirchnet.devices.LinearIonDrift.from_projector`). A positive current in
  the edge direction raises ``x`` (towards ``R_off``); for one memristor in a loop with a
  source of kirchnet value ``s`` (``S = -s``), ``dx/dt = alpha x + s / (beta (1 + xi x))``.

Dense ``m x m`` algebra: for checking and teaching on small networks
(:data:`kirchnet.projector.MAX_EDGES`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._validation import check_positive, check_real
from .circuit import Circuit
from .errors import BoundaryConditionError, ConvergenceError, ShapeError
from .network import Network
from .projector import omega_A

__all__ = ["projector_rate", "projector_currents", "simulate_projector", "sources_from_circuit"]


def _check(network, x, S):
    m = network.n_edges
    x = np.asarray(x, dtype=float)
    S = np.asarray(S, dtype=float)
    if x.shape != (m,) or S.shape != (m,):
        raise ShapeError(f"x and S must have shape ({m},), got {x.shape} and {S.shape}")
    return x, S


def projector_currents(network: Network, x, S, r_on: float, r_off: float, omega=None) -> np.ndarray:
    """``i = -(1/R_on) (I + xi Omega X)^{-1} Omega S`` (m,)."""
    x, S = _check(network, x, S)
    r_on = check_positive(r_on, "r_on")
    xi = (check_positive(r_off, "r_off") - r_on) / r_on
    Om = omega_A(network) if omega is None else omega
    M = np.eye(network.n_edges) + xi * Om * x[None, :]  # Omega X: column e scaled by x_e
    return -sla.solve(M, Om @ S) / r_on


def projector_rate(network: Network, x, S, r_on: float, r_off: float, alpha: float, beta: float,
                   omega=None) -> np.ndarray:
    """``dx/dt = alpha x - (1/beta) (I + xi Omega X)^{-1} Omega S`` (m,)."""
    beta = check_positive(beta, "beta")
    alpha = check_real(alpha, "alpha")
    x = np.asarray(x, dtype=float)
    return alpha * x + (r_on / beta) * projector_currents(network, x, S, r_on, r_off, omega)


def sources_from_circuit(circuit: Circuit, u) -> np.ndarray:
    """The paper's ``S`` (m,) for a circuit driven only by series sources: ``S = -s``.

    ``u`` is the circuit's input vector; every input must be an :class:`~kirchnet.Edge`
    (node-clamped inputs have no series-source form here).
    """
    if circuit.input_nodes.size or circuit.clamped_nodes.size:
        raise BoundaryConditionError(
            "the projector equation takes series sources only; the circuit has node-clamped inputs "
            f"{circuit.input_nodes.tolist() + circuit.clamped_nodes.tolist()}; use Edge(e) inputs")
    xn, xs, _, _ = circuit.driver_values(np.asarray(u, dtype=float), None)
    S = np.zeros(circuit.network.n_edges)
    S[circuit.source_edges] = -xs[0]
    return S


def simulate_projector(network: Network, x0, S, t_span, r_on: float, r_off: float, alpha: float,
                       beta: float, t_eval=None, method: str = "DOP853", rtol: float = 1e-11,
                       atol: float = 1e-13):
    """Integrate the projector equation with :func:`scipy.integrate.solve_ivp`.

    ``S``: a constant (m,) array or ``S(t) -> (m,)``. Returns ``(times, states)``
    ((T,), (T, m)). States are not clipped: keep the drive short enough that ``x``
    stays in ``[0, 1]`` (no window in this equation).
    """
    from scipy.integrate import solve_ivp

    Om = omega_A(network)
    src = S if callable(S) else (lambda t, _S=np.asarray(S, dtype=float): _S)
    sol = solve_ivp(lambda t, x: projector_rate(network, x, src(t), r_on, r_off, alpha, beta, Om),
                    tuple(t_span), np.asarray(x0, dtype=float), method=method, t_eval=t_eval,
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise ConvergenceError(f"solve_ivp({method!r}) failed: {sol.message}")
    return sol.t, sol.y.T
