"""Network generators. Every generator is deterministic given its ``seed``."""

from __future__ import annotations

import os
from typing import Sequence

import networkx as nx
import numpy as np
from scipy.spatial import Delaunay

from . import _memory
from ._validation import check_int, check_positive, check_seed
from .errors import TopologyError
from .network import Network

#: bytes per edge a generator and a Circuit built on it need (edge list, incidence,
#: Laplacian pattern and generator temporaries), for the memory guard below
_BYTES_PER_EDGE = 200


def _available_memory() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(n_edges: int, what: str) -> None:
    """Refuse a graph whose edges alone would not fit in the available memory (instead of a
    MemoryError after seconds of work)."""
    need = int(n_edges) * _BYTES_PER_EDGE
    if os.environ.get(_memory.ENV, "").strip():  # an explicit KIRCHNET_MEMORY_LIMIT decides
        _memory.require(need, f"{what} with {n_edges:,} edges (edges, incidence, Laplacian)",
                        "use a smaller or sparser graph", error=TopologyError)
        return
    avail = _available_memory()
    if avail is not None and need > avail:
        raise TopologyError(f"{what} has {n_edges:,} edges and needs about {need / 1e9:.1f} GB "
                            f"(edges, incidence, Laplacian) but only {avail / 1e9:.1f} GB are "
                            f"available; use a smaller or sparser graph")


def _unique_undirected(edges: np.ndarray) -> np.ndarray:
    lo = np.minimum(edges[:, 0], edges[:, 1])
    hi = np.maximum(edges[:, 0], edges[:, 1])
    return np.unique(np.stack([lo, hi], axis=1), axis=0)


def lattice(rows: int, cols: int, diagonals: bool = False) -> Network:
    """Square lattice of ``rows x cols`` nodes; node ``r * cols + c`` sits at ``(c, r)``.

    Horizontal edges point right, vertical edges point up; with ``diagonals`` each
    cell also gets both diagonals.
    """
    rows, cols = check_int(rows, "rows", error=TopologyError), check_int(cols, "cols", error=TopologyError)
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise TopologyError(f"a lattice needs at least 2 nodes, got rows={rows}, cols={cols}")
    _check_memory((2 + 2 * bool(diagonals)) * rows * cols, f"lattice({rows}, {cols})")
    idx = np.arange(rows * cols).reshape(rows, cols)
    parts = [
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], axis=1),
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], axis=1),
    ]
    if diagonals:
        parts.append(np.stack([idx[:-1, :-1].ravel(), idx[1:, 1:].ravel()], axis=1))
        parts.append(np.stack([idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()], axis=1))
    edges = np.concatenate([p for p in parts if p.size])
    cc, rr = np.meshgrid(np.arange(cols), np.arange(rows))
    pos = np.stack([cc.ravel(), rr.ravel()], axis=1).astype(float)
    return Network(rows * cols, edges, positions=pos)


def random_connected(
    n: int, m: int | None = None, mean_degree: float | None = None, seed: int = 0
) -> Network:
    """Random connected simple graph: a random spanning tree plus random extra edges.

    Give exactly one of ``m`` (number of edges, ``n-1 <= m <= n(n-1)/2``) or
    ``mean_degree`` (``m = round(n * mean_degree / 2)``).
    """
    if (m is None) == (mean_degree is None):
        raise TopologyError("give exactly one of m or mean_degree")
    n = check_int(n, "n", error=TopologyError)
    seed = check_seed(seed, error=TopologyError)
    if n < 2:
        raise TopologyError(f"a random connected graph needs n >= 2, got {n}")
    if m is None:
        mean_degree = check_positive(mean_degree, "mean_degree", error=TopologyError)
        m = int(round(n * mean_degree / 2))
    else:
        m = check_int(m, "m", error=TopologyError)
    max_m = n * (n - 1) // 2
    if not n - 1 <= m <= max_m:
        raise TopologyError(f"m must be between n-1={n - 1} and n(n-1)/2={max_m}, got {m}")
    _check_memory(m, f"random_connected({n}, m={m})")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # random recursive tree: node perm[k] attaches to a uniformly chosen earlier node
    parents = perm[(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)]
    tree = np.stack([parents, perm[1:]], axis=1)
    edges = _unique_undirected(tree)
    while edges.shape[0] < m:
        need = m - edges.shape[0]
        cand = rng.integers(0, n, size=(2 * need + 16, 2))
        cand = cand[cand[:, 0] != cand[:, 1]]
        merged = _unique_undirected(np.concatenate([edges, cand]))
        if merged.shape[0] > m:
            # keep the tree edges and a random subset of the new ones
            lo, hi = edges[:, 0] * n + edges[:, 1], merged[:, 0] * n + merged[:, 1]
            new = merged[~np.isin(hi, lo)]
            new = new[rng.permutation(new.shape[0])[:need]]
            merged = np.concatenate([edges, new])
        edges = merged
    flip = rng.random(edges.shape[0]) < 0.5
    edges = np.where(flip[:, None], edges[:, ::-1], edges)
    return Network(n, edges[rng.permutation(edges.shape[0])])


