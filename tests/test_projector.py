"""The paper's projector (Omega) form against the nodal solver, and its projector identities."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kirchnet import Circuit, Edge, Network, ParameterError, projector, topologies
from strategies import log_conductances, random_multigraph, rel_err

TOL = 1e-10


@st.composite
def source_circuits(draw, max_nodes=25):
    """Connected multigraph with cycles, ground only, a series source on every edge,
    conductance ratios up to 1e6."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(2, max_nodes))
    net = Network(n, random_multigraph(rng, n, draw(st.integers(0, n)), draw(st.integers(1, 3))))
    decades = draw(st.sampled_from([0.0, 2.0, 6.0]))
    g = log_conductances(rng, net.n_edges, decades)
    b = draw(st.integers(1, 3))
    s = rng.normal(size=(b, net.n_edges))
    return net, g, s, rng, decades


def _path_readout(net: Network, v: int, ground: int) -> np.ndarray:
    """Row ``p`` with ``p @ dv = u_v - u_ground`` along a path of the spanning graph."""
    G = nx.MultiGraph()
    G.add_nodes_from(range(net.n_nodes))
    for e, (a, b) in enumerate(net.edges):
        G.add_edge(int(a), int(b), key=e)
    path = nx.shortest_path(G, v, ground)
    p = np.zeros(net.n_edges)
    for a, b in zip(path[:-1], path[1:]):
        e = min(G[a][b])  # any edge joining a and b
        p[e] += 1.0 if tuple(net.edges[e]) == (a, b) else -1.0  # dv_e = u_tail - u_head
    return p


@settings(max_examples=40)
@given(source_circuits())
def test_projector_agrees_with_nodal_solver(case):
    net, g, s, rng, decades = case
    m = net.n_edges
    r = 1.0 / g
    # float64 nodal solves lose ~eps * (conductance ratio) in the worst case
    tol = TOL if decades <= 3 else 1e-8
    out_edges = [int(e) for e in rng.choice(m, size=min(m, 3), replace=False)]
    c = Circuit(net, ground=0, inputs=[Edge(e) for e in range(m)],
                outputs=[Edge(e) for e in out_edges] + [net.n_nodes - 1])
    st_ = c.solve(g, s)
    S = -s  # the paper's sources are drops along the edge (projector module docstring)
    assert rel_err(projector.currents(net, r, S), st_.currents) < tol
    assert rel_err(projector.currents_neumann_form(net, r, S), st_.currents) < tol
    assert rel_err(projector.branch_voltages(net, r, S), st_.drops) < tol
    assert rel_err(projector.resistor_voltages(net, r, S), st_.resistor_voltages) < tol

    # the resistance gradient dC/dr_k = i_k [(I - Omega_AR)^T P^T delta]_k, outputs o = P v
    P = np.vstack([np.eye(m)[out_edges], _path_readout(net, net.n_nodes - 1, 0)])
    np.testing.assert_allclose(st_.drops @ P.T, st_.outputs, rtol=1e-9, atol=1e-9 * np.abs(s).max())
    y = rng.normal(size=st_.outputs.shape)
    delta = st_.outputs - y
    res = c.loss_and_grad(g, s, y, wrt="resistance", full=True)
    grad_nodal = res.grad
    grad_proj = projector.resistance_gradient(net, r, S, P, delta)
    # Tolerance. Node potentials carry an absolute rounding error ~eps |u| (the adjoint
    # ~eps |lam|) that no float64 nodal method avoids, so dC/dr_e = g_e^2 w_e (B^T lam)_e is
    # exact only to ~eps g_e^2 (|w_e| (|lam_a| + |lam_b|) + |(B^T lam)_e| (|u_a| + |u_b| + |s_e|)).
    # On an edge of large g carrying a large current but exactly no adjoint current (a loop
    # hanging off the output paths) this is far above tol * max|grad| (a 1.2e-8 norm-wise
    # error at conductance ratio 1e6), while the projector's cycle form gives an exact 0.
    # So the comparison is componentwise: tol * max|grad| plus a small multiple of that bound.
    a, b = net.tails, net.heads
    lam, u, w = res.adjoint_potentials, res.state.potentials, res.state.resistor_voltages
    bound = (g ** 2 * (np.abs(w) * (np.abs(lam[:, a]) + np.abs(lam[:, b]))
                       + np.abs(lam[:, a] - lam[:, b]) * (np.abs(u[:, a]) + np.abs(u[:, b]) + np.abs(s)))).mean(axis=0)
    err = np.abs(grad_proj - grad_nodal)
    scale = max(np.abs(grad_nodal).max(), 1e-6 * np.abs(st_.currents).max() * np.abs(delta).max())
    assert np.all(err <= tol * scale + 64 * np.finfo(float).eps * bound), float(np.max(err / (tol * scale)))
    if decades <= 3 and np.abs(grad_nodal).max() > 1e-6 * scale:  # moderate ratios: norm-wise too
        assert rel_err(grad_proj, grad_nodal) < tol


