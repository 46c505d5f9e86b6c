"""E1, gradient fidelity: two-phase estimators against the exact (adjoint) gradient.

For each topology (Delaunay, lattice, random graph) a teacher-student batch is drawn at
random conductances; every estimator ``s`` (EP positive / negative / centered with the
current and the energy nudge, CL positive / centered, adjoint CL) is compared with the
exact gradient ``d = dC/dg`` over a range of nudge strengths ``beta`` (or ``eta``):

* relative error ``||s - d|| / ||d||`` and cosine similarity ``s.d / (|s| |d|)``;
* the log-log slope of the relative error against ``beta`` over ``beta <= 0.1``
  (theory: 1 for one-sided EP, 2 for centered EP with the energy nudge; centered EP
  with the current nudge is exact for every beta; CL tends to the stiffness-weighted
  gradient, so its error tends to a constant: slope about 0);
* CL positive against its own ``eta -> 0`` limit (slope 1: a consistent estimator of the
  stiffness-weighted objective).

Diode networks (:func:`nonlinear_panel`, issue 12): a lattice with Shockley diodes on half
of its edges and two rectifiers. One-sided EP has slope 1 and centered EP slope 2 for both
nudges (centered EP with a current nudge is no longer exact: the measured error is
reported); CL positive tends, with slope 1, to the gradient of the frozen-stiffness
objective ``1/2 (o - y)^T S (o - y)`` (``S`` the small-signal output stiffness at the free
state, :func:`cl_limit`); the in-situ protocol (a small-signal current-mode measurement
of amplitude ``a`` at the operating point) tends to the exact gradient with slope 1 in ``a``.
"""

from __future__ import annotations

import numpy as np

from .. import plotting, topologies
from ..gradient import loss_and_grad
from ..rules import AdjointCoupledLearning, CoupledLearning, EquilibriumPropagation
from ..tasks import teacher_student
from .common import Ticker, fit_loglog_slope, write_results

ESTIMATORS = {
    "EP positive (current)": lambda b: EquilibriumPropagation(b, "positive", "current"),
    "EP negative (current)": lambda b: EquilibriumPropagation(b, "negative", "current"),
    "EP centered (current)": lambda b: EquilibriumPropagation(b, "centered", "current"),
    "EP positive (energy)": lambda b: EquilibriumPropagation(b, "positive", "energy"),
    "EP negative (energy)": lambda b: EquilibriumPropagation(b, "negative", "energy"),
    "EP centered (energy)": lambda b: EquilibriumPropagation(b, "centered", "energy"),
    "CL positive": lambda b: CoupledLearning(b, "positive"),
    "CL centered": lambda b: CoupledLearning(b, "centered"),
    "ACL positive": lambda b: AdjointCoupledLearning(b, "positive"),
}

#: CL positive compared with CL's own eta -> 0 limit instead of the exact gradient
CL_LIMIT = "CL positive vs its eta->0 limit"

#: below this relative error an estimator is reported as exact (rounding level)
EXACT = 1e-9


def _networks(quick: bool, seed: int):
    if quick:
        return {"delaunay": topologies.delaunay(80, seed=seed),
                "lattice": topologies.lattice(9, 9),
                "random": topologies.random_connected(80, mean_degree=4, seed=seed)}
    return {"delaunay": topologies.delaunay(500, seed=seed),
            "lattice": topologies.lattice(22, 22),
            "random": topologies.random_connected(500, mean_degree=5, seed=seed)}


def diode_problem(seed: int = 0, batch: int = 8):
    """A 4x4 lattice with Shockley diodes (``Is = 1e-2``, ``Vt = 0.1``) on every other edge and
    two rectifiers, random conductances, inputs and targets: ``(circuit, g, x, y)``."""
    from ..circuit import Circuit
    from ..elements import Diode, Rectifier

    net = topologies.lattice(4, 4)
    m = net.n_edges
    rng = np.random.default_rng(seed)
    c = Circuit(net, ground=0, inputs=[15, 12], outputs=[6, 9],
                elements={Diode(saturation_current=1e-2, thermal_voltage=0.1): list(range(0, m, 2)),
                          Rectifier(): [3, 13]})
    return c, rng.uniform(0.5, 2, m), rng.uniform(-1, 1, (batch, 2)), rng.uniform(-0.3, 0.3, (batch, 2))


