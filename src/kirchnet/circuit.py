"""Boundary conditions on a network, its equilibrium (Kirchhoff) solve, and the State.

A :class:`Circuit` fixes the roles of nodes and edges:

* ``ground``: a node held at potential 0 (all potentials are relative to it);
* ``inputs``: clamped nodes (``int`` ids; the input is the node's potential) and/or
  series voltage sources on edges (:class:`Edge`; the input ``s_e`` adds to the
  resistor voltage, ``w_e = dv_e + s_e``);
* ``outputs``: node potentials (``int``), voltage drops across edges (:class:`Edge`,
  ``dv_e = u_a - u_b``) or across node pairs (:class:`Pair`, ``u_a - u_b``);
* ``clamped``: extra nodes held at given potentials (default 0), e.g. for clamped
  phases of learning rules; injected node currents ``J`` are accepted by every solve.

The equilibrium is Kirchhoff's current law on the free nodes ``F`` (theory.md, 1):
``L_FF u_F = -L_FC u_C - (B G s)_F + J_F`` with ``L = B G B^T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from . import _memory, solvers
from ._validation import _list, as_batch, check_positive_finite
from .elements import ElementMap
from .errors import (
    BoundaryConditionError,
    FloatingComponentError,
    IllConditionedError,
    KirchnetError,
    ParameterError,
    ShapeError,
    SolverError,
    TopologyError,
)
from .network import Network
from .solvers.base import ACCURACY, conductance_advice


@dataclass(frozen=True)
class Edge:
    """Refers to edge ``index`` of the network (a series-source input or a drop output)."""

    index: int


@dataclass(frozen=True)
class Pair:
    """An output read as the potential difference ``u[a] - u[b]``."""

    a: int
    b: int


def _node(network: Network, v, role: str) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise BoundaryConditionError(f"{role}: node ids must be integers, got {v!r}")
    try:
        return network.node_index(v)
    except TopologyError as exc:
        raise TopologyError(f"{role}: {exc}") from None


#: peak memory of building a Circuit, measured with tracemalloc on lattices (about 606 B/edge)
CIRCUIT_BYTES_PER_EDGE = 640.0


def _sequence(items, role: str) -> list:
    """``items`` as a list; refuses None, scalars and strings with a message naming ``role``."""
    if items is None or isinstance(items, (str, bytes, int, float, np.number, Edge, Pair)) or (
            isinstance(items, np.ndarray) and items.ndim != 1):
        raise BoundaryConditionError(
            f"{role} must be a list of node ids or Edge(...)/Pair(...) items, got {items!r}; "
            f"pass [] for none, or [{items!r}] for a single one"
        )
    try:
        return list(items)
    except TypeError:
        raise BoundaryConditionError(
            f"{role} must be a list of node ids or Edge(...)/Pair(...) items, got "
            f"{type(items).__name__} {items!r}"
        ) from None


def _edge(network: Network, e: Edge, role: str) -> int:
    if isinstance(e.index, (bool, np.bool_)) or not isinstance(e.index, (int, np.integer)):
        raise TopologyError(f"{role}: edge indices must be integers, got Edge({e.index!r})")
    idx = int(e.index)
    if not 0 <= idx < network.n_edges:
        raise TopologyError(
            f"{role}: unknown edge index {e.index}; valid indices are 0..{network.n_edges - 1}"
        )
    return idx


class Circuit:
    """A network with ground, inputs, outputs and optional extra clamps.

    Parameters
    ----------
    network: the :class:`~kirchnet.Network`.
    ground: node held at 0 V.
    inputs: sequence of node ids (clamped inputs) and/or :class:`Edge` (series sources).
        Column ``j`` of ``x`` drives ``inputs[j]``.
    outputs: sequence of node ids, :class:`Edge` or :class:`Pair`.
    clamped: extra clamped nodes; their potentials are the ``clamp`` argument of
        :meth:`solve` (default 0).
    backend: solver backend for :meth:`factorize` (see :mod:`kirchnet.solvers`).
    elements: element laws ``{law: edge_ids}`` (:mod:`kirchnet.elements`); edges not
        named are resistors. A nonlinear circuit's :meth:`factorize` returns a
        :class:`~kirchnet.nonlinear.NonlinearFactorization` (Newton equilibria).
    """

    def __init__(
        self,
        network: Network,
        ground: int = 0,
        inputs: Sequence = (),
        outputs: Sequence = (),
        clamped: Sequence[int] = (),
        backend: str = "auto",
        elements=None,
    ):
        if not isinstance(network, Network):
            raise TypeError(f"network must be a kirchnet.Network, got {type(network).__name__}")
        if backend not in solvers.BACKENDS:
            raise BoundaryConditionError(
                f"unknown backend {backend!r}; choose one of {', '.join(solvers.BACKENDS)}"
            )
        self.network = network
        self.backend = backend
        n = network.n_nodes
        self.ground = _node(network, ground, "ground")
        if not (np.any(network.tails == self.ground) or np.any(network.heads == self.ground)):
            raise BoundaryConditionError(
                f"ground: node {self.ground} has no edge (an isolated node), so it anchors nothing; "
                f"choose a node of the network's edges as the ground"
            )
        inputs = _sequence(inputs, "inputs")
        outputs = _sequence(outputs, "outputs")
        clamped = _sequence(clamped, "clamped")
        _memory.require(CIRCUIT_BYTES_PER_EDGE * (network.n_edges + n),
                        f"a circuit on {n:,} nodes and {network.n_edges:,} edges (incidence "
                        f"matrices and the L_FF pattern, about {CIRCUIT_BYTES_PER_EDGE:.0f} bytes per edge)",
                        "use a smaller network (or a machine with more memory)")

        node_cols, node_ids, edge_cols, edge_ids = [], [], [], []
        for j, item in enumerate(inputs):
            if isinstance(item, Edge):
                edge_cols.append(j)
                edge_ids.append(_edge(network, item, "inputs"))
            elif isinstance(item, Pair):
                raise BoundaryConditionError("inputs: use a node id or Edge(index), not Pair")
            else:
                node_cols.append(j)
                node_ids.append(_node(network, item, "inputs"))
        self.n_inputs = len(node_cols) + len(edge_cols)
        self.input_nodes = np.asarray(node_ids, dtype=np.int64)
        self.source_edges = np.asarray(edge_ids, dtype=np.int64)
        self._node_cols = np.asarray(node_cols, dtype=np.int64)
        self._edge_cols = np.asarray(edge_cols, dtype=np.int64)
        self.clamped_nodes = np.asarray([_node(network, v, "clamped") for v in clamped], dtype=np.int64)

        for arr, what in ((self.input_nodes, "an input"), (self.source_edges, "a source edge"),
                          (self.clamped_nodes, "a clamped node")):
            vals, counts = np.unique(arr, return_counts=True)
            if np.any(counts > 1):
                raise BoundaryConditionError(
                    f"{'edge' if 'edge' in what else 'node'} {vals[counts > 1][0]} is listed twice as {what}"
                )
        if self.ground in set(self.input_nodes.tolist()):
            raise BoundaryConditionError(f"node {self.ground} is the ground and cannot also be an input")
        if self.ground in set(self.clamped_nodes.tolist()):
            raise BoundaryConditionError(f"node {self.ground} is the ground and cannot also be clamped")
        both = np.intersect1d(self.input_nodes, self.clamped_nodes)
        if both.size:
            raise BoundaryConditionError(f"node {both[0]} is listed both as an input and as clamped")

        # outputs -> sparse readout P (k x n) over node potentials
        rows, cols, vals = [], [], []
        self.output_specs = tuple(outputs)
        for k, item in enumerate(self.output_specs):
            if isinstance(item, Edge):
                a, b = network.edges[_edge(network, item, "outputs")]
                rows += [k, k]; cols += [a, b]; vals += [1.0, -1.0]
            elif isinstance(item, Pair):
                a, b = _node(network, item.a, "outputs"), _node(network, item.b, "outputs")
                if a == b:
                    raise BoundaryConditionError(f"outputs: Pair({a}, {b}) reads a node against itself")
                rows += [k, k]; cols += [a, b]; vals += [1.0, -1.0]
            else:
                v = _node(network, item, "outputs")
                if v == self.ground:
                    raise BoundaryConditionError(
                        f"outputs: node {v} is the ground; its potential is always 0. "
                        f"Read another node or a Pair"
                    )
                rows.append(k); cols.append(v); vals.append(1.0)
        self.n_outputs = len(self.output_specs)
        self.readout = sp.csr_array((vals, (rows, cols)), shape=(self.n_outputs, n))

        is_clamped = np.zeros(n, dtype=bool)
        is_clamped[self.ground] = True
        is_clamped[self.input_nodes] = True
        is_clamped[self.clamped_nodes] = True
        self.is_clamped = is_clamped
        self.free_nodes = np.flatnonzero(~is_clamped)
        self._free_pos = np.full(n, -1, dtype=np.int64)
        self._free_pos[self.free_nodes] = np.arange(self.free_nodes.size)
        self._check_floating()

        B = network.incidence()
        self._B = B.tocsr()
        self._BT = B.T.tocsr()
        self._B_free = B[self.free_nodes, :].tocsr()
        self._BT_free = self._B_free.T.tocsr()
        for M in (self._B, self._BT, self._B_free, self._BT_free):
            M.sum_duplicates()  # marks them canonical: scipy re-checks every product otherwise
        self._build_pattern()
        #: element law of every edge (:class:`~kirchnet.elements.ElementMap`; default: resistors)
        self.elements = elements if isinstance(elements, ElementMap) else ElementMap(network.n_edges, elements)

    @property
    def is_linear(self) -> bool:
        """Whether every edge is a linear resistor (then every linear fast path applies)."""
        return self.elements.is_linear

    # ------------------------------------------------------------------ setup
    def _check_floating(self):
        c, labels = self.network.components()
        anchored = np.zeros(c, dtype=bool)
        anchored[labels[self.is_clamped]] = True
        if not anchored.all():
            comp = int(np.flatnonzero(~anchored)[0])
            nodes = np.flatnonzero(labels == comp)
            raise FloatingComponentError(
                f"the connected component with node(s) {_list(nodes)} contains no ground, input "
                f"or clamped node, so its potentials are undetermined; connect it or clamp one "
                f"of its nodes",
                nodes=nodes,
            )

    def _build_pattern(self):
        """Precompute the CSC pattern of ``L_FF`` and the scatter map from edges to entries."""
        nf = self.free_nodes.size
        a, b = self.network.tails, self.network.heads
        fa, fb = self._free_pos[a], self._free_pos[b]
        m = a.size
        e = np.arange(m)
        r_parts, c_parts, e_parts, s_parts = [], [], [], []
        for rr, cc, sign, mask in ((fa, fa, 1.0, fa >= 0), (fb, fb, 1.0, fb >= 0),
                                   (fa, fb, -1.0, (fa >= 0) & (fb >= 0)),
                                   (fb, fa, -1.0, (fa >= 0) & (fb >= 0))):
            r_parts.append(rr[mask]); c_parts.append(cc[mask]); e_parts.append(e[mask])
            s_parts.append(np.full(int(mask.sum()), sign))
        rows, cols = np.concatenate(r_parts), np.concatenate(c_parts)
        key = cols * max(nf, 1) + rows  # column-major order = CSC order
        uniq, inverse = np.unique(key, return_inverse=True)
        self._scatter_slot = inverse
        self._scatter_edge = np.concatenate(e_parts)
        self._scatter_sign = np.concatenate(s_parts)
        self._L_indices = (uniq % max(nf, 1)).astype(np.int32)
        ucols = uniq // max(nf, 1)
        self._L_indptr = np.searchsorted(ucols, np.arange(nf + 1)).astype(np.int32)
        self._L_nnz = uniq.size
        self._dense_slot = rows * max(nf, 1) + cols  # row-major slot of each contribution

        # Driver columns: R_drv[f, j] = sum over contributions of sign * g[edge].
        # Node drivers (inputs, extra clamps) in driver order: node inputs, sources, clamps.
        D_nodes = np.concatenate([self.input_nodes, np.full(self.source_edges.size, -1),
                                  self.clamped_nodes])
        col_of_node = np.full(self.network.n_nodes, -1, dtype=np.int64)
        node_js = np.flatnonzero(D_nodes >= 0)
        col_of_node[D_nodes[node_js]] = node_js
        dr, dc, de, ds = [], [], [], []
        # -L_FC u_C: edge (a, b) with a free and b a driver node gives +g_e at a (and vice versa)
        for free_end, other in ((fa, b), (fb, a)):
            mask = (free_end >= 0) & (col_of_node[other] >= 0)
            dr.append(free_end[mask]); dc.append(col_of_node[other][mask]); de.append(e[mask])
            ds.append(np.ones(int(mask.sum())))
        # series source s_e on edge (a, b): -g_e B_F[:, e] -> -g_e at a, +g_e at b
        src = self.source_edges
        src_cols = self.input_nodes.size + np.arange(src.size)
        for end, sign in ((fa[src], -1.0), (fb[src], 1.0)):
            mask = end >= 0
            dr.append(end[mask]); dc.append(src_cols[mask]); de.append(src[mask])
            ds.append(np.full(int(mask.sum()), sign))
        self.n_drivers = int(D_nodes.size)
        self._drv_slot = np.concatenate(dr) * max(self.n_drivers, 1) + np.concatenate(dc)
        self._drv_edge = np.concatenate(de)
        self._drv_sign = np.concatenate(ds)

    @cached_property
    def auto_backend(self) -> str:
        """The backend ``"auto"`` picks for this circuit (depends only on the pattern of ``L_FF``)."""
        return solvers.choose_backend(self.reduced_laplacian(np.ones(self.network.n_edges), check=False))

    @cached_property
    def _fill(self) -> dict:
        """:func:`kirchnet.solvers.predicted_fill` of the pattern of ``L_FF`` (computed once)."""
        return solvers.predicted_fill(self.reduced_laplacian(np.ones(self.network.n_edges), check=False))

    def _check_memory(self, backend: str) -> None:
        """Refuse a factorization whose estimated memory exceeds the limit (kirchnet._memory)."""
        nf = self.n_free
        if backend == "dense":
            _memory.require(24.0 * nf * nf, f"backend='dense' on {nf:,} free nodes (the dense L_FF, "
                            f"its copy and its Cholesky factor, {nf:,} x {nf:,} float64 each)",
                            "use backend='auto' (or 'splu'/'cholmod' for planar-like graphs, "
                            "'pcg' for expander-like ones)")
        elif backend in ("splu", "cholmod") and nf > solvers.DENSE_MAX:
            need = solvers.factor_memory(self._fill, backend)
            _memory.require(need, f"backend={backend!r} on {nf:,} free nodes (estimated Cholesky "
                            f"fill of the RCM-envelope analysis)",
                            "use backend='pcg' (conjugate gradients, no fill) or a smaller network")

    @cached_property
    def _readout_gather(self) -> tuple[np.ndarray, np.ndarray]:
        """``(nodes, P_used)``: outputs are ``potentials[:, nodes] @ P_used.T``."""
        nodes = np.unique(self.readout.indices)
        return nodes, self.readout[:, nodes].toarray()

    @cached_property
    def readout_free_T(self) -> np.ndarray:
        """Dense ``P_F^T`` (n_free x k): the adjoint right-hand side per unit output error."""
        return self.readout[:, self.free_nodes].T.toarray()

    def read_outputs(self, potentials: np.ndarray) -> np.ndarray:
        """Outputs ``o = P u`` (b, k) from potentials (b, n)."""
        nodes, P = self._readout_gather
        return potentials[:, nodes] @ P.T

    @cached_property
    def _symbolic(self):
        """CHOLMOD symbolic analysis of the (fixed) pattern of ``L_FF``, computed once."""
        g = np.ones(self.network.n_edges)
        return solvers.CholmodSymbolic(self.reduced_laplacian(g, check=False))

    def __getstate__(self):
        """Pickle / deepcopy without the cached CHOLMOD symbolic analysis (a C object that
        cannot be pickled; it is recomputed on the next CHOLMOD factorization)."""
        state = self.__dict__.copy()
        state.pop("_symbolic", None)
        return state

    # ------------------------------------------------------------- properties
    @property
    def n_free(self) -> int:
        return int(self.free_nodes.size)

    @property
    def default_max_rank(self) -> int:
        """Largest stacked rank of low-rank factorization updates, ``min(256, max(8, n_free // 50))``."""
        return min(256, max(8, self.n_free // 50))

    @property
    def n_clamped(self) -> int:
        return int(self.clamped_nodes.size)

    def __repr__(self) -> str:
        return (f"Circuit({self.network!r}, ground={self.ground}, n_inputs={self.n_inputs}, "
                f"n_outputs={self.n_outputs}, n_free={self.n_free})")

    def check_conductances(self, conductances) -> np.ndarray:
        """Validated ``(m,)`` float conductances (raises :class:`ParameterError`)."""
        try:
            return check_positive_finite(conductances, self.network.n_edges, "conductances")
        except KirchnetError:
            raise
        except (TypeError, ValueError) as exc:
            raise ParameterError(
                f"conductances must be {self.network.n_edges} positive numbers (one per edge); "
                f"got {type(conductances).__name__} that is not numeric ({exc})"
            ) from None

    # ------------------------------------------------------------- matrices
    def reduced_laplacian_dense(self, conductances, check: bool = True) -> np.ndarray:
        """Dense ``L_FF`` scattered directly from the edge values (small networks)."""
        g = self.check_conductances(conductances) if check else conductances
        nf = self.n_free
        return np.bincount(self._dense_slot, weights=self._scatter_sign * g[self._scatter_edge],
                           minlength=nf * nf).reshape(nf, nf)

    def driver_matrix(self, conductances) -> np.ndarray:
        """``R_drv`` (n_free x D): free-node right-hand side per unit driver value.

        Drivers in order: node inputs, source edges, extra clamped nodes; column j is
        ``-L_{F,j}`` for a node driver and ``-g_e B_F[:, e]`` for a series source.
        """
        nf, D = self.n_free, self.n_drivers
        return np.bincount(self._drv_slot, weights=self._drv_sign * conductances[self._drv_edge],
                           minlength=nf * D).reshape(nf, D)

    def reduced_laplacian(self, conductances, check: bool = True) -> sp.csc_array:
        """``L_FF`` (free x free block of ``B diag(g) B^T``), assembled by scattering ``g``."""
        g = self.check_conductances(conductances) if check else conductances
        data = np.bincount(self._scatter_slot, weights=self._scatter_sign * g[self._scatter_edge],
                           minlength=self._L_nnz)
        nf = self.n_free
        return sp.csc_array((data, self._L_indices, self._L_indptr), shape=(nf, nf))

    def edge_columns(self, edges) -> sp.csc_array:
        """Columns ``b_e`` restricted to the free nodes (n_free x k): ``dL_FF = C diag(dg) C^T``."""
        return sp.csc_array(self._B_free[:, np.asarray(edges, dtype=np.int64)])

    # ------------------------------------------------------------- factor/solve
    def factorize(self, conductances, backend: str | None = None, **solver_options) -> "CircuitFactorization":
        """Factorize ``L_FF(g)`` once; the result solves any number of right-hand sides."""
        g = self.check_conductances(conductances)
        if not self.is_linear:  # Newton on the co-content (kirchnet.nonlinear)
            from .nonlinear import NonlinearFactorization

            return NonlinearFactorization(self, g, backend or self.backend, **solver_options)
        return CircuitFactorization(self, g, backend or self.backend, **solver_options)

    def factorization_for(self, conductances, factorization: "CircuitFactorization | None" = None
                          ) -> "CircuitFactorization":
        """``factorization`` if it was built for these conductances, else a new one.

        Raises :class:`ParameterError` when a given factorization belongs to other
        conductances (its results would silently describe the wrong network).
        """
        if factorization is None:
            return self.factorize(conductances)
        if factorization.circuit is not self:
            raise BoundaryConditionError("the factorization belongs to another circuit")
        g = np.asarray(conductances, dtype=float)
        if g.shape != factorization.conductances.shape or not np.array_equal(g, factorization.conductances):
            raise ParameterError(
                "the factorization was built for other conductances; call circuit.factorize(g) "
                "(or factorization.update(g)) with the conductances you pass"
            )
        return factorization

    def solve(self, conductances, x, currents=None, clamp=None) -> "State":
        """Equilibrium for one sample ``x`` (n_inputs,) or a batch (batch, n_inputs)."""
        return self.factorize(conductances).solve(x, currents=currents, clamp=clamp)

    def loss_and_grad(self, conductances, x, y, loss="mse", wrt: str = "conductance",
                      per_sample: bool = False, factorization=None, full: bool = False):
        """Batch-mean loss and its exact gradient (adjoint method); see :func:`kirchnet.loss_and_grad`."""
        from .gradient import loss_and_grad

        return loss_and_grad(self, conductances, x, y, loss=loss, wrt=wrt, per_sample=per_sample,
                             factorization=factorization, full=full)

    # ------------------------------------------------------------- helpers
    def driver_values(self, x, clamp, batch_hint: int | None = None):
        """Split ``x`` into node inputs and edge sources and validate ``clamp``.

        Returns ``(xn (b, n_node_inputs), xs (b, n_sources), xc (b, n_clamped), single)``.
        """
        X, single = _numeric_batch(x, self.n_inputs, "x")
        b = X.shape[0]
        if b == 0:
            raise ShapeError(f"x has an empty batch (shape {np.shape(x)}): pass at least one sample "
                             f"of {self.n_inputs} input value(s)")
        xn = X[:, self._node_cols]
        xs = X[:, self._edge_cols]
        if clamp is None:
            xc = np.zeros((b, self.n_clamped))
        else:
            xc, _ = _numeric_batch(clamp, self.n_clamped, "clamp")
            if xc.shape[0] == 1 and b > 1:
                xc = np.broadcast_to(xc, (b, self.n_clamped))
            elif xc.shape[0] != b:
                raise ShapeError(f"clamp has batch {xc.shape[0]} but x has batch {b}")
        return xn, xs, xc, single

    def edge_sources(self, xs: np.ndarray) -> np.ndarray | None:
        """Series source per edge ``s`` (b, m) from the source inputs, or None."""
        if self.source_edges.size == 0:
            return None
        s = np.zeros((xs.shape[0], self.network.n_edges))
        s[:, self.source_edges] = xs
        return s


def _numeric_batch(x, width: int, name: str):
    """:func:`as_batch` with non-numeric (strings, ragged lists) input as a kirchnet error."""
    try:
        return as_batch(x, width, name)
    except KirchnetError:
        raise
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} must be a numeric array of shape ({width},) or (batch, {width}); "
                         f"got a {type(x).__name__} that numpy cannot read as numbers ({exc})") from None


def _check_finite(values: np.ndarray, what: str, g: np.ndarray) -> np.ndarray:
    """``values`` if finite, else a :class:`ParameterError` saying which quantity overflowed."""
    if not np.isfinite(values).all():
        raise ParameterError(
            f"{what} overflowed float64 (max conductance {float(np.max(g)):.3g}): rescale the "
            f"conductances or the inputs x (potentials are linear in x, and invariant to a "
            f"common factor on g)"
        )
    return values


#: node conductance sums (diagonal of L_FF) must lie in [1/_G_RANGE, _G_RANGE] siemens
_G_RANGE = 1e250


def _check_magnitude(diag: np.ndarray, g: np.ndarray) -> None:
    """Refuse conductances whose products in the solve and its checks would over/underflow."""
    if diag.size == 0:
        return
    hi = float(np.max(np.abs(diag)))  # the largest entry of L_FF is on its diagonal
    if hi > _G_RANGE or hi < 1.0 / _G_RANGE:
        raise ParameterError(
            f"conductances of {float(np.min(g)):.3g} .. {float(np.max(g)):.3g} S put the node sums of "
            f"L_FF up to {hi:.3g} S, outside the range [{1 / _G_RANGE:.0e}, {_G_RANGE:.0e}] in "
            f"which float64 solves (and their accuracy checks) neither overflow nor underflow; "
            f"rescale all conductances by a common factor (potentials are invariant to it, "
            f"currents scale with it)"
        )


class CircuitFactorization:
    """A factorized circuit at fixed conductances: solve forward, adjoint and nudged problems.

    Right-hand sides on the free nodes: ``rhs_F = -B_F diag(g) (B^T u_C + s) + J_F``.
    The drivers (node inputs, source edges, extra clamps) enter through ``D`` columns
    ``R_drv`` (n_free x D); a batch with more samples than drivers is solved through the
    transfer matrix ``H = L_FF^{-1} R_drv`` (D solves, computed once and kept with this
    factorization), otherwise sample by sample in one multi-column solve.
    """

    def __init__(self, circuit: Circuit, conductances: np.ndarray, backend: str = "auto",
                 factor: solvers.Factorization | None = None, **solver_options):
        self.circuit = circuit
        self.conductances = np.array(conductances, dtype=float)  # a copy: the caller's array stays writable
        self.conductances.setflags(write=False)
        #: whether every solve is verified (``check=False``: benchmarks only, see kirchnet.solvers.base)
        self.check = bool(solver_options.pop("check", True))
        if factor is None:
            if backend == "auto":
                backend = circuit.auto_backend
            circuit._check_memory(backend)
            if backend == "dense":
                L = circuit.reduced_laplacian_dense(self.conductances, check=False)
                diag = np.diagonal(L)
            else:
                L = circuit.reduced_laplacian(self.conductances, check=False)
                diag = L.data
            _check_finite(diag, "the reduced Laplacian L_FF (sums of conductances at a node)",
                          self.conductances)
            _check_magnitude(diag, self.conductances)
            symbolic = circuit._symbolic if backend == "cholmod" else None
            try:
                factor = solvers.factorize(L, backend, symbolic=symbolic, check=self.check,
                                           **solver_options)
            except IllConditionedError as exc:
                raise IllConditionedError(f"{exc}; {conductance_advice(self.conductances)}") from None
        # every solve of this factor is checked against the exact edge form L_FF = B_F G B_F^T
        factor.check = self.check
        factor.edge_form = (circuit._B_free, circuit._BT_free, self.conductances)
        self.factor = factor
        #: solver options (e.g. ``rtol``, ``maxiter``) reused by refactorizations in :meth:`update`
        self.solver_options = dict(solver_options)
        #: the backend name used for full refactorizations (kept across low-rank updates)
        self.base_backend = backend if backend != "auto" else factor.name.split("+")[0]
        # per-factorization caches (right-hand sides are fixed by the circuit)
        self._transfer = self._transfer_full = self._adjoint_basis = None
        self._driver_drops = self._adjoint_drops = None
        #: True when :meth:`update` produced this by a low-rank change of the previous factor
        self.low_rank_update = False

    @property
    def backend(self) -> str:
        return self.factor.name

    # -------------------------------------------------------------- raw solves
    def solve_free(self, rhs: np.ndarray) -> np.ndarray:
        """``L_FF^{-1} rhs`` for ``rhs`` (n_free,) or (n_free, k)."""
        return self.factor.solve(rhs)

    def _driver_matrix(self) -> np.ndarray:
        return self.circuit.driver_matrix(self.conductances)

    def prepare(self) -> "CircuitFactorization":
        """Compute the transfer matrix and the adjoint basis together (one multi-column solve)."""
        if self._transfer is None and self._adjoint_basis is None:
            R = self._driver_matrix()
            X = self.factor.solve(np.hstack([R, self.circuit.readout_free_T]))
            self._transfer, self._adjoint_basis = self._check_harmonic(X[:, :R.shape[1]]), X[:, R.shape[1]:]
        return self

    def transfer(self) -> np.ndarray:
        """``H = L_FF^{-1} R_drv`` (n_free x D): free potentials per unit driver."""
        if self._transfer is None:
            self._transfer = self._check_harmonic(self.factor.solve(self._driver_matrix()))
        return self._transfer

    def _violation(self, what: str, value: float) -> IllConditionedError:
        return IllConditionedError(
            f"the {self.backend} solve violates the maximum principle ({what}, off by {value:.1e}), "
            f"impossible in a passive circuit; {conductance_advice(self.conductances)}"
        )

    def _check_harmonic(self, H: np.ndarray) -> np.ndarray:
        """Maximum principle for the node-driver columns of ``H`` (inputs, clamps): a free
        potential per unit clamped potential is a harmonic measure, ``H >= 0``, ``sum_j H_j <= 1``."""
        c = self.circuit
        if not self.check or H.size == 0:
            return H
        ni, ns = c.input_nodes.size, c.source_edges.size
        Hn = H[:, np.r_[0:ni, ni + ns:H.shape[1]]] if ns else H
        if Hn.size:
            low, high = -float(Hn.min()), float(Hn.sum(axis=1).max()) - 1.0
            if max(low, high) > ACCURACY:
                raise self._violation("a free potential per volt at the inputs outside [0, 1]",
                                      max(low, high))
        return H

    def _check_range(self, u: np.ndarray, xn: np.ndarray, xc: np.ndarray) -> None:
        """Maximum principle per sample: free potentials within the clamped potentials' range."""
        clamped = np.concatenate([np.zeros((u.shape[0], 1)), xn, xc], axis=1)
        lo, hi = clamped.min(axis=1), clamped.max(axis=1)
        uf = u[:, self.circuit.free_nodes]
        if uf.size == 0:
            return
        off = np.maximum(lo - uf.min(axis=1), uf.max(axis=1) - hi)
        worst = int(np.argmax(off / np.maximum(hi - lo, 1e-300)))
        if off[worst] > ACCURACY * (hi[worst] - lo[worst]):
            raise self._violation(f"sample {worst}: free potentials in [{uf[worst].min():.4g}, "
                                  f"{uf[worst].max():.4g}] V, clamped ones in [{lo[worst]:.4g}, "
                                  f"{hi[worst]:.4g}] V", float(off[worst]))

    def transfer_full(self) -> np.ndarray:
        """``Hfull`` (n x D): potentials of every node per unit driver (drivers' own rows are 1)."""
        if self._transfer_full is None:
            c = self.circuit
            Hf = np.zeros((c.network.n_nodes, c.n_drivers))
            Hf[c.free_nodes] = self.transfer()
            ni, ns = c.input_nodes.size, c.source_edges.size
            Hf[c.input_nodes, np.arange(ni)] = 1.0
            Hf[c.clamped_nodes, ni + ns + np.arange(c.clamped_nodes.size)] = 1.0
            self._transfer_full = Hf
        return self._transfer_full

    def adjoint_basis(self) -> np.ndarray:
        """``Z = L_FF^{-1} P_F^T`` (n_free x n_outputs): adjoint potentials per unit output error."""
        if self._adjoint_basis is None:
            self._adjoint_basis = self.factor.solve(self.circuit.readout_free_T)
        return self._adjoint_basis

    def driver_drops(self) -> np.ndarray:
        """``B^T Hfull`` (m x D): edge voltage drops per unit driver."""
        if self._driver_drops is None:
            self._driver_drops = self.circuit._BT @ self.transfer_full()
        return self._driver_drops

    def adjoint_drops(self) -> np.ndarray:
        """``B_F^T Z`` (m x k): edge voltage drops of the adjoint run per unit output error."""
        if self._adjoint_drops is None:
            self._adjoint_drops = self.circuit._BT_free @ self.adjoint_basis()
        return self._adjoint_drops

    # -------------------------------------------------------------- forward
    def solve(self, x, currents=None, clamp=None) -> "State":
        """Equilibrium state for a batch; ``currents`` (n,) or (b, n) are injected node currents."""
        c = self.circuit
        xn, xs, xc, _ = c.driver_values(x, clamp)
        b = xn.shape[0]
        Z = np.concatenate([xn, xs, xc], axis=1)  # (b, D) in driver order
        D = Z.shape[1]
        _memory.require(16.0 * b * c.network.n_nodes, f"a batch of {b:,} samples on {c.network.n_nodes:,} "
                        f"nodes (potentials and a temporary, float64)", "solve a smaller batch at a time")
        if D and b > D:  # through the transfer matrix: D solves for the whole batch
            u = Z @ self.transfer_full().T
        else:
            u = np.zeros((b, c.network.n_nodes))
            if D:
                with np.errstate(over="ignore", invalid="ignore"):  # overflow: refused by solve
                    rhs = self._driver_matrix() @ Z.T
                u[:, c.free_nodes] = self.factor.solve(rhs).T
                if self.check and c.source_edges.size == 0:
                    self._check_range(u, xn, xc)
            u[:, c.input_nodes] = xn
            u[:, c.clamped_nodes] = xc
        if currents is not None:
            J, _ = as_batch(currents, c.network.n_nodes, "currents")
            if J.shape[0] not in (1, b):
                raise ShapeError(f"currents has batch {J.shape[0]} but x has batch {b}")
            u = u + self.solve_currents(J)
        return State(c, self.conductances, u, c.edge_sources(xs))

    def solve_currents(self, currents) -> np.ndarray:
        """Potentials (b, n) with every driver off and node currents ``J`` injected.

        This is the "current mode" run: inputs at 0 V (clamped nodes grounded, series
        sources shorted) and ``J`` (b, n) or (n,) injected; potentials are linear in ``J``.
        """
        c = self.circuit
        J, _ = as_batch(currents, c.network.n_nodes, "currents")
        u = np.zeros((J.shape[0], c.network.n_nodes))
        u[:, c.free_nodes] = self.factor.solve(J[:, c.free_nodes].T).T
        return u

    # -------------------------------------------------------------- updates
    def update(self, conductances, max_rank: int | None = None) -> "CircuitFactorization":
        """Factorization at new conductances, by a low-rank update when few edges changed.

        With ``k`` changed edges, ``L_FF`` changes by ``C diag(dg) C^T`` (``C`` the free
        rows of their incidence columns). If ``k`` (plus earlier stacked updates) is at
        most ``max_rank`` (default ``max(8, n_free // 50)`` and at most 256) the backend's
        update (CHOLMOD up/downdate, Woodbury, ...) is used, else a full refactorization.
        """
        c = self.circuit
        g = c.check_conductances(conductances)
        changed = np.flatnonzero(g != self.conductances)
        if changed.size == 0:
            return self
        if max_rank is None:
            max_rank = c.default_max_rank
        cols = c.edge_columns(changed)
        touches = np.asarray(abs(cols).sum(axis=0)).ravel() > 0
        changed, cols = changed[touches], cols[:, touches]
        opts = {**self.solver_options, "check": self.check}
        if changed.size == 0:  # only edges between clamped nodes changed: L_FF unchanged
            return CircuitFactorization(c, g, self.base_backend, factor=self.factor, **opts)
        if changed.size + self.factor.update_rank > max_rank:
            return CircuitFactorization(c, g, self.base_backend, **opts)
        dg = g[changed] - self.conductances[changed]
        L = (c.reduced_laplacian_dense(g, check=False) if self.base_backend == "dense"
             else c.reduced_laplacian(g, check=False))  # exact, unlike L + C diag(dg) C^T
        _check_magnitude(np.diagonal(L) if self.base_backend == "dense" else L.data, g)
        try:
            factor = self.factor.updated(cols, dg, L)
        except SolverError:  # the update cannot be done accurately: refactorize from scratch
            return CircuitFactorization(c, g, self.base_backend, **opts)
        new = CircuitFactorization(c, g, self.base_backend, factor=factor, **opts)
        new.low_rank_update = True
        return new


@dataclass(frozen=True, eq=False)
class State:
    """An equilibrium of a circuit for a batch of samples (batch is the first axis).

    ``potentials`` (b, n) relative to ground; derived quantities are computed on first
    access: ``drops = B^T u`` (b, m), ``resistor_voltages = drops + s`` (b, m),
    ``currents = g * resistor_voltages`` (b, m), ``outputs = P u`` (b, k) and dissipated
    ``power = sum_e g_e w_e^2`` (b,).
    """

    circuit: Circuit
    conductances: np.ndarray
    potentials: np.ndarray
    sources: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return self.potentials.shape[0]

    @cached_property
    def drops(self) -> np.ndarray:
        return np.asarray((self.circuit._BT @ self.potentials.T).T)

    @cached_property
    def resistor_voltages(self) -> np.ndarray:
        return self.drops if self.sources is None else self.drops + self.sources

    @cached_property
    def currents(self) -> np.ndarray:
        return _check_finite(self.conductances * self.resistor_voltages, "the edge currents g * w",
                             self.conductances)

    @cached_property
    def outputs(self) -> np.ndarray:
        return self.circuit.read_outputs(self.potentials)

    @cached_property
    def power(self) -> np.ndarray:
        return _check_finite(np.einsum("bm,bm->b", self.currents, self.resistor_voltages),
                             "the dissipated power sum_e g_e w_e^2", self.conductances)

    def energy_derivative(self) -> np.ndarray:
        """``dE/dg_e = 1/2 w_e^2`` per sample (b, m): the local quantity of Hebbian rules."""
        return 0.5 * self.resistor_voltages ** 2
