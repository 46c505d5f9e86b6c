"""The paper's projector (Omega) formalism: a dense small-network reference.

Caravelli's form of Kirchhoff's laws for a circuit of resistors ``R = diag(r)`` with
series voltage sources ``S`` on the edges (theory.md, 1.1). ``A`` (m x (m-n+c)) is a
cycle basis (``B A = 0``):

* ``Omega_A = A (A^T A)^{-1} A^T``: orthogonal projector on the cycle space;
* ``Omega_{B^T} = I - Omega_A``: projector on the cut space (range of ``B^T``);
* ``Omega_AR = R A (A^T R A)^{-1} A^T``: the oblique projector (idempotent);
* currents ``i = -A (A^T R A)^{-1} A^T S = -(I + Omega_A (R - I))^{-1} Omega_A S``;
* resistor voltages ``R i = -Omega_AR S``; branch voltages ``v = (I - Omega_AR) S``;
* for outputs ``o = P v`` and ``delta = dC/do``:
  ``dC/dr_k = i_k [(I - Omega_AR)^T P^T delta]_k``.

Sign convention: the paper's ``S`` is the source voltage counted as a drop along the
edge, ``S = -s`` for kirchnet's series source ``s`` (which adds to the resistor
voltage, ``w = dv + s``). So ``i = g * (dv + s)`` of :class:`~kirchnet.Circuit` equals
``i`` here with ``S = -s``, and ``v`` here is the edge drop ``dv = B^T u``.

Everything here builds dense ``m x m`` matrices: use it for checking and teaching on
networks up to a few thousand edges, and the nodal solver otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._validation import _list, check_positive_finite
from .errors import ParameterError, ShapeError
from .network import Network

#: refuse to build dense m x m projectors beyond this many edges
MAX_EDGES = 5000


def _linear_network(network) -> Network:
    """The :class:`Network` of the argument; a :class:`~kirchnet.Circuit` is accepted when
    every element is a linear resistor (the projector form is a linear-only reference)."""
    if isinstance(network, Network):
        return network
    elements = getattr(network, "elements", None)
    if elements is not None and isinstance(getattr(network, "network", None), Network):
        if not elements.is_linear:
            laws = ", ".join(f"{law!r} on edge(s) {_list(e)}" for law, e in elements._groups
                             if not law.linear)
            raise ParameterError(
                f"the projector form (Omega_A, Omega_AR) holds for linear resistor networks only; "
                f"this circuit has nonlinear elements: {laws}. Use circuit.solve / "
                f"kirchnet.loss_and_grad (exact nonlinear equilibria and gradients) instead")
        return network.network
    raise ParameterError(f"network must be a kirchnet Network (or a linear Circuit), got "
                         f"{type(network).__name__}")


def _cycle_matrix(network: Network) -> np.ndarray:
    if network.n_edges > MAX_EDGES:
        raise ShapeError(
            f"the projector form is a dense reference (m x m matrices); {network.n_edges} edges "
            f"exceed its limit of {MAX_EDGES}. Use Circuit (nodal solver) instead"
        )
    return network.cycle_basis().toarray()


def omega_A(network: Network) -> np.ndarray:
    """``Omega_A = A (A^T A)^{-1} A^T`` (m x m), orthogonal projector on the cycle space."""
    network = _linear_network(network)
    A = _cycle_matrix(network)
    if A.shape[1] == 0:
        return np.zeros((network.n_edges, network.n_edges))
    return A @ sla.solve(A.T @ A, A.T, assume_a="pos")


def omega_BT(network: Network) -> np.ndarray:
    """``Omega_{B^T} = I - Omega_A``, orthogonal projector on the cut space."""
    network = _linear_network(network)
    return np.eye(network.n_edges) - omega_A(network)


def omega_AR(network: Network, resistances) -> np.ndarray:
    """``Omega_AR = R A (A^T R A)^{-1} A^T`` (m x m), oblique and idempotent."""
    network = _linear_network(network)
    r = check_positive_finite(resistances, network.n_edges, "resistances")
    A = _cycle_matrix(network)
    if A.shape[1] == 0:
        return np.zeros((network.n_edges, network.n_edges))
    return (r[:, None] * A) @ sla.solve(A.T @ (r[:, None] * A), A.T, assume_a="pos")


def currents(network: Network, resistances, S) -> np.ndarray:
    """``i = -A (A^T R A)^{-1} A^T S`` for sources ``S`` (m,) or (b, m); returns the same shape."""
    network = _linear_network(network)
    r = check_positive_finite(resistances, network.n_edges, "resistances")
    A = _cycle_matrix(network)
    S = np.asarray(S, dtype=float)
    if A.shape[1] == 0:
        return np.zeros_like(S)
    K = A.T @ (r[:, None] * A)
    return -(A @ sla.solve(K, A.T @ S.T, assume_a="pos")).T


def currents_neumann_form(network: Network, resistances, S) -> np.ndarray:
    """``i = -(I + Omega_A (R - I))^{-1} Omega_A S`` (the paper's second form)."""
    network = _linear_network(network)
    r = check_positive_finite(resistances, network.n_edges, "resistances")
    OA = omega_A(network)
    M = np.eye(network.n_edges) + OA @ np.diag(r - 1.0)
    return -sla.solve(M, OA @ np.asarray(S, dtype=float).T).T


def resistor_voltages(network: Network, resistances, S) -> np.ndarray:
    """``R i = -Omega_AR S``."""
    network = _linear_network(network)
    return -(omega_AR(network, resistances) @ np.asarray(S, dtype=float).T).T


def branch_voltages(network: Network, resistances, S) -> np.ndarray:
    """``v = (I - Omega_AR) S`` (equal to the edge drops ``B^T u``)."""
    network = _linear_network(network)
    W = np.eye(network.n_edges) - omega_AR(network, resistances)
    return (W @ np.asarray(S, dtype=float).T).T


def resistance_gradient(network: Network, resistances, S, readout, delta) -> np.ndarray:
    """``dC/dr_k = i_k [(I - Omega_AR)^T P^T delta]_k`` for outputs ``o = P v``.

    ``readout`` ``P`` is (k, m) over branch voltages; ``S`` (m,) with ``delta`` (k,), or a
    batch ``S`` (b, m) with ``delta`` (b, k), in which case the batch mean is returned.
    """
    network = _linear_network(network)
    S = np.atleast_2d(np.asarray(S, dtype=float))
    delta = np.atleast_2d(np.asarray(delta, dtype=float))
    P = np.asarray(readout.toarray() if hasattr(readout, "toarray") else readout, dtype=float)
    i = currents(network, resistances, S)  # (b, m)
    W = np.eye(network.n_edges) - omega_AR(network, resistances)
    back = delta @ P @ W  # rows: ((I - Omega_AR)^T P^T delta_s)^T
    return (i * back).mean(axis=0)


def check_idempotent(matrix: np.ndarray) -> float:
    """``||M^2 - M||_max``: zero (to rounding) for a projector."""
    return float(np.max(np.abs(matrix @ matrix - matrix)))
