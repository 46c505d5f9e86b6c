"""Memristive dynamics and pulse-programmed training against the plain linear core.

1. A memristive lattice of about 10^4 edges (every edge an HP linear-drift memristor with a
   Joglekar window, so every conductance changes at every step) simulated for 10^3
   fixed steps (``MemristiveNetwork.simulate(method="euler")``), against the same number
   of plain ``circuit.factorize(g).solve(u)`` calls with changing conductances. A second
   row uses threshold (VTEAM-like) devices under a drive that switches only a few of
   them, where the simulator reuses or low-rank-updates the factorization.
2. One training epoch (teacher-student regression on the same lattice) with every
   update applied as programming pulses (``PulseProgrammer.program``, stochastic pulse
   counts, soft-bound device with cycle-to-cycle noise), against the same epoch with
   plain updates ``g <- clip(g - lr * grad)``; and the in-situ mode (one amplitude-
   modulated pulse per edge from the two measured currents).

Ratios are taken in the same run (goal: at most 1.5); epochs are the best of 5 runs. CPU time unless
``KIRCHNET_BENCH_CLOCK=wall``.

    python benchmarks/bench_devices.py [--rows 71] [--steps 1000] [--n-train 256] [--batch 16]
"""

from __future__ import annotations

import argparse

from common import best_time, timed  # sets BLAS threads before numpy

import numpy as np  # noqa: E402

from kirchnet import Circuit, topologies  # noqa: E402
from kirchnet.devices import LinearIonDrift, PulseDevice, PulseProgrammer, ThresholdMemristor, local_currents  # noqa: E402
from kirchnet.memristive import MemristiveNetwork  # noqa: E402
from kirchnet.tasks import teacher_student  # noqa: E402


def dynamics(rows: int, steps: int):
    net = topologies.lattice(rows, rows)
    n = net.n_nodes
    circuit = Circuit(net, ground=0, inputs=[n - 1, rows - 1], outputs=[n // 2])
    src = lambda t: np.array([2.0 * np.sin(2 * np.pi * t), -1.0])  # noqa: E731
    dt = 1.0 / steps
    out = []
    for label, model, x0 in [
        ("HP linear drift, Joglekar window (all edges change)", LinearIonDrift(window="joglekar"), 0.5),
        ("threshold (VTEAM-like), few edges switch",
         ThresholdMemristor(r_on=1e3, r_off=1e4, v_on=-0.3, v_off=0.3, k_on=10.0, k_off=10.0), 0.5),
    ]:
        sim = MemristiveNetwork(circuit, model, x0)
        tr, t_sim = timed(lambda: sim.simulate(src, (0.0, 1.0), method="euler", dt=dt,
                                               record_every=max(1, steps // 10), record_currents=False))
        n_eq = tr.info["n_equilibria"]
        g0 = model.conductance(np.full(net.n_edges, x0))
        rng = np.random.default_rng(0)
        jitter = 1.0 + 1e-3 * rng.standard_normal(net.n_edges)

        def plain():
            g = g0.copy()
            for k in range(n_eq):
                g = g * jitter  # every conductance changes, like the memristive run
                circuit.factorize(g).solve(src(k * dt)).currents  # noqa: B018
        _, t_plain = timed(plain)
        moved = int(np.count_nonzero(np.abs(tr.states[-1] - x0) > 1e-9))
        out.append((label, net.n_edges, steps, n_eq, t_sim, t_plain, tr.info, moved))
    return out


def training(rows: int, n_train: int, batch: int, seed: int = 0):
    net = topologies.lattice(rows, rows)
    task = teacher_student(net, n_inputs=3, n_outputs=2, n_train=n_train, n_test=0, seed=seed)
    circuit = task.circuit()
    X, Y = task.x_train, task.y_train
    device = PulseDevice(g_min=0.2, g_max=3.0, step_up=0.01, step_down=0.01, c2c=0.2, d2d=0.1)
    lr = 200.0
    order = np.random.default_rng(seed).permutation(n_train)
    batches = [order[i:i + batch] for i in range(0, n_train, batch)]
    g0 = np.full(net.n_edges, 1.0)

    def plain_epoch():
        g = g0.copy()
        for b in batches:
            _, grad = circuit.loss_and_grad(g, X[b], Y[b])
            g = np.clip(g - lr * grad, device.g_min, device.g_max)
        return g, 0

    def pulse_epoch():
        prog = PulseProgrammer(device, "stochastic", seed=seed)
        g = g0.copy()
        for b in batches:
            _, grad = circuit.loss_and_grad(g, X[b], Y[b])
            g = prog.program(g, grad, lr).conductances
        return g, prog.total_pulses

    def insitu_epoch():
        situ = PulseProgrammer(device, seed=seed)
        g = g0.copy()
        for b in batches:
            i, i_adj, _ = local_currents(circuit, g, X[b], Y[b])
            g = situ.in_situ(g, i, i_adj, gain=1e4).conductances
        return g, situ.total_pulses

    loss0 = circuit.loss_and_grad(g0, X, Y)[0]
    rows = [("plain updates", plain_epoch), ("pulse-programmed (stochastic counts)", pulse_epoch),
            ("in-situ (one modulated pulse per edge)", insitu_epoch)]
    times = {label: best_time(fn, repeat=5, budget=10.0) for label, fn in rows}  # best of 5
    res = []
    for label, fn in rows:
        g, pulses = fn()
        res.append((label, net.n_edges, len(batches), times[label], times["plain updates"],
                    circuit.loss_and_grad(g, X, Y)[0], loss0, pulses))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=71, help="lattice side (71: 9940 edges)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    print("### Memristive dynamics (Euler steps) vs plain factorize + solve\n")
    print("| devices | edges | steps | equilibria | memristive (s) | plain (s) | ratio | factorizations | "
          "low-rank updates | reused | devices switched |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, m, steps, n_eq, t_s, t_p, info, moved in dynamics(a.rows, a.steps):
        print(f"| {label} | {m} | {steps} | {n_eq} | {t_s:.3g} | {t_p:.3g} | {t_s / t_p:.2f} | "
              f"{info['n_factorizations']} | {info['n_low_rank_updates']} | {info['n_reused']} | {moved} |")
    print("\n### One training epoch, pulse-programmed vs plain updates\n")
    print("| updates | edges | steps | epoch (s) | plain epoch (s) | ratio | loss after | loss before | pulses |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, m, nb, t, t_p, loss, loss0, pulses in training(a.rows, a.n_train, a.batch):
        print(f"| {label} | {m} | {nb} | {t:.3g} | {t_p:.3g} | {t / t_p:.2f} | {loss:.3g} | {loss0:.3g} | {pulses} |")


if __name__ == "__main__":
    main()
