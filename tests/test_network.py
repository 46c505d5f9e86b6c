"""Network: incidence convention, cycle basis, immutability, conversions."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from kirchnet import Network, TopologyError, topologies
from strategies import bridges, random_multigraph


@st.composite
def multigraphs(draw, max_components=3):
    """Multigraphs with parallel edges, bridges and 1-3 components (isolated nodes too)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts, offset = [], 0
    for _ in range(draw(st.integers(1, max_components))):
        n = draw(st.integers(3, 25))  # >= 3: a pendant node, so a bridge
        parts.append(offset + random_multigraph(rng, n, draw(st.integers(0, 2 * n)), draw(st.integers(0, 4))))
        offset += n
    isolated = draw(st.integers(0, 2))
    return Network(offset + isolated, np.concatenate(parts))


def test_incidence_convention():
    net = Network(3, [[0, 1], [2, 1], [0, 2]])
    B = net.incidence()
    assert sp.issparse(B) and B.shape == (3, 3)
    np.testing.assert_array_equal(B.toarray(), [[1, 0, 1], [-1, -1, 0], [0, 1, -1]])
    u = np.array([5.0, 2.0, 1.0])
    np.testing.assert_array_equal(B.T @ u, [3.0, -1.0, 4.0])  # dv_e = u_tail - u_head
    np.testing.assert_array_equal(net.tails, [0, 2, 0])
    np.testing.assert_array_equal(net.heads, [1, 1, 2])
    np.testing.assert_array_equal(net.degrees(), [2, 2, 2])


def test_parallel_edges_kept_and_immutable():
    net = Network(2, [[0, 1], [1, 0], [0, 1]])
    assert net.n_edges == 3 and net.cycle_rank == 2
    np.testing.assert_array_equal(net.incidence().toarray(), [[1, -1, 1], [-1, 1, -1]])
    with pytest.raises(ValueError):
        net.edges[0, 0] = 1
    with pytest.raises(AttributeError):
        net.n_nodes = 5
    src = np.array([[0, 1], [1, 2]])
    net2 = Network(3, src, positions=np.zeros((3, 2)))
    src[0, 0] = 2  # the network keeps its own copy
    assert net2.edges[0, 0] == 0
    with pytest.raises(ValueError):
        net2.positions[0, 0] = 1.0


@settings(max_examples=40)
@given(multigraphs())
def test_cycle_basis(net):
    A = net.cycle_basis()
    B = net.incidence()
    c, labels = net.components()
    assert A.shape == (net.n_edges, net.n_edges - net.n_nodes + c)
    assert net.cycle_rank == net.n_edges - net.n_nodes + c
    assert c == nx.number_connected_components(net.to_networkx().to_undirected())
    assert abs(B @ A).sum() == 0  # every column is a cycle: B A = 0 exactly
    Ad = A.toarray()
    assert set(np.unique(Ad)) <= {-1.0, 0.0, 1.0}
    if A.shape[1]:
        assert np.linalg.matrix_rank(Ad) == A.shape[1]  # independent columns
    # a spanning forest: n - c edges, acyclic, and every non-tree edge closes one column
    forest = net.spanning_forest()
    assert forest.sum() == net.n_nodes - c
    assert np.linalg.matrix_rank(B[:, np.flatnonzero(forest)].toarray()) == net.n_nodes - c
    chords = np.flatnonzero(~forest)
    np.testing.assert_array_equal(Ad[chords], np.eye(chords.size))
    # bridges lie on no cycle
    br = bridges(net.edges, net.n_nodes)
    assert br.size >= 1
    assert np.all(Ad[br] == 0)
    # components agree with node labels of edges
    np.testing.assert_array_equal(labels[net.tails], labels[net.heads])


def test_cycle_basis_of_tree_is_empty():
    net = Network(4, [[0, 1], [1, 2], [3, 1]])
    assert net.cycle_basis().shape == (3, 0)
    assert net.cycle_rank == 0


@pytest.mark.parametrize("edges, match", [
    ([[0, 1], [2, 2]], r"self-loops are not allowed.*edge\(s\) 1.*node 2"),
    ([[0, 1], [1, 5]], r"edge\(s\) 1 use unknown node ids \(valid ids are 0\.\.2\)"),
    ([[0, -1]], r"unknown node ids"),
    ([[0, 1.5]], r"integer node ids"),
    ([0, 1, 2], r"edges must have shape \(m, 2\)"),
    (np.zeros((0, 2), dtype=int), r"at least one edge; the edge list is empty"),
])
def test_invalid_topologies(edges, match):
    with pytest.raises(TopologyError, match=match):
        Network(3, edges)


