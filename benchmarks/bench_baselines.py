"""One training step: kirchnet ``Analytical`` against the methods users have today, and
against its own floor.

On k x k lattices (ground + 4 input nodes clamped, 2 output nodes, batch 64, MSE):

* **kirchnet**: ``Analytical().estimate(circuit, g, X, Y)`` from the conductances
  (assemble, factorize once, forward + adjoint solves, elementwise gradient).
* **KKT spsolve**: the coupled-learning research codes' method: assemble the full
  Laplacian ``L = B G B^T`` and the augmented system ``K = [[L, Q], [Q^T, 0]]`` (``Q``
  selects the clamped nodes), then per sample ``scipy.sparse.linalg.spsolve`` for the
  forward state and again for the adjoint state, gradient ``-(B^T lam) * (B^T u)``.
  Above a time budget only some samples are solved and the time is scaled to 64 (``*``:
  every sample costs the same two solves).
* **dense numpy**: the same KKT system as a dense array, ``numpy.linalg.solve`` with all
  64 right-hand sides at once (forward, then adjoint); skipped above 5000 nodes.
* **floor**: what the step cannot avoid with the same library kirchnet used: the
  numeric factorization of ``L_FF`` (CHOLMOD with the symbolic analysis reused, or
  LAPACK ``potrf`` for the dense backend) plus the triangular solves of the same
  right-hand-side columns (4 driver columns + 2 output columns), prepared beforehand.

The baselines' gradients are checked against kirchnet's. Times are CPU seconds with
single-threaded BLAS (see ``benchmarks/common.py``). Run:

    python benchmarks/bench_baselines.py            # 10x10 .. 300x300
    python benchmarks/bench_baselines.py --quick    # up to 40x40
"""

from __future__ import annotations

from common import best_time, print_table, task, timed  # first: sets BLAS threads

import argparse

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from scipy.sparse.linalg import spsolve

from kirchnet import topologies
from kirchnet.rules import Analytical

SIDES = (10, 20, 40, 70, 100, 200, 300)
BATCH = 64
SPSOLVE_BUDGET = 15.0  # seconds of per-sample spsolve per size before extrapolating
DENSE_MAX_NODES = 5000


def kkt(circuit, g):
    """Sparse ``[[L, Q], [Q^T, 0]]`` and the clamped node list (ground first, then inputs)."""
    B = circuit.network.incidence()
    L = (B @ sp.diags_array(g) @ B.T).tocsc()
    clamped = np.concatenate([[circuit.ground], circuit.input_nodes])
    n, c = L.shape[0], clamped.size
    Q = sp.csc_array((np.ones(c), (clamped, np.arange(c))), shape=(n, c))
    return sp.block_array([[L, Q], [Q.T, None]], format="csc"), clamped


def kkt_step(circuit, g, X, Y, samples=None):
    """Per-sample spsolve step; returns (grad summed over the samples solved, samples solved)."""
    K, clamped = kkt(circuit, g)
    n = circuit.network.n_nodes
    B = circuit.network.incidence()
    BT = B.T.tocsr()
    P = circuit.readout
    b = X.shape[0] if samples is None else samples
    grad = np.zeros(circuit.network.n_edges)
    for s in range(b):
        rhs = np.zeros(K.shape[0])
        rhs[n + 1:] = X[s]  # ground row stays 0
        u = spsolve(K, rhs)[:n]
        delta = P @ u - Y[s]
        rhs_adj = np.zeros(K.shape[0])
        rhs_adj[:n] = P.T @ delta
        lam = spsolve(K, rhs_adj)[:n]
        grad += -(BT @ lam) * (BT @ u)
    return grad, b


def dense_step(circuit, g, X, Y):
    """Dense KKT solve with all samples at once; returns the batch-mean gradient."""
    K, _ = kkt(circuit, g)
    Kd = K.toarray()
    n = circuit.network.n_nodes
    BT = circuit.network.incidence().T.tocsr()
    R = np.zeros((Kd.shape[0], X.shape[0]))
    R[n + 1:] = X.T
    U = np.linalg.solve(Kd, R)[:n]
    delta = circuit.readout @ U - Y.T
    Ra = np.zeros_like(R)
    Ra[:n] = circuit.readout.T @ delta
    Lam = np.linalg.solve(Kd, Ra)[:n]
    return (-(BT @ Lam) * (BT @ U)).mean(axis=1)