def cl_limit(circuit, g, x, y) -> np.ndarray:
    """The ``eta -> 0`` limit of coupled learning on a nonlinear circuit: the gradient of
    ``1/2 (o - y)^T S (o - y)`` with the small-signal output stiffness ``S = K^-1`` (``K`` the
    output compliance at the free state) held fixed, batch mean (m,)."""
    from ..nonlinear import gradient_from_adjoint

    fac = circuit.factorize(g)
    free = fac.solve(x)
    S = np.linalg.inv(fac.compliance(free))
    lam = fac.adjoint(free, np.einsum("bkl,bl->bk", S, free.outputs - y))
    return gradient_from_adjoint(free, lam).mean(axis=0)


NONLINEAR_BETAS = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])
NONLINEAR_AMPLITUDES = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3])


def nonlinear_panel(seed: int = 0) -> dict:
    """E1 on the diode network of :func:`diode_problem`: relative errors and log-log slopes of
    EP (current and energy nudges, positive / centered) and CL positive against the exact
    gradient, CL positive against :func:`cl_limit`, and :class:`~kirchnet.rules.InSitu`
    against the exact gradient over its amplitude."""
    from ..rules import InSitu

    c, g, x, y = diode_problem(seed)
    _, exact = c.loss_and_grad(g, x, y)
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    limit = cl_limit(c, g, x, y)
    series = {}
    for nudge in ("current", "energy"):
        for var in ("positive", "centered"):
            series[f"EP {var} ({nudge})"] = (NONLINEAR_BETAS, [rel(EquilibriumPropagation(
                float(b), var, nudge).estimate(c, g, x, y).estimate, exact) for b in NONLINEAR_BETAS])
    cl = [CoupledLearning(float(b), "positive").estimate(c, g, x, y).estimate for b in NONLINEAR_BETAS]
    series["CL positive"] = (NONLINEAR_BETAS, [rel(e, exact) for e in cl])
    series["CL positive vs its eta->0 limit"] = (NONLINEAR_BETAS, [rel(e, limit) for e in cl])
    series["in-situ (x = amplitude)"] = (NONLINEAR_AMPLITUDES, [rel(InSitu(amplitude=float(a)).estimate(
        c, g, x, y).estimate, exact) for a in NONLINEAR_AMPLITUDES])
    summary = [{"estimator": k, "slope": fit_loglog_slope(b, e, floor=EXACT), "rel_error_smallest": float(e[-1]),
                "smallest": float(b[-1])} for k, (b, e) in series.items()]
    return {"network": {"n_nodes": c.network.n_nodes, "n_edges": c.network.n_edges, "diodes": len(range(0, g.size, 2)),
                        "rectifiers": 2, "batch": int(x.shape[0])},
            "series": {k: {"x": np.asarray(b), "rel_error": np.asarray(e)} for k, (b, e) in series.items()},
            "summary": summary}


