"""Scaling of one ``Analytical`` training step (batch 64) from 1e3 to 1e6 edges.

Square lattices (ground + 4 input nodes, 2 outputs, MSE). Each size runs in a fresh
subprocess so that its peak memory is its own: ``peak RSS`` is the process's maximum
resident set (``resource.getrusage``: Python, numpy, the circuit and the step together),
``step RSS`` the growth of that peak during the steps. Times in seconds: wall clock for
the build and the first step, wall and CPU for the warm step (the fit uses CPU time). The first step includes the
one-off symbolic analysis of the sparsity pattern; the warm step reuses it (the
training-loop cost). The exponent ``p`` of ``time ~ edges^p`` is a least-squares fit.

    python benchmarks/bench_scaling.py              # 1e3, 1e4, 1e5, 1e6 edges
    python benchmarks/bench_scaling.py --max 1e5    # smaller
"""

from __future__ import annotations

from common import fit_exponent, lattice_side, print_table  # first: BLAS threads

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from common import task
from kirchnet import solvers, topologies
from kirchnet.rules import Analytical

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

k = {side}
t0 = time.perf_counter()
circuit, g, X, Y = task(topologies.lattice(k, k), batch=64)
t_build = time.perf_counter() - t0
before = rss_mb()
rule = Analytical()
t0 = time.perf_counter(); res = rule.estimate(circuit, g, X, Y); t_first = time.perf_counter() - t0
warm, warm_cpu = [], []
for _ in range({repeat}):
    t0, c0 = time.perf_counter(), time.process_time()
    res = rule.estimate(circuit, g, X, Y)
    warm.append(time.perf_counter() - t0); warm_cpu.append(time.process_time() - c0)
print(json.dumps(dict(nodes=circuit.network.n_nodes, edges=circuit.network.n_edges,
                      backend=circuit.auto_backend,
                      build=t_build, first=t_first, warm=min(warm), warm_cpu=min(warm_cpu), rss_before=before,
                      peak=rss_mb(), finite=bool((res.estimate == res.estimate).all()))))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=float, default=1e6, help="largest number of edges")
    args = parser.parse_args(argv)
    bench = str(Path(__file__).resolve().parent)
    rows, edges, times = [], [], []
    for target in (1e3, 1e4, 1e5, 1e6):
        if target > args.max:
            continue
        side = lattice_side(target)
        code = CHILD.format(bench=bench, side=side, repeat=3 if target <= 1e5 else 1)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"size {target:g} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["finite"]
        edges.append(r["edges"]); times.append(r["warm_cpu"])
        rows.append([f"{side}x{side}", r["edges"], r["backend"], r["build"], r["first"], r["warm"],
                     r["warm_cpu"], r["peak"], r["peak"] - r["rss_before"]])
        print(" ".join(str(v) for v in rows[-1]), flush=True)
    print_table("One Analytical step, batch 64, square lattices.",
                ["lattice", "edges", "backend", "circuit build (s)", "first step (s)", "warm step (s)",
                 "warm step CPU (s)", "peak RSS (MB)", "step RSS growth (MB)"], rows)
    if len(edges) >= 2:
        print(f"\nFitted exponent (warm step CPU time ~ edges^p, all sizes): p = "
              f"{fit_exponent(edges, times):.2f}")
        if len(edges) >= 3:
            print(f"Fitted exponent over the largest 3 sizes: p = "
                  f"{fit_exponent(edges[-3:], times[-3:]):.2f}")


if __name__ == "__main__":
    main()