def floor_step(circuit, g, backend):
    """Time of the unavoidable factorization + solves with kirchnet's library (prepared inputs)."""
    fac = circuit.factorize(g)
    rhs = np.asfortranarray(np.concatenate(
        [fac._driver_matrix(), circuit.readout[:, circuit.free_nodes].T.toarray()], axis=1))
    if backend == "dense":
        Ld = circuit.reduced_laplacian(g).toarray()

        def run():
            c, _ = lapack.dpotrf(Ld, lower=1, clean=0)
            lapack.dpotrs(c, rhs, lower=1)
    elif backend == "cholmod":
        L = circuit.reduced_laplacian(g)
        from sksparse import cholmod

        A = sp.csc_matrix(L)
        A.sort_indices()
        symbolic = cholmod.analyze(A, mode="auto")

        def run():
            symbolic.cholesky(A).solve_A(rhs)
    else:
        return np.nan
    return best_time(run, repeat=5, budget=3.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lattices up to 40x40 only")
    args = parser.parse_args(argv)
    rows = []
    for k in SIDES:
        if args.quick and k > 40:
            continue
        net = topologies.lattice(k, k)
        circuit, g, X, Y = task(net, batch=BATCH)
        rule = Analytical()
        ref = rule.estimate(circuit, g, X, Y)  # warm-up: symbolic analysis, caches
        backend = circuit.factorize(g).backend
        t_kn = best_time(lambda: rule.estimate(circuit, g, X, Y), repeat=5, budget=3.0)
        t_floor = floor_step(circuit, g, backend)

        # per-sample KKT spsolve: time 1 sample, then as many as the budget allows
        _, t1 = timed(lambda: kkt_step(circuit, g, X, Y, samples=1))
        ns = BATCH if t1 * BATCH <= SPSOLVE_BUDGET else max(2, int(SPSOLVE_BUDGET / t1))
        (gsum, ns), t_ns = timed(lambda: kkt_step(circuit, g, X, Y, samples=ns))
        t_kkt = t_ns * BATCH / ns
        if ns == BATCH:
            np.testing.assert_allclose(gsum / BATCH, ref.estimate, rtol=1e-6,
                                       atol=1e-9 * np.abs(ref.estimate).max())

        t_dense = np.nan
        if net.n_nodes <= DENSE_MAX_NODES:
            gd, t_dense = timed(lambda: dense_step(circuit, g, X, Y))
            np.testing.assert_allclose(gd, ref.estimate, rtol=1e-6,
                                       atol=1e-9 * np.abs(ref.estimate).max())
        rows.append([f"{k}x{k}", net.n_edges, backend, t_kn * 1e3, t_floor * 1e3,
                     f"{t_kn / t_floor:.2f}", f"{t_kkt:.3g}{'' if ns == BATCH else '*'}",
                     f"{t_kkt / t_kn:.0f}x", t_dense,
                     "-" if np.isnan(t_dense) else f"{t_dense / t_kn:.0f}x"])
        print(" ".join(str(v) for v in rows[-1]), flush=True)
    print_table(f"One Analytical training step (batch {BATCH}, 4 inputs, 2 outputs, MSE) on k x k "
                "lattices.",
                ["lattice", "edges", "backend", "kirchnet (ms)", "floor (ms)", "kirchnet / floor",
                 "KKT spsolve per sample (s)", "speed-up vs KKT", "dense numpy (s)", "speed-up vs dense"],
                rows)
    print(f"\n* extrapolated to {BATCH} samples from the samples solved within "
          f"{SPSOLVE_BUDGET:.0f} s (each sample costs the same two spsolve calls). "
          f"Dense numpy skipped above {DENSE_MAX_NODES} nodes (memory and O(n^3) time).")


if __name__ == "__main__":
    main()
