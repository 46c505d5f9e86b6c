"""Partial updates: which conductances may change (the ``tunable`` mask).

A tunable mask is a boolean array ``(m,)``; only edges with ``mask[e]`` are updated,
with every rule (projected gradient descent, theory.md 2: the update is the gradient
restricted to the tunable set ``T``). Masks are built from

* an explicit edge set (:class:`EdgeSet`, :func:`edge_mask`),
* a random fraction of the edges with a seed (:class:`RandomFraction`, :func:`random_mask`),
* a region around the inputs or the outputs (:class:`Region`, :func:`region_mask`).

**Distance of an edge.** With ``d(v)`` the hop distance (unweighted, undirected) from
node ``v`` to the nearest *anchor* node, an edge ``e = (a, b)`` has distance
``d(e) = min(d(a), d(b))``: edges touching an anchor have distance 0, their neighbours
1, and so on. A region of radius ``r`` holds the edges with ``d(e) <= r``. Anchors of
``"inputs"``: the input nodes and both ends of series-source edges; of ``"outputs"``:
output nodes and both ends of output edges and output pairs.

When few edges change per step, the trainer keeps the factorization and calls
:meth:`kirchnet.CircuitFactorization.update`, which applies a low-rank
(CHOLMOD up/downdate or Woodbury) correction instead of refactoring when the number of
changed edges is small (see :func:`next_factorization`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .circuit import Circuit, CircuitFactorization, Edge, Pair
from .errors import ParameterError, ShapeError, TopologyError
from .rules.base import Rule, RuleResult

__all__ = [
    "EdgeSet", "RandomFraction", "Region", "edge_mask", "random_mask", "region_mask",
    "node_distances", "edge_distances", "resolve_mask", "Masked", "next_factorization",
    "default_max_rank",
]


def edge_mask(n_edges: int, edges: Sequence[int]) -> np.ndarray:
    """Boolean mask ``(n_edges,)`` that is True on the listed edge indices."""
    idx = np.asarray(edges)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ShapeError(f"tunable edges must be integer indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64).ravel()
    bad = idx[(idx < 0) | (idx >= n_edges)]
    if bad.size:
        raise TopologyError(f"tunable edge index {int(bad[0])} out of range 0..{n_edges - 1}")
    mask = np.zeros(n_edges, dtype=bool)
    mask[idx] = True
    return mask


def random_mask(n_edges: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Mask with exactly ``round(fraction * n_edges)`` edges drawn uniformly without replacement."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ParameterError(f"fraction must lie in [0, 1], got {fraction!r}")
    k = int(round(float(fraction) * n_edges))
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_edges, dtype=bool)
    mask[rng.permutation(n_edges)[:k]] = True
    return mask


def _anchors(circuit: Circuit, of: str) -> np.ndarray:
    net = circuit.network
    if of == "inputs":
        nodes = [circuit.input_nodes, net.edges[circuit.source_edges].ravel()]
    elif of == "outputs":
        out = []
        for item in circuit.output_specs:
            if isinstance(item, Edge):
                out += list(net.edges[int(item.index)])
            elif isinstance(item, Pair):
                out += [net.node_index(item.a), net.node_index(item.b)]
            else:
                out.append(net.node_index(item))
        nodes = [np.asarray(out, dtype=np.int64)]
    else:
        raise ValueError(f"region must be around 'inputs' or 'outputs', got {of!r}")
    anchors = np.unique(np.concatenate([np.asarray(a, dtype=np.int64) for a in nodes]))
    if anchors.size == 0:
        raise TopologyError(f"the circuit has no {of} to measure a distance from")
    return anchors


def node_distances(circuit: Circuit, of: str = "inputs") -> np.ndarray:
    """Hop distance ``d(v)`` (n,) of every node to the nearest anchor (``inf`` if unreachable).

    One breadth-first search from a virtual node joined to every anchor.
    """
    return circuit.network.hop_distances(_anchors(circuit, of))


def edge_distances(circuit: Circuit, of: str = "inputs") -> np.ndarray:
    """Edge distance ``d(e) = min(d(a), d(b))`` (m,), see the module docstring."""
    d = node_distances(circuit, of)
    net = circuit.network
    return np.minimum(d[net.tails], d[net.heads])


def region_mask(circuit: Circuit, distance: int, of: str = "inputs") -> np.ndarray:
    """Edges within graph distance ``distance`` of the inputs (or outputs): ``d(e) <= distance``."""
    if distance < 0:
        raise ParameterError(f"distance must be >= 0, got {distance!r}")
    return edge_distances(circuit, of) <= distance


@dataclass(frozen=True)
class EdgeSet:
    """Tunable: exactly the listed edges."""

    edges: tuple[int, ...]

    def __init__(self, edges):
        object.__setattr__(self, "edges", tuple(int(e) for e in np.asarray(edges).ravel()))

    def mask(self, circuit: Circuit) -> np.ndarray:
        return edge_mask(circuit.network.n_edges, self.edges)


@dataclass(frozen=True)
class RandomFraction:
    """Tunable: a random ``fraction`` of the edges (exactly ``round(fraction*m)``), seeded."""

    fraction: float
    seed: int = 0

    def mask(self, circuit: Circuit) -> np.ndarray:
        return random_mask(circuit.network.n_edges, self.fraction, self.seed)


@dataclass(frozen=True)
class Region:
    """Tunable: edges within hop distance ``distance`` of the ``of`` nodes ("inputs"/"outputs")."""

    distance: int
    of: str = "inputs"

    def mask(self, circuit: Circuit) -> np.ndarray:
        return region_mask(circuit, self.distance, self.of)


def resolve_mask(tunable, circuit: Circuit) -> np.ndarray:
    """Boolean mask (m,) from ``None`` (all edges), a boolean array, integer edge indices,
    a float in (0, 1] (random fraction, seed 0), or an object with ``.mask(circuit)``."""
    m = circuit.network.n_edges
    if tunable is None:
        return np.ones(m, dtype=bool)
    if hasattr(tunable, "mask") and callable(tunable.mask):
        mask = np.asarray(tunable.mask(circuit), dtype=bool)
    elif isinstance(tunable, float):
        mask = random_mask(m, tunable, 0)
    else:
        arr = np.asarray(tunable)
        if arr.dtype == bool:
            if arr.shape != (m,):
                raise ShapeError(f"a boolean tunable mask must have shape ({m},), got {arr.shape}")
            mask = arr.copy()
        else:
            mask = edge_mask(m, arr)
    if not mask.any():
        raise ParameterError("the tunable mask selects no edge: nothing could be trained")
    return mask


class Masked(Rule):
    """Any rule restricted to the tunable edges: ``estimate * mask`` (projected gradient)."""

    def __init__(self, rule: Rule, tunable):
        self.rule = rule
        self.tunable = tunable
        self.loss = rule.loss
        self.name = f"{getattr(rule, 'name', 'rule')}[masked]"

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        res = self.rule.estimate(circuit, conductances, x, y, factorization=factorization)
        mask = resolve_mask(self.tunable, circuit)
        return res.replace(estimate=np.where(mask, res.estimate, 0.0), info={**res.info, "tunable": mask})


def default_max_rank(circuit: Circuit) -> int:
    """Rank threshold of low-rank updates (:attr:`Circuit.default_max_rank`)."""
    return circuit.default_max_rank


def next_factorization(factorization: CircuitFactorization | None, circuit: Circuit,
                       conductances: np.ndarray, max_rank: int | None = None
                       ) -> tuple[CircuitFactorization, bool]:
    """Factorization at ``conductances`` and whether it came from a low-rank update.

    With ``k`` changed edges that touch a free node (edges between two clamped nodes do
    not enter ``L_FF``) and ``k + rank already stacked <= max_rank`` the previous
    factorization is updated (:meth:`CircuitFactorization.update`: CHOLMOD up/downdate,
    Woodbury, or a cheap dense refactor); otherwise it is refactored from scratch.
    """
    g = np.asarray(conductances, dtype=float)
    if factorization is None or factorization.circuit is not circuit:
        return circuit.factorize(g), False
    new = factorization.update(g, max_rank=max_rank)
    return new, new is not factorization and new.low_rank_update
