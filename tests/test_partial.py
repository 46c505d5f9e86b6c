"""Tunable masks (explicit, random, region), the Masked rule and low-rank factorization reuse."""

import networkx as nx
import numpy as np
import pytest

from kirchnet import solvers, Circuit, Edge, Pair, ParameterError, ShapeError, TopologyError, topologies
from kirchnet.gradient import loss_and_grad
from kirchnet.partial import (EdgeSet, Masked, RandomFraction, Region, edge_distances, edge_mask,
                              next_factorization, random_mask, region_mask, resolve_mask)
from kirchnet.rules import Analytical
from kirchnet.training import Trainer


@pytest.fixture(scope="module")
def lattice_circuit():
    net = topologies.lattice(6, 7)
    return Circuit(net, ground=0, inputs=[6, 35], outputs=[41, 20])


def test_edge_mask_and_errors():
    m = edge_mask(10, [1, 3, 3])
    assert m.dtype == bool and m.sum() == 2 and m[1] and m[3]
    with pytest.raises(TopologyError, match="out of range"):
        edge_mask(10, [10])
    with pytest.raises(ShapeError):
        edge_mask(10, [0.5])


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_random_mask_exact_count_and_seed(fraction):
    m = random_mask(101, fraction, seed=3)
    assert m.sum() == round(fraction * 101)
    np.testing.assert_array_equal(m, random_mask(101, fraction, seed=3))
    if 0 < fraction < 1:
        assert not np.array_equal(m, random_mask(101, fraction, seed=4))
    with pytest.raises(ParameterError):
        random_mask(10, 1.5)


def test_region_distance_matches_networkx(lattice_circuit):
    c = lattice_circuit
    G = nx.Graph(c.network.edges.tolist())
    for of, anchors in (("inputs", [6, 35]), ("outputs", [41, 20])):
        dist = {v: min(nx.shortest_path_length(G, a, v) for a in anchors) for v in G}
        expected = np.array([min(dist[a], dist[b]) for a, b in c.network.edges])
        np.testing.assert_array_equal(edge_distances(c, of), expected)
        for r in (0, 1, 3):
            np.testing.assert_array_equal(region_mask(c, r, of), expected <= r)
    # distance 0 = exactly the edges touching an anchor
    touching = np.isin(c.network.edges, [6, 35]).any(axis=1)
    np.testing.assert_array_equal(region_mask(c, 0, "inputs"), touching)


def test_region_with_edge_and_pair_ports():
    net = topologies.lattice(4, 4)
    c = Circuit(net, ground=0, inputs=[Edge(5)], outputs=[Pair(15, 14), Edge(0)])
    d_in = edge_distances(c, "inputs")
    assert d_in[5] == 0
    a, b = net.edges[5]
    assert np.all(d_in[np.isin(net.edges, [a, b]).any(axis=1)] == 0)
    d_out = edge_distances(c, "outputs")
    assert np.all(d_out[np.isin(net.edges, [15, 14] + list(net.edges[0])).any(axis=1)] == 0)
    with pytest.raises(ValueError):
        region_mask(c, 1, "middle")


def test_resolve_mask_specs(lattice_circuit):
    c = lattice_circuit
    m = c.network.n_edges
    assert resolve_mask(None, c).all()
    np.testing.assert_array_equal(resolve_mask([0, 2], c), edge_mask(m, [0, 2]))
    np.testing.assert_array_equal(resolve_mask(EdgeSet([0, 2]), c), edge_mask(m, [0, 2]))
    np.testing.assert_array_equal(resolve_mask(RandomFraction(0.3, 1), c), random_mask(m, 0.3, 1))
    np.testing.assert_array_equal(resolve_mask(Region(1, "outputs"), c), region_mask(c, 1, "outputs"))
    with pytest.raises(ShapeError):
        resolve_mask(np.ones(m + 1, dtype=bool), c)
    with pytest.raises(ParameterError, match="no edge"):
        resolve_mask(np.zeros(m, dtype=bool), c)


def test_masked_rule_zeroes_non_tunable(lattice_circuit):
    c = lattice_circuit
    rng = np.random.default_rng(0)
    g = rng.uniform(0.5, 2, c.network.n_edges)
    x, y = rng.uniform(-1, 1, (8, 2)), rng.uniform(-0.3, 0.3, (8, 2))
    mask = random_mask(c.network.n_edges, 0.4, 2)
    res = Masked(Analytical(), mask).estimate(c, g, x, y)
    _, exact = loss_and_grad(c, g, x, y)
    np.testing.assert_allclose(res.estimate[mask], exact[mask], rtol=1e-12, atol=1e-15)
    assert np.all(res.estimate[~mask] == 0)


@pytest.mark.parametrize("backend", ["dense", "splu", "cholmod"])
def test_low_rank_update_equals_refactoring(lattice_circuit, backend):
    c = lattice_circuit
    if backend == "cholmod" and not solvers.cholmod_available():
        pytest.skip("scikit-sparse not installed")
    rng = np.random.default_rng(1)
    g = rng.uniform(0.5, 2, c.network.n_edges)
    fac = c.factorize(g, backend=backend)
    x = rng.uniform(-1, 1, (5, 2))
    for k in range(3):  # stacked updates of 2 edges each
        g = g.copy()
        g[rng.choice(g.size, 2, replace=False)] *= rng.uniform(0.5, 2, 2)
        fac, used = next_factorization(fac, c, g, max_rank=8)
        assert used
        if backend == "splu":  # Woodbury corrections stack; CHOLMOD updates its factor, dense refactors
            assert fac.factor.update_rank == 2 * (k + 1)
        ref = c.factorize(g, backend=backend)
        np.testing.assert_allclose(fac.solve(x).potentials, ref.solve(x).potentials, rtol=1e-10, atol=1e-12)
    g = g * rng.uniform(0.5, 2, g.size)  # every edge changes: full refactorization
    fac, used = next_factorization(fac, c, g, max_rank=8)
    assert not used and fac.factor.update_rank == 0


def test_trainer_low_rank_path_matches_refactor(lattice_circuit):
    """Training 3 tunable edges with low-rank updates gives the refactoring run's history."""
    c = Circuit(lattice_circuit.network, ground=0, inputs=[6, 35], outputs=[41, 20], backend="splu")
    rng = np.random.default_rng(2)
    gt = rng.uniform(0.3, 3, c.network.n_edges)
    x = rng.uniform(-1, 1, (40, 2))
    y = c.solve(gt, x).outputs
    mask = edge_mask(c.network.n_edges, [0, 10, 20])
    kw = dict(epochs=3, batch_size=8, tunable=mask, optimizer="adam", lr=0.05)
    upd = Trainer(max_rank=None, **kw).fit(c, np.ones(c.network.n_edges), x, y)
    ref = Trainer(max_rank=0, **kw).fit(c, np.ones(c.network.n_edges), x, y)
    assert upd.history["low_rank_updates"][1:].sum() > 0
    assert ref.history["low_rank_updates"].sum() == 0
    np.testing.assert_allclose(upd.history["loss"], ref.history["loss"], rtol=1e-8)
    np.testing.assert_allclose(upd.conductances, ref.conductances, rtol=1e-8)
    assert np.all(upd.conductances[~mask] == 1.0)
