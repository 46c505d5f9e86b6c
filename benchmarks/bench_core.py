"""Core benchmark: factorize, batched forward solve and exact loss_and_grad on lattices.

Usage: python benchmarks/bench_core.py [--sizes 1e2,1e3,1e4,1e5,1e6] [--batch 64] [--repeats 3]

For each lattice of ~N nodes it prints the median times (at least ``repeats`` calls) of
  factorize        circuit.factorize(g)
  forward          factorization.solve(x) for a batch, outputs read
  loss_and_grad    circuit.loss_and_grad(g, x, y) from scratch (factorize included)
and the ratio ``loss_and_grad / (factorize + forward)`` (target <= 1.3), and the cost of
the checks every solve makes (kirchnet.solvers.base: error bound, refinement, maximum
principle): a training step (factorize + loss_and_grad) with the default ``check=True``
against ``check=False`` (goal: under 5 % from 10^3 nodes up), in process CPU time. On a
loaded machine the difference of two full steps is noisy, so the checks are also timed in
isolation: the step's block solve checked minus unchecked, as a share of the step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kirchnet as kn
from kirchnet import topologies


def best_of(fn, repeats, budget=0.5):
    """Median time of at least ``repeats`` calls, repeating fast calls until ``budget`` seconds.

    The median, not the minimum: multithreaded BLAS inside CHOLMOD makes single
    factorizations jitter by +-30% on 2 cores, and a minimum over many calls of a short
    operation then flatters it against a longer composite one.
    """
    times, out, spent = [], None, 0.0
    while len(times) < repeats or (spent < budget and len(times) < 10_000):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return float(np.median(times)), out


def paired_min(fa, fb, repeats, budget=3.0):
    """Minimum process-CPU time of ``fa`` and of ``fb``, called alternately (at least
    ``3 * repeats`` pairs, more within ``budget`` seconds): the minimum of interleaved
    calls resolves a few-percent difference on a loaded machine, a median does not."""
    ta, tb, spent = [], [], 0.0
    while len(ta) < 3 * repeats or (spent < budget and len(ta) < 2000):
        for f, out in ((fa, ta), (fb, tb)):
            t0 = time.process_time()
            f()
            out.append(time.process_time() - t0)
            spent += out[-1]
    return min(ta), min(tb)


def lattice_circuit(n_nodes: int):
    side = max(2, int(round(np.sqrt(n_nodes))))
    net = topologies.lattice(side, side)
    # 4 input nodes on the left edge, 2 outputs on the right edge, ground bottom-left
    left = [side * r for r in np.linspace(1, side - 1, 4).astype(int)]
    right = [side * r + side - 1 for r in np.linspace(0, side - 1, 2).astype(int)]
    inputs = sorted(set(left) - {0})
    outputs = sorted(set(right) - set(inputs) - {0})
    return kn.Circuit(net, ground=0, inputs=inputs, outputs=outputs), side


def run(sizes, batch, repeats, backend="auto"):
    rows = []
    for size in sizes:
        circuit, side = lattice_circuit(int(size))
        net = circuit.network
        rng = np.random.default_rng(0)
        g = rng.uniform(0.1, 10.0, net.n_edges)
        x = rng.uniform(-1, 1, (batch, circuit.n_inputs))
        y = rng.uniform(-0.5, 0.5, (batch, circuit.n_outputs))
        reps = repeats if net.n_nodes <= 300_000 else 1
        t_fac, fac = best_of(lambda: circuit.factorize(g, backend=backend), reps)

        def forward():
            # the same numeric factor with empty caches: measures the solves, not a cached transfer
            return kn.CircuitFactorization(circuit, g, factor=fac.factor).solve(x).outputs

        t_fwd, _ = best_of(forward, reps)
        t_lg, _ = best_of(lambda: circuit.loss_and_grad(g, x, y), reps)

        def step(check):
            fac_ = circuit.factorize(g, backend=backend, check=check)
            return circuit.loss_and_grad(g, x, y, factorization=fac_)

        t_on, t_off = paired_min(lambda: step(True), lambda: step(False), reps)

        def block_solve(check):
            # the step's one block solve (transfer matrix + adjoint basis) on the same numeric
            # factor, checked or not; the checks' psi column is recomputed each time
            fac.factor._psi_max = None
            kn.CircuitFactorization(circuit, g, factor=fac.factor, check=check).prepare()

        s_on, s_off = paired_min(lambda: block_solve(True), lambda: block_solve(False), 5 * reps, budget=1.0)
        rows.append({
            "nodes": net.n_nodes, "edges": net.n_edges, "backend": fac.backend,
            "factorize_s": t_fac, "forward_s": t_fwd, "loss_and_grad_s": t_lg,
            "ratio": t_lg / (t_fac + t_fwd),
            "step_checked_s": t_on, "step_unchecked_s": t_off, "check_overhead": t_on / t_off - 1.0,
            "check_s": s_on - s_off, "check_share": (s_on - s_off) / t_off,
        })
        r = rows[-1]
        print(f"  {side}x{side}: factorize {t_fac:.4f}s forward {t_fwd:.4f}s "
              f"loss_and_grad {t_lg:.4f}s ratio {r['ratio']:.2f} "
              f"checks +{100 * r['check_overhead']:.1f}% (isolated: {1e3 * r['check_s']:.3f} ms, "
              f"{100 * r['check_share']:.1f}% of a step)", flush=True)
    return rows


def table(rows, batch):
    out = ["| nodes | edges | backend | factorize (s) | forward, batch %d (s) | loss_and_grad (s) | ratio "
           "| step, checked (s) | step, check=False (s) | check cost | checks isolated |" % batch,
           "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['nodes']:,} | {r['edges']:,} | {r['backend']} | {r['factorize_s']:.4g} | "
                   f"{r['forward_s']:.4g} | {r['loss_and_grad_s']:.4g} | {r['ratio']:.2f} | "
                   f"{r['step_checked_s']:.4g} | {r['step_unchecked_s']:.4g} | "
                   f"{100 * r['check_overhead']:+.1f} % | {100 * r['check_share']:.1f} % |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e2,1e3,1e4,1e5,1e6")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    print(f"kirchnet {kn.__version__}, CHOLMOD available: {kn.solvers.cholmod_available()}")
    rows = run(sizes, args.batch, args.repeats, args.backend)
    print()
    print(table(rows, args.batch))


if __name__ == "__main__":
    main()
