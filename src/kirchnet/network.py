"""Topology: an immutable directed multigraph with its incidence matrix and cycle basis.

Conventions (theory.md, section 1): edge ``e = (a -> b)``; the node-edge incidence
``B`` (n x m) has ``B[a, e] = +1`` and ``B[b, e] = -1``, so the edge voltage drop is
``dv = B^T u``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Hashable, Iterable, Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from ._validation import _list, check_finite_array, check_int
from .errors import TopologyError


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


def _as_edges(edges) -> np.ndarray:
    """``edges`` as an ``(m, 2)`` int64 array of node ids, or a :class:`TopologyError`.

    Integer arrays and integral floats are accepted; strings, booleans, fractional,
    NaN or infinite ids and ragged rows are refused (never truncated or parsed).
    """
    try:
        arr = np.asarray(edges)
    except (TypeError, ValueError):
        arr = np.asarray(edges, dtype=object)
    if arr.size == 0:
        raise TopologyError("a network needs at least one edge; the edge list is empty")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise TopologyError(f"edges must have shape (m, 2) (one (tail, head) pair of node ids per row), "
                            f"got shape {arr.shape}")
    if arr.dtype == object:  # mixed types: every entry must be an integer number
        flat = arr.ravel()
        ok = [isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, (bool, np.bool_))
              for v in flat]
        if not all(ok):
            e = ok.index(False) // 2
            raise TopologyError(f"edges must contain integer node ids; edge {e} = {tuple(arr[e])!r}")
        arr = arr.astype(float)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        kind = {"b": "boolean", "U": "string", "S": "bytes", "c": "complex"}.get(arr.dtype.kind, arr.dtype.name)
        raise TopologyError(f"edges must contain integer node ids, got {kind} values "
                            f"(e.g. edge 0 = {tuple(arr[0].tolist())!r}); map node names to ids first, "
                            f"e.g. with Network.from_networkx")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~(np.isfinite(arr) & (np.mod(arr, 1) == 0)).all(axis=1))
        if bad.size:
            raise TopologyError(f"edges must contain integer node ids; edge(s) {_list(bad)} do not, "
                                f"e.g. edge {bad[0]} = {tuple(arr[bad[0]].tolist())}")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Network:
    """A directed multigraph on nodes ``0 .. n_nodes-1`` with ``m`` edges.

    Parameters
    ----------
    n_nodes:
        Number of nodes (> 0).
    edges:
        ``(m, 2)`` integer array; row ``e`` is ``(a, b)`` for edge ``a -> b``. Parallel
        edges are allowed, self-loops are rejected.
    positions:
        Optional ``(n_nodes, 2)`` coordinates used for drawing.
    labels:
        Optional original node labels (kept by :meth:`from_networkx` so that
        :meth:`to_networkx` round-trips).
    """

    n_nodes: int
    edges: np.ndarray
    positions: np.ndarray | None = None
    labels: tuple[Hashable, ...] | None = field(default=None, repr=False)

    def __post_init__(self):
        n = check_int(self.n_nodes, "n_nodes", error=TopologyError)
        if n <= 0:
            raise TopologyError(f"a network needs at least one node, got n_nodes={self.n_nodes!r}")
        edges = _as_edges(self.edges)
        bad = np.flatnonzero((edges < 0).any(axis=1) | (edges >= n).any(axis=1))
        if bad.size:
            raise TopologyError(
                f"edge(s) {_list(bad)} use unknown node ids (valid ids are 0..{n - 1}); "
                f"e.g. edge {bad[0]} = {tuple(int(v) for v in edges[bad[0]])}"
            )
        loops = np.flatnonzero(edges[:, 0] == edges[:, 1])
        if loops.size:
            raise TopologyError(
                f"self-loops are not allowed (a resistor from a node to itself carries no "
                f"current); edge(s) {_list(loops)} are loops, e.g. node {edges[loops[0], 0]}"
            )
        object.__setattr__(self, "n_nodes", n)
        object.__setattr__(self, "edges", _readonly(edges))
        if self.positions is not None:
            pos = check_finite_array(self.positions, "positions", error=TopologyError)
            if pos.shape != (n, 2):
                raise TopologyError(f"positions must have shape ({n}, 2), got {pos.shape}")
            object.__setattr__(self, "positions", _readonly(pos))
        if self.labels is not None:
            labels = tuple(self.labels)
            if len(labels) != n:
                raise TopologyError(f"labels must have {n} entries, got {len(labels)}")
            object.__setattr__(self, "labels", labels)
            if len(self._label_index) != n:
                raise TopologyError("node labels must be distinct (each label names one node)")

    # ------------------------------------------------------------------ basics
    @property
    def n_edges(self) -> int:
        """Number of edges ``m``."""
        return int(self.edges.shape[0])

    @property
    def tails(self) -> np.ndarray:
        """Start node ``a`` of every edge ``a -> b``."""
        return self.edges[:, 0]

    @property
    def heads(self) -> np.ndarray:
        """End node ``b`` of every edge ``a -> b``."""
        return self.edges[:, 1]

    def __repr__(self) -> str:
        return f"Network(n_nodes={self.n_nodes}, n_edges={self.n_edges})"

    def incidence(self) -> sp.csr_array:
        """Node-edge incidence ``B`` (n x m): ``B[a,e] = +1``, ``B[b,e] = -1``."""
        return self._incidence

    @cached_property
    def _incidence(self) -> sp.csr_array:
        m = self.n_edges
        rows = np.concatenate([self.tails, self.heads])
        cols = np.concatenate([np.arange(m), np.arange(m)])
        vals = np.concatenate([np.ones(m), -np.ones(m)])
        B = sp.csr_array((vals, (rows, cols)), shape=(self.n_nodes, m))
        return B

    def adjacency(self) -> sp.csr_array:
        """Symmetric 0/1 node adjacency (parallel edges collapsed)."""
        m = self.n_edges
        A = sp.csr_array(
            (np.ones(2 * m), (np.concatenate([self.tails, self.heads]),
                              np.concatenate([self.heads, self.tails]))),
            shape=(self.n_nodes, self.n_nodes),
        )
        A.data[:] = 1.0
        return A

    def components(self) -> tuple[int, np.ndarray]:
        """``(c, labels)``: number of connected components and the component of each node."""
        return self._components

    @cached_property
    def _components(self) -> tuple[int, np.ndarray]:
        c, labels = csgraph.connected_components(self.adjacency(), directed=False)
        return int(c), _readonly(labels)

    @property
    def n_components(self) -> int:
        return self.components()[0]

    @property
    def cycle_rank(self) -> int:
        """Dimension of the cycle space, ``m - n + c``."""
        return self.n_edges - self.n_nodes + self.n_components

    def degrees(self) -> np.ndarray:
        """Number of edge ends at each node (parallel edges counted)."""
        return np.bincount(self.edges.ravel(), minlength=self.n_nodes)

    def hop_distances(self, sources) -> np.ndarray:
        """Hop distance (n,) of every node to the nearest node of ``sources`` (inf if unreachable).

        One breadth-first search from a virtual node joined to every source.
        """
        n = self.n_nodes
        src = np.asarray(sources, dtype=np.int64)
        link = sp.csr_array((np.ones(src.size), (np.zeros(src.size, dtype=np.int64), src)), shape=(1, n))
        big = sp.block_array([[self.adjacency(), link.T], [link, None]], format="csr")
        return csgraph.shortest_path(big, unweighted=True, directed=False, indices=n)[:n] - 1.0

    # ------------------------------------------------------------- cycle basis
    def spanning_forest(self) -> np.ndarray:
        """Boolean mask of ``m`` edges that form a spanning forest (BFS trees)."""
        return self._forest_mask

    @cached_property
    def _forest_mask(self) -> np.ndarray:
        n, m = self.n_nodes, self.n_edges
        # Weighted graph whose weights encode the edge index (+1), so that the
        # spanning tree tells us which parallel edge was used.
        u = np.minimum(self.tails, self.heads)
        v = np.maximum(self.tails, self.heads)
        order = np.lexsort((np.arange(m), v, u))
        first = np.ones(m, dtype=bool)
        first[1:] = (u[order][1:] != u[order][:-1]) | (v[order][1:] != v[order][:-1])
        rep = order[first]  # one representative edge per node pair
        W = sp.csr_array((np.ones(rep.size), (u[rep], v[rep])), shape=(n, n))
        T = csgraph.minimum_spanning_tree(W).tocoo()
        rep_keys = u[rep] * n + v[rep]  # sorted, since ``order`` sorts by (u, v)
        tree_keys = np.minimum(T.row, T.col).astype(np.int64) * n + np.maximum(T.row, T.col)
        mask = np.zeros(m, dtype=bool)
        mask[rep[np.searchsorted(rep_keys, tree_keys)]] = True
        return _readonly(mask)

    def cycle_basis(self) -> sp.csc_array:
        """A fundamental cycle basis ``A`` (m x (m - n + c)) with ``B @ A = 0``.

        Column ``j`` is the signed indicator of the fundamental cycle closed by the
        ``j``-th non-tree edge (traversed along its own direction), with entries in
        {-1, 0, +1}. Computed by one sparse triangular solve on the tree incidence:
        ``A_tree = -B_T^{-1} B_N`` (rows of one root per component removed).
        """
        return self._cycle_basis

    @cached_property
    def _cycle_basis(self) -> sp.csc_array:
        m = self.n_edges
        tree = np.flatnonzero(self._forest_mask)
        chords = np.flatnonzero(~self._forest_mask)
        k = chords.size
        if k == 0:
            return sp.csc_array((m, 0))
        B = self.incidence().tocsc()
        c, comp = self.components()
        roots = np.array([np.flatnonzero(comp == i)[0] for i in range(c)])
        keep = np.setdiff1d(np.arange(self.n_nodes), roots)
        BT = B[:, tree][keep, :].tocsc()
        BN = B[:, chords][keep, :].tocsc()
        from scipy.sparse.linalg import spsolve

        X = spsolve(BT, -BN)
        X = sp.csc_array(X) if sp.issparse(X) else sp.csc_array(np.reshape(X, (tree.size, k)))
        X.data = np.round(X.data)
        X.eliminate_zeros()
        Xc = X.tocoo()
        rows = np.concatenate([tree[Xc.row], chords])
        cols = np.concatenate([Xc.col, np.arange(k)])
        vals = np.concatenate([Xc.data, np.ones(k)])
        return sp.csc_array((vals, (rows, cols)), shape=(m, k))

    # ------------------------------------------------------------ conversions
    @classmethod
    def from_edgelist(
        cls,
        edges: Iterable[Sequence[int]],
        n_nodes: int | None = None,
        positions: np.ndarray | None = None,
    ) -> "Network":
        """Build from ``[(a, b), ...]`` with integer node ids ``0..n-1``."""
        arr = _as_edges(list(edges))
        if n_nodes is None:
            n_nodes = int(arr.max()) + 1
        return cls(n_nodes, arr, positions=positions)

    @classmethod
    def from_networkx(cls, graph: nx.Graph, pos_attr: str = "pos") -> "Network":
        """Build from a networkx graph (any node labels; multigraphs keep parallel edges).

        Nodes are numbered in ``graph.nodes`` order and their labels kept. Undirected
        edges get the orientation in which networkx lists them. Edges are numbered in
        networkx order, or by their integer ``index`` attribute when every edge has a
        distinct one (as :meth:`to_networkx` writes), so that round trips keep edge ids.
        Node attribute ``pos_attr`` (if present on every node), else numeric ``x`` and
        ``y`` attributes on every node, become :attr:`positions`. A node attribute
        ``kirchnet_label`` on every node (written by ``to_networkx(graphml=True)``, whose
        GraphML node ids are strings) gives the original labels: an int, str, float or bool
        as is, a string Python literal (e.g. a tuple) when ``kirchnet_label_literal`` is true.
        """
        if not isinstance(graph, nx.Graph):
            raise TopologyError(f"from_networkx needs a networkx graph, got {type(graph).__name__}; "
                                f"use Network.from_edgelist for a list of (tail, head) pairs")
        nodes = list(graph.nodes)
        if not nodes:
            raise TopologyError("the networkx graph has no nodes")
        index = {v: i for i, v in enumerate(nodes)}
        edata = list(graph.edges(data=True))
        edges = [(index[a], index[b]) for a, b, _ in edata]
        # keep kirchnet's edge order when the graph came from to_networkx (attribute "index")
        order = [d.get("index") for *_, d in edata]
        if edges and all(isinstance(i, (int, np.integer)) for i in order) \
                and sorted(order) == list(range(len(order))):
            edges = [edges[i] for i in np.argsort(order)]
        nd = graph.nodes
        pos = None
        if all(pos_attr in nd[v] for v in nodes):
            pos = np.array([nd[v][pos_attr] for v in nodes], dtype=float)[:, :2]
        elif all(isinstance(nd[v].get(k), (int, float, np.number)) for v in nodes for k in ("x", "y")):
            pos = np.array([[nd[v]["x"], nd[v]["y"]] for v in nodes], dtype=float)
        if all("kirchnet_label" in nd[v] for v in nodes):
            import ast

            nodes = [ast.literal_eval(nd[v]["kirchnet_label"]) if nd[v].get("kirchnet_label_literal")
                     else nd[v]["kirchnet_label"] for v in nodes]
        labels = None if nodes == list(range(len(nodes))) else tuple(nodes)
        if not edges:
            raise TopologyError("the networkx graph has no edges")
        return cls(len(nodes), np.asarray(edges), positions=pos, labels=labels)

    def to_networkx(self, conductances: np.ndarray | None = None, graphml: bool = False) -> nx.MultiDiGraph:
        """Return a ``networkx.MultiDiGraph``; edge attribute ``index`` (and ``conductance``).

        ``graphml=False``: nodes are the original labels, positions the node attribute
        ``pos``. ``graphml=True``: a graph ``networkx.write_graphml`` can write and
        ``from_networkx(networkx.read_graphml(path))`` reads back with the same edge order,
        labels and positions: nodes are the ids ``0..n-1``, positions the attributes ``x``,
        ``y``, labels the attribute ``kirchnet_label`` (a Python literal string, flagged by
        ``kirchnet_label_literal``, for labels that are not int, str, float or bool).
        """
        G = nx.MultiDiGraph()
        labels = self.labels or tuple(range(self.n_nodes))
        keys = tuple(range(self.n_nodes)) if graphml else labels
        for i, lab in enumerate(labels):
            attrs: dict[str, Any] = {}
            if self.positions is not None:
                if graphml:
                    attrs["x"], attrs["y"] = float(self.positions[i, 0]), float(self.positions[i, 1])
                else:
                    attrs["pos"] = tuple(self.positions[i])
            if graphml:
                plain = isinstance(lab, (int, str, float, bool)) and not isinstance(lab, np.generic)
                attrs["kirchnet_label"] = lab if plain else repr(lab)
                if not plain:
                    attrs["kirchnet_label_literal"] = True
            G.add_node(keys[i], **attrs)
        for e, (a, b) in enumerate(self.edges):
            attrs = {"index": e}
            if conductances is not None:
                attrs["conductance"] = float(conductances[e])
            G.add_edge(keys[a], keys[b], key=e, **attrs)
        return G

    def write_graphml(self, path, conductances: np.ndarray | None = None, **edge_data) -> None:
        """Write GraphML (``to_networkx(conductances, graphml=True)``; ``edge_data[name]`` is an
        (m,) array of extra edge attributes) that ``from_networkx(nx.read_graphml(path))``
        reads back with the same edge order, labels and positions."""
        G = self.to_networkx(conductances, graphml=True)
        for name, values in edge_data.items():
            values = np.asarray(values)
            if values.shape != (self.n_edges,):
                raise TopologyError(f"edge attribute {name!r} must have shape ({self.n_edges},), got {values.shape}")
            for a, b, e in G.edges(keys=True):
                G.edges[a, b, e][name] = values[e].item()
        text = "\n".join(nx.generate_graphml(G)) + "\n"
        from .experiments.io import write_text

        write_text(path, text)

    def node_index(self, label: Hashable) -> int:
        """Integer id of an original node label (identity when no labels are stored)."""
        if self.labels is None:
            if isinstance(label, (int, np.integer)) and 0 <= int(label) < self.n_nodes:
                return int(label)
            raise TopologyError(f"unknown node id {label!r}; valid ids are 0..{self.n_nodes - 1}")
        try:
            return self._label_index[label]
        except (KeyError, TypeError):  # TypeError: an unhashable label cannot be a node label
            raise TopologyError(f"unknown node label {label!r}") from None

    @cached_property
    def _label_index(self) -> dict:
        """``{label: id}`` (built once: a list search per lookup made circuits with many
        terminals on large labelled graphs quadratic)."""
        return {lab: i for i, lab in enumerate(self.labels)}