@settings(max_examples=30)
@given(source_circuits(max_nodes=30))
def test_projector_identities(case):
    net, g, _, _, _ = case
    m = net.n_edges
    r = 1.0 / g
    A = net.cycle_basis().toarray()
    Bt = net.incidence().toarray().T
    OA, OBT, OAR = projector.omega_A(net), projector.omega_BT(net), projector.omega_AR(net, r)
    I = np.eye(m)
    assert projector.check_idempotent(OA) < TOL
    assert projector.check_idempotent(OBT) < TOL
    np.testing.assert_allclose(OA, OA.T, atol=TOL)
    np.testing.assert_allclose(OA + OBT, I, atol=TOL)
    np.testing.assert_allclose(OA @ A, A, atol=TOL)  # identity on the cycle space
    np.testing.assert_allclose(OA @ Bt, 0, atol=TOL)  # zero on the cut space
    np.testing.assert_allclose(OBT @ Bt, Bt, atol=TOL)
    assert np.isclose(np.trace(OA), net.cycle_rank, atol=1e-8)
    # the oblique projector: idempotent, range R A, kernel contains the cut space
    scale = max(1.0, np.abs(OAR).max())
    assert projector.check_idempotent(OAR) < TOL * scale ** 2
    np.testing.assert_allclose(OAR @ (r[:, None] * A), r[:, None] * A, atol=TOL * scale * r.max())
    np.testing.assert_allclose(OAR @ Bt, 0, atol=TOL * scale)
    if np.allclose(r, r[0]):  # equal resistors: Omega_AR is the orthogonal Omega_A
        np.testing.assert_allclose(OAR, OA, atol=TOL)


def test_tree_has_no_cycles():
    net = Network(4, [[0, 1], [1, 2], [1, 3]])
    assert net.cycle_basis().shape == (3, 0)
    np.testing.assert_array_equal(projector.omega_A(net), np.zeros((3, 3)))
    np.testing.assert_array_equal(projector.omega_BT(net), np.eye(3))
    np.testing.assert_array_equal(projector.omega_AR(net, np.ones(3)), np.zeros((3, 3)))
    np.testing.assert_array_equal(projector.currents(net, np.ones(3), np.ones(3)), np.zeros(3))


def test_single_loop_closed_form():
    """One loop of resistors r_k with sources S_k: i = -sum(S) / sum(r) on every edge."""
    k = 5
    net = Network(k, [[j, (j + 1) % k] for j in range(k)])
    r = np.array([1.0, 2.0, 0.5, 4.0, 3.0])
    S = np.array([1.0, -2.0, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(projector.currents(net, r, S), np.full(k, -S.sum() / r.sum()), rtol=1e-14)
    OAR = projector.omega_AR(net, r)
    np.testing.assert_allclose(OAR, np.outer(r, np.ones(k)) / r.sum(), rtol=1e-14)


def test_projector_rejects_bad_input():
    net = topologies.lattice(3, 3)
    r = np.ones(net.n_edges)
    r[2] = -1.0
    with pytest.raises(ParameterError, match=r"resistances must be strictly positive.*edge\(s\) 2"):
        projector.omega_AR(net, r)
    r[2] = np.nan
    with pytest.raises(ParameterError, match=r"resistances must be finite.*edge\(s\) 2"):
        projector.currents(net, r, np.ones(net.n_edges))
    big = topologies.lattice(60, 60)
    with pytest.raises(ValueError, match="dense reference"):
        projector.omega_A(big)


def test_projector_refuses_nonlinear_circuits_and_accepts_linear_ones():
    """The Omega form is a linear-only reference: a diode circuit is refused with the laws
    named; a linear Circuit stands for its network."""
    import kirchnet as kn
    from kirchnet import projector
    from kirchnet.elements import Diode

    net = kn.topologies.lattice(3, 3)
    lin = kn.Circuit(net, ground=0, inputs=[8], outputs=[4])
    np.testing.assert_array_equal(projector.omega_A(lin), projector.omega_A(net))
    diode = kn.Circuit(net, ground=0, inputs=[8], outputs=[4], elements={Diode(): [1, 5]})
    r = np.ones(net.n_edges)
    for call in (lambda: projector.omega_A(diode), lambda: projector.omega_AR(diode, r),
                 lambda: projector.currents(diode, r, np.ones(net.n_edges))):
        with pytest.raises(kn.ParameterError, match=r"linear resistor networks only; this circuit has "
                                                    r"nonlinear elements: Diode\(.*\) on edge\(s\) 1, 5"):
            call()
    with pytest.raises(kn.ParameterError, match="network must be a kirchnet Network .* got list"):
        projector.omega_A([[0, 1]])
