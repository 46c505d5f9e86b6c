"""Hypothesis strategies for random circuits, and an independent reference model.

The reference model (:func:`reference_solve`, :func:`reference_losses`) re-derives the
equilibrium from the problem specification alone (dense Laplacian ``B diag(g) B^T``,
Kirchhoff's current law on the free nodes) in extended precision (``np.longdouble``,
batched Gaussian elimination), so it shares no code with kirchnet's solvers and its
rounding error is far below float64's. Finite differences of the reference loss are
therefore limited by truncation, not by cancellation, even at conductance ratios 1e6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from kirchnet import Circuit, Edge, Network, Pair

LD = np.longdouble


# --------------------------------------------------------------------- graphs
def random_multigraph(rng: np.random.Generator, n: int, n_extra: int, n_parallel: int,
                      pendant: bool = True) -> np.ndarray:
    """Edge array (m, 2) of a connected multigraph on ``n`` nodes.

    A random recursive spanning tree (all of its edges are bridges until covered by a
    cycle), ``n_extra`` random chords (cycles), ``n_parallel`` duplicated edges
    (parallel edges, random orientation). With ``pendant`` the last node is a leaf
    that no chord or duplicate touches, so the graph always has at least one bridge.
    Edge orientations and order are random.
    """
    core = n - 1 if pendant and n >= 3 else n
    perm = rng.permutation(core)
    parents = perm[(rng.random(core - 1) * np.arange(1, core)).astype(np.int64)]
    edges = [np.stack([parents, perm[1:]], axis=1)]
    if core < n:
        edges.append(np.array([[rng.integers(core), n - 1]]))
    if n_extra and core >= 2:
        a = rng.integers(0, core, size=n_extra)
        b = (a + rng.integers(1, core, size=n_extra)) % core
        edges.append(np.stack([a, b], axis=1))
    E = np.concatenate(edges)
    if n_parallel:
        usable = np.flatnonzero((E < core).all(axis=1))
        E = np.concatenate([E, E[rng.choice(usable, size=n_parallel)]])
    flip = rng.random(E.shape[0]) < 0.5
    E = np.where(flip[:, None], E[:, ::-1], E)
    return E[rng.permutation(E.shape[0])]


def log_conductances(rng: np.random.Generator, m: int, decades: float) -> np.ndarray:
    """Log-uniform conductances spanning exactly ``10**decades`` (both extremes present)."""
    logs = rng.uniform(-decades / 2, decades / 2, size=m)
    if m >= 2:
        i, j = rng.choice(m, size=2, replace=False)
        logs[i], logs[j] = -decades / 2, decades / 2
    return 10.0 ** logs


def bridges(edges: np.ndarray, n: int) -> np.ndarray:
    """Indices of bridge edges (an edge is a bridge iff deleting it adds a component)."""
    import networkx as nx

    G = nx.MultiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from(map(tuple, edges))
    base = nx.number_connected_components(G)
    out = []
    for e, (a, b) in enumerate(edges):
        H = nx.MultiGraph(G)
        H.remove_edge(int(a), int(b))
        if nx.number_connected_components(H) > base:
            out.append(e)
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------- problems
@dataclass
class Problem:
    """A random circuit problem: the topology, boundary roles, parameters and data."""

    network: Network
    ground: int
    inputs: list  # node ids and Edge(...) in column order of x
    outputs: list  # node ids, Edge(...), Pair(...)
    clamped: list
    g: np.ndarray
    x: np.ndarray  # (b, n_inputs)
    clamp: np.ndarray  # (b, n_clamped)
    y: np.ndarray  # (b, k) for mse / probabilities, (b,) labels
    loss: str = "mse"
    currents: np.ndarray | None = None  # (b, n) injected node currents, or None
    extra: dict = field(default_factory=dict)

    def circuit(self, backend: str = "auto") -> Circuit:
        return Circuit(self.network, ground=self.ground, inputs=self.inputs,
                       outputs=self.outputs, clamped=self.clamped, backend=backend)


@st.composite
def problems(draw, min_nodes: int = 3, max_nodes: int = 40, loss: str = "mse",
             max_decades: float = 6.0, max_batch: int = 5, allow_clamped: bool = True,
             node_inputs: bool = True, edge_inputs: bool = True, clamp_values: bool = True,
             two_components: bool = False, decades: float | None = None):
    """A random :class:`Problem` on a connected multigraph with parallel edges and bridges.

    Inputs mix clamped nodes and series-source edges (interleaved in ``x``), outputs
    mix node potentials, edge drops and node pairs; conductances span up to
    ``10**max_decades``. Extra clamped nodes get random potentials (``clamp``), or 0
    with ``clamp_values=False`` (as :func:`kirchnet.loss_and_grad` assumes). With
    ``two_components`` a second component is added and anchored by a node input.
    ``decades`` fixes the conductance spread (default: drawn from 0, 1, 3, ``max_decades``).
    """
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(min_nodes, max_nodes))
    n_extra = draw(st.integers(0, n))
    n_parallel = draw(st.integers(1, 4))
    edges = random_multigraph(rng, n, n_extra, n_parallel)
    second = []
    if two_components:  # a second component, anchored by a node input
        n2 = draw(st.integers(2, 8))
        edges = np.concatenate([edges, n + random_multigraph(rng, n2, draw(st.integers(0, n2)), 1)])
        second = list(range(n, n + n2))
        n += n2
        node_inputs = True
    net = Network(n, edges)
    m = net.n_edges
    if decades is None:
        decades = draw(st.sampled_from([0.0, 1.0, 3.0, max_decades]))
    g = log_conductances(rng, m, decades) * 10.0 ** rng.uniform(-2, 2)

    nodes = rng.permutation(n - len(second))
    ground = int(nodes[0])
    others = [int(v) for v in nodes[1:]]
    if second:
        anchor = int(rng.choice(second))
        rest2 = [v for v in second if v != anchor]
        others = [anchor] + [int(v) for v in rng.permutation(others + rest2)]
    n_node_in = draw(st.integers(0, min(3, len(others) - 1))) if node_inputs else 0
    if second:
        n_node_in = max(n_node_in, 1)
    n_edge_in = draw(st.integers(0, 2)) if edge_inputs else 0
    if n_node_in + n_edge_in == 0:
        if edge_inputs:
            n_edge_in = 1
        else:
            n_node_in = 1
    node_in = others[:n_node_in]
    rest = others[n_node_in:]
    n_clamped = draw(st.integers(0, 1)) if allow_clamped and len(rest) > 2 else 0
    clamped = rest[:n_clamped]
    free = rest[n_clamped:]
    edge_in = [Edge(int(e)) for e in rng.choice(m, size=n_edge_in, replace=False)]
    inputs: list = list(node_in) + edge_in
    order = rng.permutation(len(inputs))
    inputs = [inputs[i] for i in order]

    k_min, k_max = (2, 4) if loss == "cross_entropy" else (1, 3)
    k = draw(st.integers(k_min, k_max))
    kinds = draw(st.lists(st.sampled_from(["node", "edge", "pair"]), min_size=k, max_size=k))
    outputs: list = []
    free_pool = list(free)
    for kind in kinds:
        if kind == "node" and free_pool:
            outputs.append(free_pool.pop(rng.integers(len(free_pool))))
        elif kind == "pair" and free:
            a = int(free[rng.integers(len(free))])
            b = int(rng.choice([v for v in range(n) if v != a]))
            outputs.append(Pair(a, b))
        else:
            outputs.append(Edge(int(rng.integers(m))))

    b = draw(st.integers(1, max_batch))
    x = rng.normal(size=(b, len(inputs)))
    clamp = rng.normal(size=(b, len(clamped))) if clamp_values else np.zeros((b, len(clamped)))
    if loss == "cross_entropy":
        if draw(st.booleans()):
            y = rng.integers(0, k, size=b)
        else:
            y = rng.dirichlet(np.ones(k), size=b)
        x = 3.0 * x  # logits of order one
    else:
        y = rng.normal(size=(b, k))
    return Problem(net, ground, inputs, outputs, clamped, g, x, clamp, y, loss,
                   extra={"decades": decades, "seed": seed})


# ---------------------------------------------------------- reference model
def _solve_spd_batched(A: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Solve ``A X = R`` for SPD ``A`` (..., n, n) and ``R`` (..., n, k) without pivoting."""
    A = A.copy()
    R = R.copy()
    n = A.shape[-1]
    for j in range(n - 1):
        f = A[..., j + 1:, j] / A[..., j, j][..., None]
        A[..., j + 1:, j + 1:] -= f[..., :, None] * A[..., None, j, j + 1:]
        R[..., j + 1:, :] -= f[..., :, None] * R[..., None, j, :]
    X = np.zeros_like(R)
    for j in range(n - 1, -1, -1):
        acc = (A[..., j, j + 1:, None] * X[..., j + 1:, :]).sum(axis=-2)
        X[..., j, :] = (R[..., j, :] - acc) / A[..., j, j][..., None]
    return X


