"""Network generators: sizes, connectivity, determinism by seed, and argument checks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from scipy.spatial import ConvexHull

from kirchnet import Network, TopologyError, topologies

GENERATORS = {
    "lattice": lambda seed: topologies.lattice(7, 9),
    "lattice_diag": lambda seed: topologies.lattice(5, 4, diagonals=True),
    "random_m": lambda seed: topologies.random_connected(60, m=100, seed=seed),
    "random_deg": lambda seed: topologies.random_connected(80, mean_degree=3.5, seed=seed),
    "random_tree": lambda seed: topologies.random_connected(30, m=29, seed=seed),
    "random_dense": lambda seed: topologies.random_connected(12, m=66, seed=seed),
    "regular": lambda seed: topologies.random_regular(50, 3, seed=seed),
    "delaunay": lambda seed: topologies.delaunay(70, seed=seed),
    "layered": lambda seed: topologies.layered([3, 5, 2]),
    "complete": lambda seed: topologies.complete(7),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_connected_simple_and_deterministic(name):
    make = GENERATORS[name]
    net = make(3)
    assert isinstance(net, Network)
    assert net.n_components == 1
    key = np.sort(net.edges, axis=1)
    assert np.unique(key, axis=0).shape[0] == net.n_edges  # no parallel edges
    assert np.all(net.edges[:, 0] != net.edges[:, 1])
    again = make(3)
    np.testing.assert_array_equal(again.edges, net.edges)
    if net.positions is not None:
        np.testing.assert_array_equal(again.positions, net.positions)
        assert net.positions.shape == (net.n_nodes, 2)


@pytest.mark.parametrize("name", ["random_m", "random_deg", "regular", "delaunay"])
def test_seed_changes_random_graphs(name):
    a, b = GENERATORS[name](1), GENERATORS[name](2)
    assert a.n_edges != b.n_edges or not np.array_equal(a.edges, b.edges)


@pytest.mark.parametrize("rows, cols", [(1, 2), (1, 7), (4, 1), (3, 3), (6, 11)])
@pytest.mark.parametrize("diagonals", [False, True])
def test_lattice_sizes(rows, cols, diagonals):
    net = topologies.lattice(rows, cols, diagonals=diagonals)
    assert net.n_nodes == rows * cols
    expected = rows * (cols - 1) + cols * (rows - 1)
    if diagonals:
        expected += 2 * (rows - 1) * (cols - 1)
    assert net.n_edges == expected
    assert net.n_components == 1
    # node r * cols + c sits at (c, r); edges join nodes at distance 1 (or sqrt 2)
    r, c = np.divmod(np.arange(rows * cols), cols)
    np.testing.assert_array_equal(net.positions, np.stack([c, r], axis=1))
    d = np.linalg.norm(net.positions[net.heads] - net.positions[net.tails], axis=1)
    assert np.all((np.isclose(d, 1.0)) | (diagonals & np.isclose(d, np.sqrt(2))))
    # horizontal edges point right, vertical edges point up
    step = net.positions[net.heads] - net.positions[net.tails]
    axis = np.isclose(d, 1.0)
    assert np.all(step[axis].sum(axis=1) == 1.0)


def test_lattice_rejects_single_node():
    with pytest.raises(TopologyError, match="at least 2 nodes"):
        topologies.lattice(1, 1)
    with pytest.raises(TopologyError, match="at least 2 nodes"):
        topologies.lattice(0, 5)


@pytest.mark.parametrize("n, m", [(2, 1), (10, 9), (10, 20), (25, 300), (200, 500)])
def test_random_connected_sizes(n, m):
    net = topologies.random_connected(n, m=m, seed=n + m)
    assert net.n_nodes == n and net.n_edges == m and net.n_components == 1


def test_random_connected_mean_degree():
    net = topologies.random_connected(101, mean_degree=4.3, seed=0)
    assert net.n_edges == round(101 * 4.3 / 2)
    assert net.degrees().mean() == pytest.approx(2 * net.n_edges / 101)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=10), "exactly one of m or mean_degree"),
    (dict(n=10, m=12, mean_degree=3), "exactly one of m or mean_degree"),
    (dict(n=10, m=8), r"m must be between n-1=9 and n\(n-1\)/2=45, got 8"),
    (dict(n=10, m=46), r"got 46"),
    (dict(n=1, m=0), "n >= 2"),
])
def test_random_connected_rejects(kwargs, match):
    with pytest.raises(TopologyError, match=match):
        topologies.random_connected(**kwargs)


@pytest.mark.parametrize("n, degree", [(10, 3), (50, 4), (31, 2), (12, 11)])
def test_random_regular_degrees(n, degree):
    net = topologies.random_regular(n, degree, seed=5)
    assert np.all(net.degrees() == degree)
    assert net.n_edges == n * degree // 2
    assert net.n_components == 1


@pytest.mark.parametrize("n, degree", [(5, 3), (4, 4), (6, 0)])
def test_random_regular_rejects(n, degree):
    with pytest.raises(TopologyError, match=f"no {degree}-regular graph on {n} nodes"):
        topologies.random_regular(n, degree)


@pytest.mark.parametrize("n", [3, 4, 10, 57, 300])
def test_delaunay_planar_counts(n):
    net = topologies.delaunay(n, seed=n)
    assert net.n_nodes == n
    assert net.n_edges <= 3 * n - 6 or n == 3  # planar bound (a triangle has 3 = 3n - 6 edges)
    # Euler for a triangulation of points in general position: m = 3n - 3 - h, h hull points
    h = len(ConvexHull(net.positions).vertices)
    assert net.n_edges == 3 * n - 3 - h
    assert np.all((net.positions >= 0) & (net.positions <= 1))
    assert nx.check_planarity(nx.Graph(net.to_networkx().to_undirected()))[0]


def test_delaunay_rejects_too_few_points():
    with pytest.raises(TopologyError, match="n >= 3"):
        topologies.delaunay(2)


@pytest.mark.parametrize("sizes", [[1, 1], [3, 5, 2], [4, 1, 4, 2]])
def test_layered_complete_bipartite(sizes):
    net = topologies.layered(sizes)
    assert net.n_nodes == sum(sizes)
    assert net.n_edges == sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    layer = np.repeat(np.arange(len(sizes)), sizes)
    np.testing.assert_array_equal(layer[net.heads], layer[net.tails] + 1)  # l -> l + 1
    pairs = {tuple(e) for e in net.edges.tolist()}
    for l in range(len(sizes) - 1):
        for a in np.flatnonzero(layer == l):
            for b in np.flatnonzero(layer == l + 1):
                assert (a, b) in pairs
    np.testing.assert_array_equal(net.positions[:, 0], layer)


@pytest.mark.parametrize("sizes", [[3], [], [2, 0, 3]])
def test_layered_rejects(sizes):
    with pytest.raises(TopologyError, match="at least two non-empty layers"):
        topologies.layered(sizes)


@pytest.mark.parametrize("n", [2, 3, 9])
def test_complete(n):
    net = topologies.complete(n)
    assert net.n_edges == n * (n - 1) // 2
    assert np.all(net.degrees() == n - 1)
    assert np.all(net.tails < net.heads)
    with pytest.raises(TopologyError, match="n >= 2"):
        topologies.complete(1)


# ------------------------------------------------------------ argument validation (issue 9)
@pytest.mark.parametrize("call, match", [
    (lambda: topologies.lattice(2.5, 3), r"rows must be an integer, got 2\.5; e\.g\. rows=2 or 3"),
    (lambda: topologies.lattice(3, "4"), r"cols must be an integer, got '4'"),
    (lambda: topologies.lattice(-2, 3), r"a lattice needs at least 2 nodes, got rows=-2"),
    (lambda: topologies.random_connected(10, mean_degree=np.nan), r"mean_degree must be finite, got nan"),
    (lambda: topologies.random_connected(10, mean_degree=np.inf), r"mean_degree must be finite, got inf"),
    (lambda: topologies.random_connected(10, mean_degree=-1), r"mean_degree must be > 0\.0, got -1\.0"),
    (lambda: topologies.random_connected(10, mean_degree="3"), r"mean_degree must be a real number, got '3'"),
    (lambda: topologies.random_connected(10, m=12.5), r"m must be an integer, got 12\.5"),
    (lambda: topologies.random_connected(10.5, m=12), r"n must be an integer, got 10\.5"),
    (lambda: topologies.random_connected(10, m=12, seed=-1), r"seed must be a non-negative integer, got -1; use e\.g\. seed=1"),
    (lambda: topologies.random_connected(10, m=12, seed=1.5), r"seed must be a non-negative integer, got 1\.5"),
    (lambda: topologies.random_regular(10, 3, seed=-1), r"seed must be a non-negative integer, got -1"),
    (lambda: topologies.random_regular(10, 2.5), r"degree must be an integer, got 2\.5"),
    (lambda: topologies.delaunay(10, seed=-3), r"seed must be a non-negative integer, got -3"),
    (lambda: topologies.delaunay(10.5), r"n must be an integer, got 10\.5"),
    (lambda: topologies.layered([3, 2.5]), r"sizes\[1\] must be an integer, got 2\.5"),
    (lambda: topologies.layered(5), r"sizes must be a list of layer sizes"),
    (lambda: topologies.complete(0.5), r"n must be an integer, got 0\.5"),
])
def test_generator_arguments_are_kirchnet_errors(call, match):
    with pytest.raises(TopologyError, match=match):
        call()


def test_memory_guard_refuses_graphs_that_cannot_fit(monkeypatch):
    """complete(20000) has 2e8 edges: refused before allocating, with the estimate."""
    monkeypatch.setattr(topologies, "_available_memory", lambda: 8 * 10**9)
    with pytest.raises(TopologyError, match=r"complete\(20000\) has 199,990,000 edges and needs about "
                                            r"40\.0 GB .* only 8\.0 GB are available; use a smaller"):
        topologies.complete(20000)
    with pytest.raises(TopologyError, match=r"lattice\(5000, 10000\) has 100,000,000 edges"):
        topologies.lattice(5000, 10000)
    assert topologies.complete(30).n_edges == 435  # small graphs are untouched


def test_deep_resistive_is_the_drn_circuit_network():
    from kirchnet.drn import deep_resistive_circuit
    from kirchnet.elements import IdealDiode

    net = topologies.deep_resistive((3, 4, 2), gain=2.0, bias=0.5)
    drn, circ, g = deep_resistive_circuit((3, 4, 2), seed=1, gain=2.0, bias=0.5)
    np.testing.assert_array_equal(net.edges, circ.network.edges)
    # 6 inputs + 2 bias sources + ground + 4 hidden + 2 outputs; 6*4 + 4*2 weights, 2*(4+2) bias, 4 diodes
    assert net.n_nodes == 15 and net.n_edges == 24 + 8 + 12 + 4 and net.positions is not None
    assert g.size == net.n_edges and np.all(g[drn.params.size:] == 1.0)
    np.testing.assert_array_equal(g[:drn.params.size], drn.params)
    assert not circ.is_linear
    diodes = [e for e in range(net.n_edges) if isinstance(circ.elements.law_of(e), IdealDiode)]
    assert diodes == list(range(drn.params.size, net.n_edges))
    with pytest.raises(ValueError, match="layers"):
        topologies.deep_resistive((3, 2))


def test_memory_guard_honours_kirchnet_memory_limit(monkeypatch):
    """An explicit KIRCHNET_MEMORY_LIMIT decides (both ways), not the available memory."""
    monkeypatch.setattr(topologies, "_available_memory", lambda: 10**15)
    monkeypatch.setenv("KIRCHNET_MEMORY_LIMIT", "1M")
    with pytest.raises(TopologyError, match=r"lattice\(100, 100\) with 20,000 edges .* would need about "
                                            r"4\.0 MB, more than the memory limit of 1\.0 MB "
                                            r"\(KIRCHNET_MEMORY_LIMIT=1M\); use a smaller"):
        topologies.lattice(100, 100)
    monkeypatch.setattr(topologies, "_available_memory", lambda: 1)
    monkeypatch.setenv("KIRCHNET_MEMORY_LIMIT", "0")  # guard off
    assert topologies.lattice(100, 100).n_edges == 19800
