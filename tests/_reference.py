"""Test helpers shared by tests/test_spice.py and tests/test_nonlinear.py: random
resistor-diode circuits and an independent damped-Newton reference for their equilibria
(SuperLU, junction limiting, Armijo line search; no code shared with kirchnet.nonlinear)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from kirchnet import Circuit, Edge, topologies
from kirchnet.elements import Diode, Resistor
from kirchnet.spice import _driver_values  # driver columns, for the reference solver


def _resistor_tree(net):
    """Edges of a spanning forest (union-find in edge order): resistors there keep every
    node on a resistive path, so no potential hangs on reverse-bias leakage alone."""
    parent = list(range(net.n_nodes))

    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    tree = []
    for e, (a, b) in enumerate(net.edges):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[ra] = rb
            tree.append(e)
    return np.array(tree, dtype=np.int64)


def _diode_circuit(m, seed=0, fraction=1 / 3, laws=None, n_clamped=2):
    """Random resistor-diode network with ``m`` edges: resistors (about 1 kohm) on a
    spanning tree and on some other edges, diodes (areas 0.5..2) on ``fraction`` of the
    edges, ``n_clamped`` clamped input nodes (1, 2, ...) and a series source on a diode;
    inputs uniform in +-2 V."""
    net = topologies.random_connected(max(m // 2, 5), m=m, seed=seed)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    k = max(1, min(rest.size, int(round(fraction * net.n_edges))))
    diodes = np.sort(rng.choice(rest, k, replace=False))
    laws = laws or [Diode()]
    groups = np.array_split(diodes, len(laws))
    elements = {law: grp for law, grp in zip(laws, groups) if grp.size}
    clamped = [] if n_clamped <= 2 else \
        [int(v) for v in rng.permutation(np.arange(3, net.n_nodes))[:n_clamped - 2]]
    c = Circuit(net, ground=0, inputs=[1, 2, *clamped, Edge(int(diodes[0]))], outputs=[3],
                elements=elements)
    g = rng.uniform(0.5, 2.0, net.n_edges) * 1e-3
    g[diodes] = rng.uniform(0.5, 2.0, diodes.size)
    return c, g, diodes, rng


def _reference_potentials(c, g, X, max_iter=500):
    """Independent damped-Newton reference (SuperLU): Shockley diodes
    ``Is (exp(w / (n Vt)) - 1)`` (no overflow continuation) and resistors; clamped input
    nodes and series sources.

    Minimizes the convex co-content ``E(u) = sum_e g_e Phi_e(w_e)`` over the free
    potentials by Newton steps with junction limiting (``w / (n Vt)`` grows by at most 3
    per step past 10) and Armijo backtracking on ``E`` (an overflowing ``E`` is a
    rejected step; a step that halves the KCL residual is accepted too); stops when the
    Newton correction is below 1e-14 relative (then quadratic convergence has reached
    rounding level). Returns (b, n) potentials.
    """
    net = c.network
    n, m = net.n_nodes, net.n_edges
    cols = np.r_[np.arange(m), np.arange(m)]
    B = sp.csr_array((np.r_[np.ones(m), -np.ones(m)], (np.r_[net.tails, net.heads], cols)), shape=(n, m))
    d_edges, Is, nvt = [], [], []
    for law in c.elements.laws:
        assert isinstance(law, (Resistor, Diode)), law
        if isinstance(law, Diode):
            e = c.elements.edges_of(law)
            d_edges.append(e)
            Is.append(np.full(e.size, law.saturation_current))
            nvt.append(np.full(e.size, law.emission * law.thermal_voltage))
    d_edges, Is, nvt = (np.concatenate(v) for v in (d_edges, Is, nvt))
    r_edges = np.setdiff1d(np.arange(m), d_edges)
    known = np.array([c.ground, *c.input_nodes])
    free = np.setdiff1d(np.arange(n), known)
    drv = _driver_values(c, X, None)  # (b, D): node inputs, then source edges
    ni = len(c.input_nodes)
    BF = B[free]
    BFT = BF.T.tocsr()
    out = np.zeros((drv.shape[0], n))
    with np.errstate(over="ignore", invalid="ignore"):
        for k, x in enumerate(drv):
            u = np.zeros(n)
            u[c.input_nodes] = x[:ni]
            sv = np.zeros(m)
            sv[c.source_edges] = x[ni:]

            def parts(uf):
                uu = u.copy()
                uu[free] = uf
                w = B.T @ uu + sv
                xd = w[d_edges] / nvt
                energy = 0.5 * np.sum(g[r_edges] * w[r_edges] ** 2) + np.sum(
                    g[d_edges] * Is * nvt * (np.expm1(xd) - xd))
                i = g * w
                i[d_edges] = g[d_edges] * Is * np.expm1(xd)
                dphi = g.copy()
                dphi[d_edges] = g[d_edges] * Is / nvt * np.exp(xd)
                return energy, BF @ i, dphi, xd

            # start: diodes replaced by stiff resistors (finite energy even for steep laws)
            gs = g.copy()
            gs[d_edges] = 1e6 * np.max(g[r_edges])
            Gs = BF @ sp.diags_array(gs)
            uf = spla.spsolve((Gs @ BFT).tocsc(), -(Gs @ (B[known].T @ u[known] + sv)))
            E, r, dphi, xd = parts(uf)
            for _ in range(max_iter):
                du = spla.spsolve((BF @ sp.diags_array(dphi) @ BFT).tocsc(), -r)
                if np.max(np.abs(du)) <= 1e-14 * (1.0 + np.max(np.abs(uf))):
                    uf = uf + du  # the Newton correction is at rounding level: converged
                    break
                # junction limiting: a forward step may raise w / (n Vt) to 10 freely, beyond
                # that by at most 3 per iteration (no overshoot deep into the exponential)
                dx = (BFT @ du)[d_edges] / nvt
                allowed = np.maximum(3.0, 10.0 - xd)
                t = min(1.0, 1.0 / max(1.0, float(np.max(dx / allowed, initial=0.0))))
                while True:
                    En, rn, dn, xn = parts(uf + t * du)
                    # sufficient decrease of E, or (near the solution, where E is flat to
                    # rounding) of the KCL residual
                    if np.isfinite(En) and (En <= E + 1e-4 * t * (r @ du)
                                            or np.linalg.norm(rn) <= 0.5 * np.linalg.norm(r)):
                        break
                    if np.isfinite(En) and t < 1e-6 and En <= E + 1e-14 * abs(E):
                        break  # a tiny step whose energy change is below rounding
                    t *= 0.5
                    if t < 1e-30:
                        raise AssertionError("reference line search failed")
                uf, E, r, dphi, xd = uf + t * du, En, rn, dn, xn
            else:
                raise AssertionError("reference Newton did not converge")
            u[free] = uf
            out[k] = u
    return out