def readout_matrix(problem: Problem) -> np.ndarray:
    """Dense ``P`` (k, n) built from the output specification."""
    n = problem.network.n_nodes
    P = np.zeros((len(problem.outputs), n))
    for j, o in enumerate(problem.outputs):
        if isinstance(o, Edge):
            a, b = problem.network.edges[o.index]
            P[j, a] += 1.0
            P[j, b] -= 1.0
        elif isinstance(o, Pair):
            P[j, o.a] += 1.0
            P[j, o.b] -= 1.0
        else:
            P[j, o] = 1.0
    return P


def _reference_system(problem: Problem):
    """Dense long-double pieces of ``L_FF u_F = rhs_F`` at the problem's conductances."""
    net = problem.network
    n, m = net.n_nodes, net.n_edges
    B = np.zeros((n, m), dtype=LD)
    B[net.tails, np.arange(m)] = 1
    B[net.heads, np.arange(m)] = -1
    g = np.asarray(problem.g, dtype=LD)
    node_cols = [j for j, v in enumerate(problem.inputs) if not isinstance(v, Edge)]
    edge_cols = [j for j, v in enumerate(problem.inputs) if isinstance(v, Edge)]
    C = np.asarray([problem.ground] + [problem.inputs[j] for j in node_cols]
                   + list(problem.clamped), dtype=np.int64)
    F = np.setdiff1d(np.arange(n), C)
    bsz = problem.x.shape[0]
    uC = np.concatenate([np.zeros((bsz, 1)), problem.x[:, node_cols], problem.clamp],
                        axis=1).astype(LD)
    s = np.zeros((bsz, m), dtype=LD)
    for j in edge_cols:
        s[:, problem.inputs[j].index] = problem.x[:, j]
    # per edge and sample: the resistor voltage contributed by the drivers, b_C^T u_C + s
    drive = uC @ B[C] + s  # (b, m)
    LFF = (B[F] * g) @ B[F].T
    rhs = -(B[F] * g) @ drive.T  # (nF, b)
    if problem.currents is not None:
        rhs = rhs + np.asarray(problem.currents, dtype=LD)[:, F].T
    return dict(B=B, g=g, C=C, F=F, uC=uC, drive=drive, LFF=LFF, rhs=rhs, n=n, b=bsz)