def random_regular(n: int, degree: int, seed: int = 0) -> Network:
    """Random ``degree``-regular graph (networkx); retried with new seeds until connected."""
    n, degree = check_int(n, "n", error=TopologyError), check_int(degree, "degree", error=TopologyError)
    seed = check_seed(seed, error=TopologyError)
    if degree < 1 or degree >= n or (n * degree) % 2:
        raise TopologyError(f"no {degree}-regular graph on {n} nodes (need degree < n, n*degree even)")
    for attempt in range(100):
        G = nx.random_regular_graph(degree, n, seed=seed + 7919 * attempt)
        if nx.is_connected(G):
            return Network(n, np.asarray(list(G.edges), dtype=np.int64))
    raise TopologyError(f"could not draw a connected {degree}-regular graph on {n} nodes")


def delaunay(n: int, seed: int = 0) -> Network:
    """Delaunay triangulation of ``n`` uniform random points in the unit square."""
    n, seed = check_int(n, "n", error=TopologyError), check_seed(seed, error=TopologyError)
    if n < 3:
        raise TopologyError(f"a Delaunay triangulation needs n >= 3 points, got {n}")
    rng = np.random.default_rng(seed)
    pts = rng.random((n, 2))
    tri = Delaunay(pts)
    s = tri.simplices
    edges = np.concatenate([s[:, [0, 1]], s[:, [1, 2]], s[:, [0, 2]]])
    return Network(n, _unique_undirected(edges), positions=pts)


def layered(sizes: Sequence[int]) -> Network:
    """Layered (crossbar) network: complete bipartite between consecutive layers.

    Nodes are numbered layer by layer; edges point from layer ``l`` to ``l + 1``.
    Positions put layer ``l`` at ``x = l``.
    """
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TopologyError(f"sizes must be a list of layer sizes, e.g. [4, 8, 2], got {sizes!r}")
    sizes = [check_int(s, f"sizes[{i}]", error=TopologyError) for i, s in enumerate(sizes)]
    if len(sizes) < 2 or min(sizes) < 1:
        raise TopologyError(f"layered needs at least two non-empty layers, got {sizes}")
    _check_memory(sum(a * b for a, b in zip(sizes, sizes[1:])), f"layered({sizes})")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    parts, pos = [], []
    for l, size in enumerate(sizes):
        ys = np.linspace(0, 1, size) if size > 1 else np.array([0.5])
        pos.append(np.stack([np.full(size, float(l)), ys], axis=1))
        if l + 1 < len(sizes):
            a = np.arange(offsets[l], offsets[l + 1])
            b = np.arange(offsets[l + 1], offsets[l + 2])
            A, Bm = np.meshgrid(a, b, indexing="ij")
            parts.append(np.stack([A.ravel(), Bm.ravel()], axis=1))
    return Network(int(offsets[-1]), np.concatenate(parts), positions=np.concatenate(pos))


def complete(n: int) -> Network:
    """Complete graph on ``n`` nodes, edges ``i -> j`` for ``i < j``."""
    n = check_int(n, "n", error=TopologyError)
    if n < 2:
        raise TopologyError(f"a complete graph needs n >= 2, got {n}")
    _check_memory(n * (n - 1) // 2, f"complete({n})")
    i, j = np.triu_indices(n, k=1)
    ang = 2 * np.pi * np.arange(n) / n
    return Network(n, np.stack([i, j], axis=1), positions=np.stack([np.cos(ang), np.sin(ang)], 1))


def deep_resistive(layers: Sequence[int], gain: float = 1.0, diode_split: float = 0.5,
                   diode_bias: float = 0.0, bias: float = 0.0) -> Network:
    """The network of a deep resistive network (DRN): ``2 layers[0]`` input nodes
    (``gain (x, -x)``), dense layer-to-layer edges, two bias-source nodes (``bias != 0``)
    tied to every non-input node, and one ideal-diode edge from each hidden node to the
    ground (node 0). A thin wrapper: the construction lives in
    :meth:`kirchnet.drn.DRN.to_circuit`, which also gives the :class:`~kirchnet.Circuit`
    (inputs, outputs, :class:`~kirchnet.elements.IdealDiode` laws) and the edge scales;
    :func:`kirchnet.drn.deep_resistive_circuit` builds all three."""
    from .drn import DRN, DRNSpec

    spec = DRNSpec(layers=tuple(layers), gain=gain, diode_split=diode_split,
                   diode_bias=diode_bias, bias=bias)
    _check_memory(spec.n_params, f"deep_resistive({list(spec.layers)})")
    return DRN(spec).to_circuit()[0].network