def test_invalid_sizes_and_attributes():
    with pytest.raises(TopologyError, match=r"at least one node, got n_nodes=0"):
        Network(0, [[0, 1]])
    with pytest.raises(TopologyError, match=r"positions must have shape \(3, 2\)"):
        Network(3, [[0, 1]], positions=np.zeros((2, 2)))
    with pytest.raises(TopologyError, match="labels must have 3 entries"):
        Network(3, [[0, 1]], labels=("a", "b"))
    with pytest.raises(TopologyError, match="the edge list is empty"):
        Network.from_edgelist([])
    with pytest.raises(TopologyError, match="has no nodes"):
        Network.from_networkx(nx.Graph())
    G = nx.Graph()
    G.add_nodes_from([1, 2])
    with pytest.raises(TopologyError, match="has no edges"):
        Network.from_networkx(G)
    G.add_edge(1, 1)
    with pytest.raises(TopologyError, match="self-loops"):
        Network.from_networkx(G)


def test_from_edgelist():
    net = Network.from_edgelist([(0, 1), (1, 2), (2, 0), (0, 1)])
    assert net.n_nodes == 3 and net.n_edges == 4
    np.testing.assert_array_equal(net.edges, [[0, 1], [1, 2], [2, 0], [0, 1]])
    net2 = Network.from_edgelist([(0, 1)], n_nodes=4, positions=np.arange(8.0).reshape(4, 2))
    assert net2.n_nodes == 4 and net2.n_components == 3
    np.testing.assert_array_equal(net2.positions[3], [6.0, 7.0])


@settings(max_examples=15)
@given(multigraphs(max_components=2))
def test_networkx_round_trip_keeps_edge_ids(net):
    g = np.arange(1.0, net.n_edges + 1)
    G = net.to_networkx(conductances=g)
    assert isinstance(G, nx.MultiDiGraph)
    assert G.number_of_nodes() == net.n_nodes and G.number_of_edges() == net.n_edges
    back = Network.from_networkx(G)
    np.testing.assert_array_equal(back.edges, net.edges)
    assert back.labels is None
    cond = {d["index"]: d["conductance"] for _, _, d in G.edges(data=True)}
    np.testing.assert_array_equal([cond[e] for e in range(net.n_edges)], g)


def test_networkx_labels_and_positions_round_trip():
    lat = topologies.lattice(3, 4)
    names = {i: f"n{i}" for i in range(lat.n_nodes)}
    G = nx.relabel_nodes(lat.to_networkx(), names)
    net = Network.from_networkx(G)
    assert net.labels == tuple(f"n{i}" for i in range(lat.n_nodes))
    np.testing.assert_array_equal(net.edges, lat.edges)
    np.testing.assert_array_equal(net.positions, lat.positions)
    assert net.node_index("n5") == 5
    with pytest.raises(TopologyError, match="unknown node label 'zz'"):
        net.node_index("zz")
    H = net.to_networkx()
    assert set(H.nodes) == set(names.values())
    assert H.nodes["n5"]["pos"] == tuple(lat.positions[5])
    assert sorted((a, b) for a, b in H.edges()) == sorted((names[a], names[b]) for a, b in lat.edges)


def test_from_undirected_and_multigraphs():
    G = nx.MultiGraph()
    G.add_edge("a", "b")
    G.add_edge("a", "b")
    G.add_edge("b", "c")
    net = Network.from_networkx(G)
    assert net.n_nodes == 3 and net.n_edges == 3 and net.cycle_rank == 1
    assert net.labels == ("a", "b", "c")
    pos = {v: (i, 2.0 * i) for i, v in enumerate("abc")}
    nx.set_node_attributes(G, pos, "pos")
    np.testing.assert_array_equal(Network.from_networkx(G).positions, [[0, 0], [1, 2], [2, 4]])
    K = nx.path_graph(4)
    net = Network.from_networkx(K)
    assert net.labels is None and net.n_edges == 3
    assert net.node_index(2) == 2
    with pytest.raises(TopologyError, match=r"unknown node id 7; valid ids are 0\.\.3"):
        net.node_index(7)


