"""Forward solve of a 64-sample batch: kirchnet against ngspice on the same circuits.

ngspice gets its best chance: ONE ``ngspice -b`` process runs every operating point
(``alter`` the sources, then ``op``, in a ``.control`` block), and its time is end to
end (write the netlist, parse, solve, read the binary results), like kirchnet's
(``factorize`` + ``solve`` from the conductances). Times are CPU seconds of the
process and its children (ngspice), see ``benchmarks/common.py``: robust to other jobs
on a shared machine; ``KIRCHNET_BENCH_CLOCK=wall`` switches to wall time. Where 64 operating points would take
too long, ngspice runs ``k`` of them and the 64-sample time is extrapolated as
``t(1) + 63 (t(k) - t(1)) / (k - 1)`` (marked ``*``). The max relative difference of
the potentials is printed as a by-product of the cross-validation.

The second table does the same on resistor-diode networks (:func:`diode_task`: kirchnet's
Newton equilibria from a cold start against ngspice's ``op``, same netlists as
:func:`kirchnet.spice.ngspice_potentials` writes: ``.options gmin=0`` and tight
tolerances). Goal: kirchnet at least 50x faster on the 64-sample batch. "steps": how
kirchnet's Newton steps are taken (``lanes``: :func:`kirchnet.nonlinear._lanes_newton`,
else :attr:`kirchnet.nonlinear.NonlinearFactorization.plan`).

    python benchmarks/bench_spice.py            # lattice, delaunay, random; 1e2..1e4 edges
    python benchmarks/bench_spice.py --quick    # 1e2..1e3 edges only
    python benchmarks/bench_spice.py --only diodes   # the resistor-diode table only
"""

from __future__ import annotations

from common import best_time, network, print_table, task, timed  # first: sets BLAS threads

import argparse

import numpy as np

from kirchnet import Circuit, Edge
from kirchnet import nonlinear
from kirchnet.elements import Diode
from kirchnet.errors import KirchnetError
from kirchnet.spice import NGSPICE_TOLERANCES, ngspice_available, ngspice_potentials

BATCH = 64
#: ngspice seconds we are willing to spend on one size
NGSPICE_BUDGET = 40.0
#: random graphs (mean degree 4) fill in badly in ngspice's sparse LU: one operating
#: point takes ~2 min at 1e4 edges on 2 cores, so that size is left out
SIZES = {"lattice": (100, 1000, 10000), "delaunay": (100, 1000, 10000), "random": (100, 1000, 3000)}
#: resistor-diode networks: ngspice's Newton needs tens of iterations per operating point
DIODE_SIZES = {"lattice": (100, 1000, 10000), "random": (100, 1000, 3000)}


