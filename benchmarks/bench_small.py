"""Small networks (issue 15): the fast-path step, the Trainer loop and ensembles.

Workload of the coupled-learning reference code: an L x L lattice, 3 input nodes
(sources), 2 output nodes (targets), one sample, lr 0.1, eta 0.1, SGD. Three tables,
every ratio measured in the same run (interleaved, best of ``--repeats``, CPU time by
default, BLAS single-threaded: benchmarks/common.py):

1. one step: the raw LAPACK floor (dense potrf of L_FF plus potrs of the same D + k + 1
   columns the fast path solves), the fast path (kirchnet.small) for Analytical and CL,
   and the general rules (rule.estimate, which factorizes);
2. a 1000-step CL training end to end: Trainer (fast path; metrics every epoch, and with
   evaluate_every=steps only at the end), the bare loop of the same steps (kernel step +
   SGD + clip, no history), and Trainer(fast=False);
3. an ensemble of K networks (Trainer.fit with g0 (K, m)) against K separate Trainer.fit
   runs, fast and general (the general runs are timed on --general-runs of them and
   scaled to K).

    python benchmarks/bench_small.py [--sizes 10 15] [--steps 1000] [--members 64]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (BLAS threads, clock; before numpy)
import numpy as np
from scipy.linalg import lapack

from common import CLOCK, best_time
from kirchnet import Circuit, topologies
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


def per_call(fn, n: int) -> float:
    def loop():
        for _ in range(n):
            fn()
    return loop


def step_table(sizes, repeats):
    rows = []
    for L in sizes:
        c, g, x, y = workload(L)
        k = SmallKernel(c)
        gs = [g, g * (1 + 1e-12)]  # alternate so the kernel's one-factor cache never hits
        flip = [0]
        an, cl = Analytical(), CoupledLearning(0.1)

        def fast(rule):
            def f():
                flip[0] ^= 1
                k.step(rule, gs[flip[0]], x, y)
            return f

        Ld = c.reduced_laplacian_dense(g)
        rhs = np.asfortranarray(np.random.default_rng(1).random((c.n_free, c.n_inputs + c.n_outputs + 1)))

        def floor():
            ch, _ = lapack.dpotrf(Ld, lower=1, clean=0, overwrite_a=0)
            lapack.dpotrs(ch, rhs, lower=1)

        fns = {"floor": floor, "fast analytical": fast(an), "fast CL": fast(cl),
               "general analytical": lambda: an.estimate(c, g, x, y),
               "general CL": lambda: cl.estimate(c, g, x, y)}
        n = {"floor": 400, "fast analytical": 400, "fast CL": 400, "general analytical": 50, "general CL": 50}
        best = {name: np.inf for name in fns}
        for _ in range(repeats):  # interleaved
            for name, fn in fns.items():
                best[name] = min(best[name], best_time(per_call(fn, n[name]), 1) / n[name])
        rows.append((L, c.n_free, best))
    print("\n| grid (free nodes) | LAPACK floor | fast analytical | fast CL | analytical / floor | CL / floor "
          "| general analytical | general CL | general / fast (CL) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for L, nf, b in rows:
        us = {k: v * 1e6 for k, v in b.items()}
        print(f"| {L}x{L} ({nf}) | {us['floor']:.1f} us | {us['fast analytical']:.1f} us | {us['fast CL']:.1f} us "
              f"| {b['fast analytical'] / b['floor']:.2f} | {b['fast CL'] / b['floor']:.2f} "
              f"| {us['general analytical']:.0f} us | {us['general CL']:.0f} us "
              f"| {b['general CL'] / b['fast CL']:.1f} |")


def train_table(sizes, steps, repeats):
    print(f"\n| grid | Trainer, {steps} CL steps | bare loop of the steps | Trainer overhead "
          f"| metrics at the end only | its overhead | Trainer(fast=False) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    rule = CoupledLearning(0.1)
    for L in sizes:
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
        print(f"| {L}x{L} | {best['trainer']:.3f} s | {best['bare']:.3f} s | {best['trainer'] / best['bare'] - 1:+.0%} "
              f"| {best['lean']:.3f} s | {best['lean'] / best['bare'] - 1:+.0%} "
              f"| {best['general']:.3f} s | {best['general'] / best['trainer']:.1f}x |")


def ensemble_table(L, members, epochs, general_runs):
    c, _, x, y = workload(L)
    rng = np.random.default_rng(2)
    G0 = rng.uniform(0.5, 2.0, (members, c.network.n_edges))
    rule = CoupledLearning(0.1)
    kw = dict(optimizer="sgd", lr=0.1, epochs=epochs, batch_size=1, saturation_warning=None)
    t0 = CLOCK()
    Trainer(rule, **kw).fit(c, G0, x, y)
    t_ens = CLOCK() - t0
    t0 = CLOCK()
    for i in range(members):
        Trainer(rule, **kw).fit(c, G0[i], x, y)
    t_fast = CLOCK() - t0
    t0 = CLOCK()
    for i in range(general_runs):
        Trainer(rule, fast=False, **kw).fit(c, G0[i], x, y)
    t_gen = (CLOCK() - t0) * members / general_runs
    print(f"\n| {members} networks of {L}x{L}, {epochs} CL steps | time | per network-step | ensemble throughput gain |")
    print("|---|---|---|---|")
    print(f"| ensemble (Trainer.fit, g0 ({members}, m)) | {t_ens:.2f} s | {t_ens / members / epochs * 1e6:.0f} us | 1 |")
    print(f"| {members} separate runs, fast path | {t_fast:.2f} s | {t_fast / members / epochs * 1e6:.0f} us "
          f"| {t_fast / t_ens:.1f}x |")
    print(f"| {members} separate runs, general path ({general_runs} timed) | {t_gen:.2f} s "
          f"| {t_gen / members / epochs * 1e6:.0f} us | {t_gen / t_ens:.1f}x |")


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
