"""Time per training step of each learning rule, as a ratio to the Analytical step.

A step is what training does per minibatch: factorize ``L_FF(g)`` once, then the rule's
``estimate`` on that factorization (batch 64 by default). Lattices of about 1e2..1e5
nodes, ground at a corner, 4 input nodes on the left edge, 3 output nodes on the right
edge. In-situ rows simulate every measurement (Gaussian noise per sample and edge, 16
time samples per edge when superposed): that simulation, not the protocol, is their
extra cost. Best of ``--repeats`` runs, rules interleaved. Prints a markdown table.

    python benchmarks/bench_rules.py [--sizes 10 32 100 316] [--batch 64] [--repeats 5] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kirchnet import Circuit, topologies
from kirchnet.rules import (
    GEP,
    AdjointCoupledLearning,
    Analytical,
    CoupledLearning,
    EquilibriumPropagation,
    FiniteDifference,
    InSitu,
)

RULES = {
    "Analytical": lambda: Analytical(),
    "EP current, positive": lambda: EquilibriumPropagation(1e-3, "positive", "current"),
    "EP current, centered": lambda: EquilibriumPropagation(1e-3, "centered", "current"),
    "EP energy, centered": lambda: EquilibriumPropagation(1e-3, "centered", "energy"),
    "CL, positive": lambda: CoupledLearning(1e-3, "positive"),
    "CL, centered": lambda: CoupledLearning(1e-3, "centered"),
    "ACL, positive": lambda: AdjointCoupledLearning(1e-3),
    "GEP clamp, centered": lambda: GEP("clamp", 1e-3, variant="centered"),
    "GEP energy, centered": lambda: GEP("energy", 1e-3, variant="centered"),
    "In-situ, sequential, noise-free": lambda: InSitu(),
    "In-situ, sequential, noisy": lambda: InSitu(current_noise=0.01, output_noise_abs=1e-3, seed=0),
    "In-situ, superposed (16 samples)": lambda: InSitu(mode="superposed", n_samples=16, seed=0),
    "Finite differences": lambda: FiniteDifference(1e-6),
}
FD_MAX_NODES = 1100  # one solve per edge: small networks only


def make_problem(side: int, batch: int, seed: int = 0):
    net = topologies.lattice(side, side)
    rows = np.linspace(1, side - 2, 4).astype(int) if side > 4 else np.arange(1, 3)
    inputs = [int(r * side) for r in rows]
    out_rows = np.linspace(1, side - 2, 3).astype(int)
    outputs = [int(r * side + side - 1) for r in out_rows]
    circuit = Circuit(net, ground=0, inputs=inputs, outputs=outputs)
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.1, 10.0, net.n_edges)
    x = rng.normal(size=(batch, len(inputs)))
    y = rng.normal(size=(batch, len(outputs)))
    return circuit, g, x, y


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def time_step(rule, circuit, g, x, y) -> float:
    t0 = _clock()
    fac = circuit.factorize(g)
    rule.estimate(circuit, g, x, y, factorization=fac)
    return _clock() - t0


def bench_size(side: int, batch: int, repeats: int) -> tuple[str, dict[str, float]]:
    """Best-of-``repeats`` step time per rule; the rules are interleaved within each repeat so
    that background load affects them alike."""
    circuit, g, x, y = make_problem(side, batch)
    rules = {name: make() for name, make in RULES.items()
             if not (name == "Finite differences" and side * side > FD_MAX_NODES)}
    for rule in rules.values():  # warm-up (symbolic analysis, caches)
        time_step(rule, circuit, g, x, y)
    best = {name: np.inf for name in rules}
    for _ in range(repeats):
        for name, rule in rules.items():
            best[name] = min(best[name], time_step(rule, circuit, g, x, y))
    return circuit.factorize(g).backend, best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 32, 100, 316],
                    help="lattice sides (nodes = side^2)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall time, or process CPU time (all threads; steadier on a loaded machine)")
    args = ap.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]

    columns, table = [], {name: [] for name in RULES}
    for side in args.sizes:
        repeats = args.repeats if side * side <= 20000 else max(2, args.repeats // 2)
        backend, best = bench_size(side, args.batch, repeats)
        columns.append(f"{side * side} nodes ({backend})")
        base = best["Analytical"]
        for name in RULES:
            if name == "Analytical":
                table[name].append(f"1.00 ({base * 1e3:.1f} ms)")
            elif name in best:
                table[name].append(f"{best[name] / base:.2f}")
            else:
                table[name].append("-")
    print(f"Time per training step (factorize + estimate, batch {args.batch}, {args.clock} clock, "
          f"best of {args.repeats}) as a ratio to Analytical\n")
    print("| rule | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
