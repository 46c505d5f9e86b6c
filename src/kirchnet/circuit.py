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
from . import gradient as _gradient
from .assembly import Pattern
from .elements import ElementMap
from .errors import (
    BoundaryConditionError,
    FloatingComponentError,
    KirchnetError,
    ParameterError,
    ShapeError,
    TopologyError,
)
from .network import Network
from .nonlinear import NonlinearFactorization
# factorization and state live in kirchnet.factorization (re-exported: kirchnet.circuit.State etc.)
from .factorization import _G_RANGE, CircuitFactorization, State, _check_finite, _check_magnitude  # noqa: F401


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
        """Compile the scatter pattern of ``L_FF`` and the driver columns once
        (:class:`kirchnet.assembly.Pattern`); its arrays stay reachable under their
        historical names (``_scatter_slot``, ``_dense_slot``, ...) for the kernels that
        stamp weights themselves (nonlinear tangents, ensembles, the small-network path)."""
        p = self._pattern = Pattern(self.network.tails, self.network.heads, self._free_pos,
                                    self.free_nodes.size, self.input_nodes, self.source_edges,
                                    self.clamped_nodes, self.network.n_nodes)
        self._scatter_slot, self._scatter_edge, self._scatter_sign = p.scatter_slot, p.scatter_edge, p.scatter_sign
        self._L_indices, self._L_indptr, self._L_nnz = p.L_indices, p.L_indptr, p.L_nnz
        self._dense_slot = p.dense_slot
        self.n_drivers = p.n_drivers
        self._drv_slot, self._drv_edge, self._drv_sign = p.drv_slot, p.drv_edge, p.drv_sign

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
        return self._pattern.laplacian_dense(g)

    def driver_matrix(self, conductances) -> np.ndarray:
        """``R_drv`` (n_free x D): free-node right-hand side per unit driver value.

        Drivers in order: node inputs, source edges, extra clamped nodes; column j is
        ``-L_{F,j}`` for a node driver and ``-g_e B_F[:, e]`` for a series source.
        """
        return self._pattern.driver_columns(conductances)

    def reduced_laplacian(self, conductances, check: bool = True) -> sp.csc_array:
        """``L_FF`` (free x free block of ``B diag(g) B^T``), assembled by scattering ``g``."""
        g = self.check_conductances(conductances) if check else conductances
        return self._pattern.laplacian(g)

    def edge_columns(self, edges) -> sp.csc_array:
        """Columns ``b_e`` restricted to the free nodes (n_free x k): ``dL_FF = C diag(dg) C^T``."""
        return sp.csc_array(self._B_free[:, np.asarray(edges, dtype=np.int64)])

    # ------------------------------------------------------------- factor/solve
    def factorize(self, conductances, backend: str | None = None, **solver_options) -> "CircuitFactorization":
        """Factorize ``L_FF(g)`` once; the result solves any number of right-hand sides."""
        g = self.check_conductances(conductances)
        if not self.is_linear:  # Newton on the co-content (kirchnet.nonlinear)
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
        return _gradient.loss_and_grad(self, conductances, x, y, loss=loss, wrt=wrt, per_sample=per_sample,
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
