"""Shared helpers for the benchmark scripts: timing, tasks, markdown tables, fits.

Benchmarks never run in the test suite. Every ratio a script prints is measured in the
same run (same machine, same moment), so that the tables compare like with like.
"""

from __future__ import annotations

import os

# BLAS threads: 1 unless the caller chose (KIRCHNET_BENCH_THREADS or the usual variables).
# Must happen before numpy is imported. On a shared 2-core machine multi-threaded OpenBLAS
# can be 100x slower on small matrices (threads spin while waiting for a busy core), and
# the baselines (ngspice, SuperLU) are single-threaded anyway.
_threads = os.environ.get("KIRCHNET_BENCH_THREADS", "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads)
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kirchnet import Circuit, Network, topologies  # noqa: E402


def cpu_time() -> float:
    """CPU seconds used so far by this process and its finished children (e.g. ngspice)."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


#: the clock benchmarks compare with. CPU time (this process + children) rather than wall
#: time: on a shared machine other jobs inflate wall times at random, while CPU time of a
#: single-threaded run stays close to the wall time of the same run on an idle machine.
#: Set KIRCHNET_BENCH_CLOCK=wall to time wall clock instead.
CLOCK = time.perf_counter if os.environ.get("KIRCHNET_BENCH_CLOCK") == "wall" else cpu_time


def best_time(fn: Callable[[], object], repeat: int = 3, budget: float = 5.0) -> float:
    """Best time (s, :data:`CLOCK`) of ``fn()`` over up to ``repeat`` runs, stopping after
    ``budget`` s."""
    best, spent = np.inf, 0.0
    for _ in range(max(1, repeat)):
        t0 = CLOCK()
        fn()
        dt = CLOCK() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget:
            break
    return best


def timed(fn: Callable[[], object]):
    """``(result, seconds)`` of one call of ``fn()`` on :data:`CLOCK`."""
    t0 = CLOCK()
    out = fn()
    return out, CLOCK() - t0


def task(net: Network, n_inputs: int = 4, n_outputs: int = 2, batch: int = 64, seed: int = 0):
    """A regression-style circuit on ``net``: ground 0, random input/output nodes, a batch.

    Returns ``(circuit, g, X (batch, n_inputs), Y (batch, n_outputs))`` with conductances
    log-uniform in [0.1, 10].
    """
    rng = np.random.default_rng(seed)
    nodes = rng.choice(np.arange(1, net.n_nodes), size=n_inputs + n_outputs, replace=False)
    circuit = Circuit(net, ground=0, inputs=[int(v) for v in nodes[:n_inputs]],
                      outputs=[int(v) for v in nodes[n_inputs:]])
    g = np.exp(rng.uniform(np.log(0.1), np.log(10.0), net.n_edges))
    X = rng.normal(size=(batch, n_inputs))
    Y = rng.normal(scale=0.1, size=(batch, n_outputs))
    return circuit, g, X, Y


def lattice_side(edges: float) -> int:
    """Side ``k`` of the square ``k x k`` lattice with about ``edges`` edges (2 k (k-1))."""
    return max(2, int(round(0.5 + np.sqrt(0.25 + edges / 2))))


def network(family: str, edges: int, seed: int = 0) -> Network:
    """A network of about ``edges`` edges: ``lattice``, ``delaunay`` (random planar) or
    ``random`` (random connected graph of mean degree 4)."""
    if family == "lattice":
        k = lattice_side(edges)
        return topologies.lattice(k, k)
    if family == "delaunay":
        return topologies.delaunay(max(4, edges // 3 + 2), seed=seed)
    if family == "random":
        return topologies.random_connected(max(3, edges // 2), m=edges, seed=seed)
    raise ValueError(f"unknown family {family!r}")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; floats get 3 significant digits."""
    def cell(v):
        if isinstance(v, float):
            if not np.isfinite(v):
                return "-"
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(caption: str, headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Print ``caption`` with the machine line, then the rows as a markdown table."""
    print()
    print(f"{caption} {machine()}")
    print()
    print(markdown_table(headers, rows))


def fit_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (``y ~ x^p``)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def machine() -> str:
    """One line describing the machine the numbers were measured on."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    clock = "wall" if CLOCK is time.perf_counter else "CPU"
    return (f"{clock} time; {platform.machine()}, {os.cpu_count()} cores (load {load:.1f}), BLAS threads "
            f"{os.environ.get('OPENBLAS_NUM_THREADS')}, Python {platform.python_version()}, "
            f"numpy {np.__version__}")