# ------------------------------------------------------------ argument validation (issue 9)
@pytest.mark.parametrize("n_nodes, match", [
    (2.5, r"n_nodes must be an integer, got 2\.5; e\.g\. n_nodes=2 or 3"),
    ("3", r"n_nodes must be an integer, got '3'; pass an int, not a str"),
    (True, r"n_nodes must be an integer, got True"),
    (np.nan, r"n_nodes must be an integer, got nan"),
    (None, r"n_nodes must be an integer, got None"),
    (-2, r"at least one node, got n_nodes=-2"),
])
def test_n_nodes_is_never_coerced(n_nodes, match):
    with pytest.raises(TopologyError, match=match):
        Network(n_nodes, [[0, 1]])


def test_integral_n_nodes_are_accepted():
    assert Network(3.0, [[0, 1], [1, 2]]).n_nodes == 3
    assert Network(np.int32(3), [[0, 1], [1, 2]]).n_nodes == 3


@pytest.mark.parametrize("edges, match", [
    ([["a", "b"]], r"integer node ids, got string values \(e\.g\. edge 0 = \('a', 'b'\)\); map node names"),
    ([["0", "1"]], r"integer node ids, got string values"),
    ([[True, False]], r"integer node ids, got boolean values"),
    ([[0, 1], [0.5, 2]], r"edge\(s\) 1 do not, e\.g\. edge 1 = \(0\.5, 2\.0\)"),
    ([[0, 1], [np.nan, 2]], r"edge\(s\) 1 do not, e\.g\. edge 1 = \(nan, 2\.0\)"),
    ([[0, np.inf]], r"edge\(s\) 0 do not"),
    ([[0, None]], r"integer node ids; edge 0 = \(0, None\)"),
    ([[0, 1], [2]], r"edges must have shape \(m, 2\).*got shape \(2,\)"),
    ([[0, 1, 2]], r"edges must have shape \(m, 2\)"),
    ([[-1, 1]], r"edge\(s\) 0 use unknown node ids \(valid ids are 0\.\.2\); e\.g\. edge 0 = \(-1, 1\)"),
    ([[1, 1]], r"self-loops are not allowed .* edge\(s\) 0 are loops, e\.g\. node 1"),
])
def test_bad_edges_are_topology_errors(edges, match):
    with pytest.raises(TopologyError, match=match):
        Network(3, edges)


def test_from_edgelist_and_positions_are_checked():
    with pytest.raises(TopologyError, match="integer node ids, got string values"):
        Network.from_edgelist([("a", "b")])
    with pytest.raises(TopologyError, match=r"positions must be finite; 1 NaN or inf value\(s\), e\.g\. at index \(1, 0\)"):
        Network(2, [[0, 1]], positions=[[0.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(TopologyError, match="positions must be an array of numbers"):
        Network(2, [[0, 1]], positions="ab")
    # integral float ids are whole numbers: accepted as they are
    assert Network(3, [(0, 1), (1, 2.0)]).edges.tolist() == [[0, 1], [1, 2]]


# ------------------------------------------------------------ labels
def test_network_rejects_duplicate_labels_and_prints_plain_ids():
    """Duplicate labels were accepted (a label then silently named the first such node);
    the unknown-id message printed numpy reprs ``(np.int64(0), np.int64(5))``."""
    from kirchnet.errors import TopologyError

    with pytest.raises(TopologyError, match="labels must be distinct"):
        Network(3, [[0, 1], [1, 2]], labels=("a", "b", "a"))
    with pytest.raises(TopologyError, match=r"edge 0 = \(0, 5\)"):
        Network(3, [[0, 5]])


def test_node_label_lookup_is_a_hash_lookup():
    """node_index searched the label tuple for every terminal (O(n) each), so circuits with
    many terminals on large labelled graphs took O(n k); 601 terminals on a 300x300 grid
    took 2.6 s. Count label comparisons instead of timing."""
    calls = {"eq": 0}

    class Label:
        def __init__(self, i):
            self.i = i

        def __hash__(self):
            return hash(self.i)

        def __eq__(self, other):
            calls["eq"] += 1
            return isinstance(other, Label) and other.i == self.i

    n = 2000
    labels = [Label(i) for i in range(n)]
    net = Network(n, np.c_[np.arange(n - 1), np.arange(1, n)], labels=labels)
    assert net.node_index(Label(5)) == 5  # the first lookup builds the index
    calls["eq"] = 0
    picks = list(range(n - 50, n))
    assert [net.node_index(Label(i)) for i in picks] == picks
    assert calls["eq"] <= 2 * len(picks)


def test_from_networkx_needs_a_graph():
    with pytest.raises(TopologyError, match=r"from_networkx needs a networkx graph, got list; use Network\.from_edgelist"):
        Network.from_networkx([(0, 1), (1, 2)])