def e1_gradient(out_dir=None, quick: bool = False, seed: int = 0, progress=None, networks=None,
                betas=None, batch: int = 32) -> dict:
    """Run E1; return ``{"summary", "headline", ...}`` and, with ``out_dir``, write
    ``e1_gradient.json/.csv``, ``e1_gradient_bias.png`` and ``e1_cosine.png``.
    ``networks`` ({label: Network}) and ``betas`` override the defaults."""
    betas = np.asarray(betas, float) if betas is not None else np.geomspace(1e-4, 1.0, 9 if quick else 13)
    nets = networks if networks is not None else _networks(quick, seed)
    tick = Ticker(progress, len(nets) * len(ESTIMATORS), "E1 gradient fidelity")
    rows, summary = [], []
    curves: dict[str, dict] = {}
    for tname, net in nets.items():
        task = teacher_student(net, n_inputs=3, n_outputs=2, n_train=batch, n_test=0, seed=seed)
        circuit = task.circuit()
        g = np.random.default_rng(seed + 100).uniform(0.5, 2.0, net.n_edges)
        fac = circuit.factorize(g)
        x, y = task.x_train, task.y_train
        _, exact = loss_and_grad(circuit, g, x, y, factorization=fac)
        norm = np.linalg.norm(exact)
        curves[tname] = {}
        for label, make in ESTIMATORS.items():
            errs, coss = [], []
            for b in betas:
                est = make(float(b)).estimate(circuit, g, x, y, factorization=fac).estimate
                err = float(np.linalg.norm(est - exact) / norm)
                cos = float(est @ exact / (np.linalg.norm(est) * norm))
                errs.append(err); coss.append(cos)
                rows.append({"topology": tname, "n_nodes": net.n_nodes, "n_edges": net.n_edges,
                             "estimator": label, "beta": float(b), "rel_error": err, "cosine": cos})
            errs, coss = np.array(errs), np.array(coss)
            small = betas <= 0.1 + 1e-12
            exact_all = bool(np.all(errs < EXACT))
            slope = float("nan") if exact_all else fit_loglog_slope(betas[small], errs[small], floor=EXACT)
            i2 = int(np.argmin(np.abs(np.log(betas / 1e-2))))
            summary.append({"topology": tname, "estimator": label, "slope": slope, "exact": exact_all,
                            "rel_error_at_1e-2": float(errs[i2]), "cosine_at_1e-2": float(coss[i2]),
                            "rel_error_smallest": float(errs[0]), "cosine_smallest": float(coss[0])})
            curves[tname][label] = (betas, errs, coss, slope)
            tick.advance()
        # CL against its own eta -> 0 limit (the centered CL estimate, c * w, is eta-independent)
        limit = CoupledLearning(1.0, "centered").estimate(circuit, g, x, y, factorization=fac).estimate
        errs = np.array([np.linalg.norm(CoupledLearning(float(b), "positive").estimate(
            circuit, g, x, y, factorization=fac).estimate - limit) / np.linalg.norm(limit) for b in betas])
        small = betas <= 0.1 + 1e-12
        summary.append({"topology": tname, "estimator": CL_LIMIT, "slope": fit_loglog_slope(betas[small], errs[small],
                                                                                              floor=EXACT),
                        "exact": False, "rel_error_at_1e-2": float(errs[int(np.argmin(np.abs(np.log(betas / 1e-2))))]),
                        "cosine_at_1e-2": float("nan"), "rel_error_smallest": float(errs[0]),
                        "cosine_smallest": float("nan")})
        rows += [{"topology": tname, "n_nodes": net.n_nodes, "n_edges": net.n_edges, "estimator": CL_LIMIT,
                  "beta": float(b), "rel_error": float(e), "cosine": float("nan")} for b, e in zip(betas, errs)]
    # aggregate over topologies
    headline = []
    for label in [*ESTIMATORS, CL_LIMIT]:
        s = [r for r in summary if r["estimator"] == label]
        slopes = np.array([r["slope"] for r in s], float)
        headline.append({
            "estimator": label,
            "slope": float(np.nanmean(slopes)) if np.isfinite(slopes).any() else float("nan"),
            "exact": all(r["exact"] for r in s),
            "max_rel_error_at_1e-2": max(r["rel_error_at_1e-2"] for r in s),
            "min_cosine_at_1e-2": float(np.min([r["cosine_at_1e-2"] for r in s])),
            "min_cosine_smallest": float(np.min([r["cosine_smallest"] for r in s])),
        })
    nl = nonlinear_panel(seed)
    data = {"experiment": "E1", "quick": quick, "seed": seed, "betas": betas,
            "networks": {k: {"n_nodes": v.n_nodes, "n_edges": v.n_edges} for k, v in nets.items()},
            "summary": summary, "headline": headline, "nonlinear": nl}
    if out_dir is None:
        return {**data, "rows": rows}
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.4), sharey=True)
    fig2, axes2 = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.0), sharey=True)
    for ax, ax2, (tname, cv) in zip(np.atleast_1d(axes), np.atleast_1d(axes2), curves.items()):
        plotting.gradient_bias({k: (b, e) for k, (b, e, c, s) in cv.items()},
                               slopes={k: s for k, (b, e, c, s) in cv.items()},
                               title=f"{tname} ({nets[tname].n_nodes} nodes)", ax=ax, floor=1e-17)
        for k, (b, e, c, s) in cv.items():
            ax2.semilogx(b, c, "o-", ms=3, label=k)
        ax2.set_title(f"{tname}: cosine to exact gradient")
        ax2.set_xlabel("nudge strength (beta or eta)")
        ax2.grid(alpha=0.3)
    np.atleast_1d(axes2)[0].set_ylabel("cosine similarity")
    np.atleast_1d(axes2)[-1].legend(fontsize=7)
    fig3, ax3 = plotting.figure(figsize=(6.4, 4.6))
    nls = {r["estimator"]: r["slope"] for r in nl["summary"]}
    plotting.gradient_bias({k: (v["x"], v["rel_error"]) for k, v in nl["series"].items()}, slopes=nls, ax=ax3,
                           xlabel="beta, eta or in-situ amplitude (V)",
                           title=f"diode lattice ({nl['network']['n_nodes']} nodes, {nl['network']['diodes']} diodes, "
                                 f"2 rectifiers)")
    return write_results(out_dir, "e1_gradient", {**data}, rows,
                         {"e1_gradient_bias.png": fig, "e1_cosine.png": fig2, "e1_nonlinear.png": fig3})
