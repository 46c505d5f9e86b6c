"""Nonlinear benchmark: Newton equilibria of diode networks against one linear solve.

Usage: python benchmarks/bench_nonlinear.py [--sizes 1e2,1e3,1e4,1e5] [--samples 8] [--repeats 3] [--damped]

On a lattice of ~N nodes with every third edge a Shockley diode (ngspice's default
model, random orientation) and inputs of 1-2 V, for each size it prints (one run, same
machine, times on the benchmark clock of ``common.py``), each a mean over ``--samples``
input vectors solved one at a time (batch 1; one sample's iteration count says little):

  linear            factorize + solve of the same network with every edge a resistor
  cold              Newton iterations and time of the nonlinear equilibrium from a cold start
  warm              the same after a 1 % change of the inputs, warm-started from the old state
  x linear          time / linear time ("linear-solve equivalents"; goal: <= 8 cold, <= 3 warm)
  grad / forward    loss_and_grad (forward + adjoint) / forward nonlinear solve (goal <= 1.5)

"solver": how the Newton steps are taken (NonlinearFactorization.plan): "envelope" or
"woodbury" (compiled, numba), else the numpy iteration's "dense batched" or sparse backend.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import best_time, print_table, timed

import kirchnet as kn
from kirchnet import topologies
from kirchnet.elements import Diode


def diode_lattice(n_nodes: int, seed: int = 0, batch: int = 1):
    side = max(3, int(round(np.sqrt(n_nodes))))
    net = topologies.lattice(side, side)
    rng = np.random.default_rng(seed)
    m = net.n_edges
    flip = rng.random(m) < 0.5
    edges = np.where(flip[:, None], net.edges[:, ::-1], net.edges)
    net = kn.Network(net.n_nodes, edges)
    n = net.n_nodes
    ins = [n - 1, n - side, side - 1]
    outs = [n // 2 + side // 2, n // 3]
    linear = kn.Circuit(net, ground=0, inputs=ins, outputs=outs)
    circuit = kn.Circuit(net, ground=0, inputs=ins, outputs=outs,
                         elements={Diode(): np.arange(0, m, 3)})
    g = rng.uniform(0.5, 2.0, m)
    g[::3] = rng.uniform(1.0, 10.0, g[::3].size)  # diode area factors
    x = rng.uniform(1.0, 2.0, (batch, len(ins))) * rng.choice([-1.0, 1.0], (batch, len(ins)))
    y = np.zeros((batch, len(outs)))
    return linear, circuit, g, x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e2,1e3,1e4,1e5")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--damped", action="store_true",
                    help="the damped Newton iteration alone (limiting=False), for comparison")
    args = ap.parse_args()
    rows = []
    for size in (int(float(s)) for s in args.sizes.split(",")):
        linear, circuit, g, X, Y = diode_lattice(size, batch=args.samples)
        fac = circuit.factorize(g, limiting=not args.damped)
        t = {"lin": [], "cold": [], "warm": [], "grad": []}
        it = {"cold": [], "warm": []}
        for k in range(args.samples):
            x, y = X[k:k + 1], Y[k:k + 1]
            t["lin"].append(best_time(lambda: linear.factorize(g).solve(x).outputs, args.repeats))
            state, _ = timed(lambda: fac.solve(x))
            t["cold"].append(best_time(lambda: fac.solve(x).outputs, args.repeats))
            x2 = x * 1.01
            warm = fac.solve(x2, warm_start=state)
            t["warm"].append(best_time(lambda: fac.solve(x2, warm_start=state).outputs, args.repeats))
            t["grad"].append(best_time(lambda: circuit.loss_and_grad(g, x, y, factorization=fac), args.repeats))
            it["cold"].append(int(state.iterations[0]))
            it["warm"].append(int(warm.iterations[0]))
        m = {key: float(np.mean(v)) for key, v in t.items()}
        mode = fac.plan[0] if fac.plan[0] != "numpy" else ("dense batched" if fac.dense else fac.backend)
        rows.append([circuit.network.n_nodes, circuit.n_free, mode, f"{1e3 * m['lin']:.2f}",
                     f"{np.mean(it['cold']):.1f} ({max(it['cold'])})", f"{1e3 * m['cold']:.2f}",
                     f"{m['cold'] / m['lin']:.1f}",
                     f"{np.mean(it['warm']):.1f} ({max(it['warm'])})", f"{1e3 * m['warm']:.2f}",
                     f"{m['warm'] / m['lin']:.1f}", f"{m['grad'] / m['cold']:.2f}"])
        print(" ".join(str(v) for v in rows[-1]), flush=True)
    print_table(f"Diode-lattice equilibria ({'damped' if args.damped else 'limited'} Newton, means over "
                f"{args.samples} inputs solved one at a time, every third edge a diode),",
                ["nodes", "free", "solver", "linear ms", "cold iters (max)", "cold ms", "cold x linear",
                 "warm iters (max)", "warm ms", "warm x linear", "grad / forward"], rows)


if __name__ == "__main__":
    main()