def reference_solve(problem: Problem, edges=None, values=None) -> np.ndarray:
    """Node potentials in long double, (b, n), or (p, b, n) for ``p`` one-edge changes.

    KCL on the free nodes, assembled densely from the edge list:
    ``L_FF u_F = -(B_F diag(g) (B_C^T u_C + s)) + J_F`` with ``L_FF = B_F diag(g) B_F^T``.
    With ``edges`` (p,) and ``values`` (p,), problem ``j`` has ``g[edges[j]] = values[j]``
    (a rank-one change of ``L_FF`` and of the right-hand side).
    """
    S = _reference_system(problem)
    F, C = S["F"], S["C"]
    if edges is None:
        LFF, rhs = S["LFF"][None], S["rhs"][None]
    else:
        edges = np.asarray(edges, dtype=np.int64)
        dg = np.asarray(values, dtype=LD) - S["g"][edges]  # (p,)
        bF = S["B"][F][:, edges].T  # (p, nF)
        LFF = S["LFF"][None] + dg[:, None, None] * bF[:, :, None] * bF[:, None, :]
        rhs = S["rhs"][None] - (dg[:, None, None] * bF[:, :, None]) * S["drive"][:, edges].T[:, None, :]
    uF = _solve_spd_batched(LFF, rhs)  # (p, nF, b)
    u = np.zeros((LFF.shape[0], S["b"], S["n"]), dtype=LD)
    u[:, :, C] = S["uC"]
    u[:, :, F] = np.swapaxes(uF, -1, -2)
    return u[0] if edges is None else u


def reference_losses(problem: Problem, edges=None, values=None, loss: str | None = None) -> np.ndarray:
    """Per-sample losses in long double, (b,) or (p, b) (see :func:`reference_solve`)."""
    loss = loss or problem.loss
    u = reference_solve(problem, edges, values)
    o = np.einsum("kn,...bn->...bk", readout_matrix(problem).astype(LD), u)
    if loss == "mse":
        d = o - np.asarray(problem.y, dtype=LD)
        return 0.5 * (d * d).sum(axis=-1)
    y = np.asarray(problem.y)
    if y.ndim == 1:
        p = np.zeros(o.shape[-2:], dtype=LD)
        p[np.arange(y.size), y] = 1
    else:
        p = y.astype(LD)
    zmax = o.max(axis=-1, keepdims=True)
    lse = zmax[..., 0] + np.log(np.exp(o - zmax).sum(axis=-1))
    return (p * (lse[..., None] - o)).sum(axis=-1)


#: sixth-order central stencil for f'(0): sum_k w_k (f(k h) - f(-k h)) / h
_STENCIL = ((1, LD(45) / 60), (2, LD(-9) / 60), (3, LD(1) / 60))


