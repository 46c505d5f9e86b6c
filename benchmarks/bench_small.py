"""Small networks (issue 15): the fast-path step, the Trainer loop and ensembles.

Workload of the coupled-learning reference code: an L x L lattice, 3 input nodes
(sources), 2 output nodes (targets), one sample, lr 0.1, eta 0.1, SGD. Three tables,
every ratio measured in the same run (interleaved, best of ``--repeats``, CPU time by
default, BLAS single-threaded: benchmarks/common.py):

1. one step: the raw LAPACK floor (dense potrf of L_FF plus potrs of the same D + k + 1
   columns the fast path solves), the fast path (kirchnet.small) for Analytical and CL with
   the compiled kernel (kirchnet._jit, numba) and with numpy, and the general rules
   (rule.estimate, which factorizes);
2. a 1000-step CL training end to end: Trainer (fast path; metrics every epoch, and with
   evaluate_every=steps only at the end), the bare loop of the same steps (kernel step +
   SGD + clip, no history), and Trainer(fast=False); with the compiled kernel and, in a
   second row per size, with KIRCHNET_JIT=0 (numpy);
3. an ensemble of K networks (Trainer.fit with g0 (K, m)) against K separate Trainer.fit
   runs, fast and general (the general runs are timed on --general-runs of them and
   scaled to K), with the compiled kernel and with numpy, metrics every epoch and (with
   evaluate_every=epochs) only at the end.

Without numba the jit rows and columns are left out.

    python benchmarks/bench_small.py [--sizes 10 15] [--steps 1000] [--members 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os

import common  # noqa: F401  (BLAS threads, clock; before numpy)
import numpy as np
from scipy.linalg import lapack

from common import CLOCK, best_time
from kirchnet import Circuit, _jit, topologies
from kirchnet.rules import Analytical, CoupledLearning
from kirchnet.small import SmallKernel
from kirchnet.training import Trainer


def workload(L: int, seed: int = 0):
    net = topologies.lattice(L, L)
    c = Circuit(net, ground=0, inputs=[L - 1, L * (L - 1), (L // 2) * L + L // 2], outputs=[L * L - 1, L * (L // 2)])
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 2.0, net.n_edges)
    x = np.array([[1.0, -0.5, 0.3]])
    y = np.array([[0.2, 0.1]])
    return c, g, x, y


@contextlib.contextmanager
def jit_env(on: bool):
    """KIRCHNET_JIT for the kernels built inside (the Trainer builds its own)."""
    old = os.environ.get("KIRCHNET_JIT")
    os.environ["KIRCHNET_JIT"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["KIRCHNET_JIT"]
        else:
            os.environ["KIRCHNET_JIT"] = old


JIT = [True, False] if _jit.AVAILABLE else [False]


def per_call(fn, n: int) -> float:
    def loop():
        for _ in range(n):
            fn()
    return loop


def step_table(sizes, repeats):
    rows = []
    for L in sizes:
        c, g, x, y = workload(L)
        kernels = {on: SmallKernel(c, jit=on) for on in JIT}
        gs = [g, g * (1 + 1e-12)]  # alternate so the kernel's one-factor cache never hits
        flip = [0]
        an, cl = Analytical(), CoupledLearning(0.1)

        def fast(k, rule):
            def f():
                flip[0] ^= 1
                k.step(rule, gs[flip[0]], x, y)
            return f

        Ld = c.reduced_laplacian_dense(g)
        rhs = np.asfortranarray(np.random.default_rng(1).random((c.n_free, c.n_inputs + c.n_outputs + 1)))

        def floor():
            ch, _ = lapack.dpotrf(Ld, lower=1, clean=0, overwrite_a=0)
            lapack.dpotrs(ch, rhs, lower=1)

        fns = {"floor": floor}
        for on, k in kernels.items():
            tag = "jit" if on else "numpy"
            fns[f"{tag} analytical"], fns[f"{tag} CL"] = fast(k, an), fast(k, cl)
        fns["general analytical"] = lambda: an.estimate(c, g, x, y)
        fns["general CL"] = lambda: cl.estimate(c, g, x, y)
        n = {name: (50 if name.startswith("general") else 400) for name in fns}
        for k in kernels.values():  # compile (numba's cache) and warm up outside the timing
            k.step(an, g, x, y), k.step(cl, g, x, y)
        best = {name: np.inf for name in fns}
        for _ in range(repeats):  # interleaved
            for name, fn in fns.items():
                best[name] = min(best[name], best_time(per_call(fn, n[name]), 1) / n[name])
        rows.append((L, c.n_free, best))
    tags = ["jit", "numpy"] if _jit.AVAILABLE else ["numpy"]
    head = "".join(f"| {t} analytical | {t} CL | {t} analytical / floor | {t} CL / floor " for t in tags)
    print(f"\n| grid (free nodes) | LAPACK floor {head}| general analytical | general CL "
          f"| general / fastest (CL) |")
    print("|---" * (5 + 4 * len(tags)) + "|")
    for L, nf, b in rows:
        us = {k: v * 1e6 for k, v in b.items()}
        cells = "".join(f"| {us[f'{t} analytical']:.1f} us | {us[f'{t} CL']:.1f} us "
                        f"| {b[f'{t} analytical'] / b['floor']:.2f} | {b[f'{t} CL'] / b['floor']:.2f} " for t in tags)
        print(f"| {L}x{L} ({nf}) | {us['floor']:.1f} us {cells}| {us['general analytical']:.0f} us "
              f"| {us['general CL']:.0f} us | {b['general CL'] / b[f'{tags[0]} CL']:.1f} |")


def train_table(sizes, steps, repeats):
    print(f"\n| grid, kernel | Trainer, {steps} CL steps | bare loop of the steps | Trainer overhead "
          f"| metrics at the end only | its overhead | Trainer(fast=False) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for L in sizes:
        for on in JIT:
            with jit_env(on):
                _train_row(L, steps, repeats, "jit" if on else "numpy")


def _train_row(L, steps, repeats, tag):
    rule = CoupledLearning(0.1)
    c, g0, x, y = workload(L)
    kw = dict(optimizer="sgd", lr=0.1, epochs=steps, batch_size=1, saturation_warning=None)

    def trainer(fast=True, every=1):
        return lambda: Trainer(rule, fast=fast, evaluate_every=every, **kw).fit(c, g0, x, y)

    def bare():
        k = SmallKernel(c)
        g = g0.copy()
        lo, hi = min(1e-6, g.min()), max(1e6, g.max())  # the Trainer's default clip range
        for _ in range(steps):
            est, _ = k.step(rule, g, x, y)
            g = np.clip(g - 0.1 * est, lo, hi)
        return g

    best = {"trainer": np.inf, "bare": np.inf, "lean": np.inf, "general": np.inf}
    for _ in range(repeats):
        best["trainer"] = min(best["trainer"], best_time(trainer(), 1))
        best["bare"] = min(best["bare"], best_time(bare, 1))
        best["lean"] = min(best["lean"], best_time(trainer(every=steps), 1))
    best["general"] = best_time(trainer(False), 1)
    print(f"| {L}x{L}, {tag} | {best['trainer']:.3f} s | {best['bare']:.3f} s | {best['trainer'] / best['bare'] - 1:+.0%} "
          f"| {best['lean']:.3f} s | {best['lean'] / best['bare'] - 1:+.0%} "
          f"| {best['general']:.3f} s | {best['general'] / best['trainer']:.1f}x |")


def ensemble_table(L, members, epochs, general_runs):
    c, _, x, y = workload(L)
    rng = np.random.default_rng(2)
    G0 = rng.uniform(0.5, 2.0, (members, c.network.n_edges))
    rule = CoupledLearning(0.1)
    kw = dict(optimizer="sgd", lr=0.1, epochs=epochs, batch_size=1, saturation_warning=None)

    def timed(fn):
        t0 = CLOCK()
        fn()
        return CLOCK() - t0

    t = {}
    for on in JIT:
        tag = "jit" if on else "numpy"
        with jit_env(on):
            Trainer(rule, **kw).fit(c, G0[:2], x, y)  # compile / warm up
            t[f"ensemble, {tag}"] = timed(lambda: Trainer(rule, **kw).fit(c, G0, x, y))
            t[f"ensemble, {tag}, metrics at the end only"] = timed(
                lambda: Trainer(rule, evaluate_every=epochs, **kw).fit(c, G0, x, y))
            t[f"separate fast runs, {tag}"] = timed(lambda: [Trainer(rule, **kw).fit(c, G0[i], x, y)
                                                           for i in range(members)])
    with jit_env(JIT[0]):
        t["separate fast runs, metrics at the end only"] = timed(
            lambda: [Trainer(rule, evaluate_every=epochs, **kw).fit(c, G0[i], x, y) for i in range(members)])
    t["separate general runs"] = timed(lambda: [Trainer(rule, fast=False, **kw).fit(c, G0[i], x, y)
                                               for i in range(general_runs)]) * members / general_runs
    best = t[f"ensemble, {'jit' if _jit.AVAILABLE else 'numpy'}"]
    print(f"\n| {members} networks of {L}x{L}, {epochs} CL steps | time | per network-step "
          f"| throughput of the fastest ensemble / this |")
    print("|---|---|---|---|")
    for name, v in t.items():
        note = f" ({general_runs} timed)" if name == "separate general runs" else ""
        print(f"| {name}{note} | {v:.2f} s | {v / members / epochs * 1e6:.0f} us | {v / best:.1f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 15])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--ensemble-epochs", type=int, default=100)
    ap.add_argument("--general-runs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    step_table(a.sizes, a.repeats)
    train_table(a.sizes, a.steps, max(1, a.repeats // 2))
    ensemble_table(a.sizes[0], a.members, a.ensemble_epochs, a.general_runs)


if __name__ == "__main__":
    main()