def _spanning_tree(net):
    """Edges of a spanning tree (union-find in edge order)."""
    parent = np.arange(net.n_nodes)

    def find(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    tree = []
    for e, (a, b) in enumerate(net.edges):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            tree.append(e)
    return np.array(tree, dtype=np.int64)


def diode_task(net, batch: int = BATCH, n_inputs: int | None = None, seed: int = 0):
    """Resistor-diode circuit on ``net``: ``Diode()`` (area 0.5..2) on a third of the edges
    off a spanning tree of resistors (0.5..2 mS), ground 0, ``n_inputs - 1`` clamped input
    nodes (default: one node in 16, at least 3, so that large networks keep forward- and
    reverse-biased diodes) and a series source on a diode, inputs uniform in +-2 V.

    Returns ``(circuit, g, X (batch, n_inputs), diode edges)``.
    """
    if n_inputs is None:
        n_inputs = max(4, net.n_nodes // 16 + 1)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(net.n_edges), _spanning_tree(net))
    diodes = np.sort(rng.choice(rest, min(rest.size, net.n_edges // 3), replace=False))
    nodes = rng.choice(np.arange(1, net.n_nodes), size=n_inputs - 1, replace=False)
    circuit = Circuit(net, ground=0, inputs=[*(int(v) for v in nodes), Edge(int(diodes[0]))],
                      elements={Diode(): diodes})
    g = rng.uniform(0.5e-3, 2e-3, net.n_edges)
    g[diodes] = rng.uniform(0.5, 2.0, diodes.size)
    X = rng.uniform(-2.0, 2.0, (batch, n_inputs))
    return circuit, g, X, diodes


def ngspice_time(circuit, g, X):
    """(seconds for the batch, number of operating points actually run, potentials); one
    ngspice run each, at NGSPICE_TOLERANCES (given explicitly: no retry at looser ones)."""
    def run(Xk):
        return ngspice_potentials(circuit, g, Xk, tolerances=NGSPICE_TOLERANCES)

    _, t1 = timed(lambda: run(X[:1]))
    b = X.shape[0]
    k = b if t1 * b < NGSPICE_BUDGET else int(max(4, min(b, NGSPICE_BUDGET / t1)))
    u, tk = timed(lambda: run(X[:k]))
    if k == b:
        return tk, k, u
    return t1 + (b - 1) * max(tk - t1, 0.0) / (k - 1), k, u


def diode_rows(quick: bool):
    rows = []
    for family, sizes in DIODE_SIZES.items():
        for edges in sizes:
            if quick and edges > 1000:
                continue
            net = network(family, edges)
            circuit, g, X, diodes = diode_task(net)
            try:
                st = circuit.factorize(g).solve(X)
            except KirchnetError as exc:  # a failure is a result: report it, go on
                rows.append([family, net.n_nodes, net.n_edges, diodes.size, circuit.n_inputs,
                             f"kirchnet failed: {type(exc).__name__}: {str(exc)[:90]}",
                             "", "", "", "", "", "", ""])
                print(" ".join(str(v) for v in rows[-1]), flush=True)
                continue
            t_k = best_time(lambda: circuit.factorize(g).solve(X), repeat=3, budget=5.0)
            ref = st.potentials
            t_ng, k, u = ngspice_time(circuit, g, X)
            err = float(np.max(np.abs(u - ref[:k])) / np.max(np.abs(ref[:k])))
            w = ref[:, net.tails[diodes]] - ref[:, net.heads[diodes]]
            fac = circuit.factorize(g)  # how its Newton steps are taken
            steps = "lanes" if nonlinear._lanes(fac, X.shape[0]) else fac.plan[0]
            rows.append([family, net.n_nodes, net.n_edges, diodes.size, circuit.n_inputs,
                         f"{np.mean(w > 0.3):.2f} / {np.mean(w < -0.1):.2f}", steps,
                         f"{np.mean(st.iterations):.1f}", t_k * 1e3,
                         f"{t_ng:.3g}{'' if k == BATCH else '*'}", k, f"{t_ng / t_k:.0f}x",
                         f"{err:.1e}"])
            print(" ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e3 edges only")
    parser.add_argument("--only", choices=("linear", "diodes"), help="run one table only")
    args = parser.parse_args(argv)
    if not ngspice_available():
        raise SystemExit("ngspice not found: apt-get install ngspice")
    if args.only != "linear":
        rows = diode_rows(args.quick)
        print_table(f"Resistor-diode networks, forward batch {BATCH} (inputs at one node in 16, "
                    f"cold-start Newton): "
                    f"kirchnet vs ngspice (one process, alter + op).",
                    ["graph", "nodes", "edges", "diodes", "inputs", "forward / reverse", "steps", "Newton iterations",
                     "kirchnet (ms)", "ngspice (s)", "ngspice ops run", "speed-up",
                     "max rel. diff"], rows)
        print("\n* extrapolated to 64 operating points from the ops run (t(1) + 63 per-op time).")
        if args.only == "diodes":
            return
    rows = []
    for family, sizes in SIZES.items():
        for edges in sizes:
            if args.quick and edges > 1000:
                continue
            net = network(family, edges)
            circuit, g, X, _ = task(net, batch=BATCH)
            t_k = best_time(lambda: circuit.factorize(g).solve(X), repeat=5, budget=2.0)
            fac = circuit.factorize(g)
            ref = fac.solve(X).potentials
            t_ng, k, u = ngspice_time(circuit, g, X)
            err = float(np.max(np.abs(u - ref[:k])) / np.max(np.abs(ref[:k])))
            backend = fac.backend
            rows.append([family, net.n_nodes, net.n_edges, backend, t_k * 1e3,
                         f"{t_ng:.3g}{'' if k == BATCH else '*'}", k, f"{t_ng / t_k:.0f}x",
                         f"{err:.1e}"])
            print(" ".join(str(v) for v in rows[-1]), flush=True)
    print_table(f"Forward solve, batch {BATCH} (4 inputs): kirchnet vs ngspice (one process, alter + op).",
                ["graph", "nodes", "edges", "kirchnet backend", "kirchnet (ms)", "ngspice (s)",
                 "ngspice ops run", "speed-up", "max rel. diff"], rows)
    print("\n* extrapolated to 64 operating points from the ops run (t(1) + 63 per-op time).")


if __name__ == "__main__":
    main()