def fd_log_gradient(problem: Problem, h: float = 1e-2, loss: str | None = None) -> np.ndarray:
    """Central finite differences in log-conductance: ``D[s, e] = g_e dC_s/dg_e`` (b, m).

    Each conductance is scaled by ``exp(+-k h)`` (a step relative to its own value, so
    edges whose conductances differ by 1e6 are perturbed by the same fraction), with the
    sixth-order central stencil. Since ``log r = -log g`` the same numbers give both
    gradients: ``dC/dg_e = D_e / g_e`` and ``dC/dr_e = -D_e g_e``. Along one log-
    conductance the loss is a rational function whose poles lie at distance >= 1
    (``g_e`` times the effective resistance across edge ``e`` is at most 1), so the
    truncation error is ~ h^6 and the long-double rounding ~ 1e-19 / h.
    """
    g = np.asarray(problem.g, dtype=LD)
    m = g.size
    e = np.arange(m)
    total = 0
    for k, w in _STENCIL:
        edges = np.concatenate([e, e])
        values = np.concatenate([g * np.exp(LD(k * h)), g * np.exp(LD(-k * h))])
        Cs = reference_losses(problem, edges, values, loss)  # (2m, b)
        total = total + w * (Cs[:m] - Cs[m:])
    return np.asarray((total / LD(h)).T, dtype=float)


def fd_gradient(problem: Problem, wrt: str = "conductance", h: float = 1e-2,
                loss: str | None = None) -> np.ndarray:
    """Per-sample finite-difference gradient (b, m) w.r.t. conductances or resistances."""
    D = fd_log_gradient(problem, h, loss)
    g = np.asarray(problem.g, dtype=float)
    return D / g if wrt == "conductance" else -D * g


def rel_err(actual, expected) -> float:
    """Norm-wise relative error ``||actual - expected|| / ||expected||``."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


# ------------------------------------------------------------- exact reference
def exact_potentials(network: Network, g, ground: int, inputs: list, x, clamped=(), clamp=None,
                     currents=None) -> np.ndarray:
    """Node potentials (b, n) in exact rational arithmetic (:class:`fractions.Fraction`).

    Every float64 conductance and input is converted exactly, ``L_FF u_F = rhs_F`` is
    assembled from the edge list and solved by Gaussian elimination without rounding, so
    the result (rounded once to float64) is the true solution of the float64 data at any
    conductance ratio. Small circuits only (O(n^3) fraction operations per sample).
    """
    from fractions import Fraction

    x = np.atleast_2d(np.asarray(x, dtype=float))
    b, n = x.shape[0], network.n_nodes
    clamp = np.zeros((b, len(clamped))) if clamp is None else np.atleast_2d(clamp)
    gF = [Fraction(float(v)) for v in g]
    out = np.zeros((b, n))
    for s in range(b):
        fixed = {int(ground): Fraction(0)}
        src = {}
        for j, item in enumerate(inputs):
            if isinstance(item, Edge):
                src[int(item.index)] = Fraction(float(x[s, j]))
            else:
                fixed[int(item)] = Fraction(float(x[s, j]))
        for j, v in enumerate(clamped):
            fixed[int(v)] = Fraction(float(clamp[s, j]))
        free = [v for v in range(n) if v not in fixed]
        pos = {v: i for i, v in enumerate(free)}
        nf = len(free)
        A = [[Fraction(0)] * nf for _ in range(nf)]
        r = [Fraction(0)] * nf
        if currents is not None:
            J = np.atleast_2d(currents)[s if np.atleast_2d(currents).shape[0] > 1 else 0]
            for v in free:
                r[pos[v]] += Fraction(float(J[v]))
        for e, (a, c) in enumerate(network.edges):
            a, c = int(a), int(c)
            se = src.get(e, Fraction(0))
            # current g (u_a - u_c + s) leaves a and enters c
            for p, q, sign in ((a, c, 1), (c, a, -1)):
                if p in pos:
                    A[pos[p]][pos[p]] += gF[e]
                    if q in pos:
                        A[pos[p]][pos[q]] -= gF[e]
                    else:
                        r[pos[p]] += gF[e] * fixed[q]
                    r[pos[p]] -= sign * gF[e] * se
        for i in range(nf):
            for j in range(i + 1, nf):
                if A[j][i] != 0:
                    f = A[j][i] / A[i][i]
                    for k in range(i, nf):
                        A[j][k] -= f * A[i][k]
                    r[j] -= f * r[i]
        uF = [Fraction(0)] * nf
        for i in range(nf - 1, -1, -1):
            uF[i] = (r[i] - sum(A[i][k] * uF[k] for k in range(i + 1, nf))) / A[i][i]
        for v, val in fixed.items():
            out[s, v] = float(val)
        for v in free:
            out[s, v] = float(uF[pos[v]])
    return out


def exact_problem_potentials(problem: Problem) -> np.ndarray:
    """:func:`exact_potentials` of a :class:`Problem`."""
    return exact_potentials(problem.network, problem.g, problem.ground, problem.inputs, problem.x,
                            problem.clamped, problem.clamp, problem.currents)
