"""Run E1-E7 and write ``report.md`` (tables + embedded figures) into one directory."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from . import io
from .common import markdown_table, pm
from .e1_gradient import e1_gradient
from .e2_training import e2_training, table_markdown
from .e3_insitu import e3_insitu
from .e4_partial import e4_partial
from .e5_device import e5_device
from .e6_nonlinear import e6_nonlinear
from .e6_nonlinear import table_markdown as e6_table
from .e7_devices import e7_devices
from .e7_devices import headline_rows as e7_headline
from .e7_devices import report_section as e7_section
from .._interrupt import reraises_ctrl_c

EXPERIMENTS = {"e1": e1_gradient, "e2": e2_training, "e3": e3_insitu, "e4": e4_partial, "e5": e5_device,
               "e6": e6_nonlinear, "e7": e7_devices}


def _f(x, d=3):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{d}g}"


def headline(results: dict) -> list[dict]:
    """One row per claim with the measured number (the README's headline table)."""
    rows = []
    if "e1" in results:
        h = {r["estimator"]: r for r in results["e1"]["headline"]}
        rows += [
            {"exp": "E1", "claim": "one-sided EP bias is O(beta)",
             "measured": f"log-log slope {_f(h['EP positive (current)']['slope'])} (current), "
                         f"{_f(h['EP positive (energy)']['slope'])} (energy)"},
            {"exp": "E1", "claim": "centered EP bias is O(beta^2) (energy nudge)",
             "measured": f"slope {_f(h['EP centered (energy)']['slope'])}"},
            {"exp": "E1", "claim": "centered EP with a current nudge is exact in a linear network",
             "measured": f"max relative error {_f(h['EP centered (current)']['max_rel_error_at_1e-2'], 2)}"},
            *([{"exp": "E1", "claim": "diode network: EP one-sided O(beta), centered O(beta^2) (not exact with a "
                                      "current nudge), CL -> its limit O(eta), in-situ O(amplitude)",
                "measured": ", ".join(f"{r['estimator']} {_f(r['slope'])}" for r in results["e1"]["nonlinear"]["summary"]
                                      if r["estimator"] in ("EP positive (current)", "EP centered (current)",
                                                            "CL positive vs its eta->0 limit",
                                                            "in-situ (x = amplitude)"))}]
              if "nonlinear" in results["e1"] else []),
            {"exp": "E1", "claim": "CL tends to a stiffness-weighted gradient, not the MSE gradient",
             "measured": f"cosine to exact gradient {_f(h['CL positive']['min_cosine_smallest'])}; "
                         f"error to its own eta->0 limit has slope "
                         f"{_f(h['CL positive vs its eta->0 limit']['slope'])}"},
        ]
    if "e2" in results:
        for e in results["e2"]["table"]:
            key = "test_accuracy" if "test_accuracy" in e else "test_loss"
            rows.append({"exp": "E2", "claim": f"{e['task']}: {e['rule']} final {key.replace('_', ' ')}",
                         "measured": f"{pm(e[key], e[key + '_std'])} ({e['n_seeds']} seeds)"})
    if "e3" in results:
        t = [e for e in results["e3"]["table"] if "test_accuracy" in e]
        if t:
            lo, hi = t[0], t[-1]
            rows.append({"exp": "E3", "claim": "in-situ (no replica, output-only readout) tolerates noise",
                         "measured": f"test accuracy {pm(lo['test_accuracy'], lo['test_accuracy_std'])} at "
                                     f"sigma={lo['noise']:g}, {pm(hi['test_accuracy'], hi['test_accuracy_std'])} "
                                     f"at sigma={hi['noise']:g}"})
    if "e4" in results:
        t = {(e["task"], e["mode"], e["fraction"]): e for e in results["e4"]["table"]}
        for task, key in (("iris", "test_accuracy"), ("regression", "loss_reduction")):
            pts = [t.get((task, "random", f)) for f in (1.0, 0.5, 0.1)]
            if all(pts):
                rows.append({"exp": "E4", "claim": f"{task}: partial updates (random subset) {key.replace('_', ' ')}",
                             "measured": ", ".join(f"{p['fraction']:g}: {_f(p[key])}" for p in pts)})
    if "e5" in results:
        t = {e["condition"]: e for e in results["e5"]["table"] if e["rule"] == "analytical"}
        parts = [f"{c}: {_f(t[c]['test_accuracy'])}" for c in
                 ("ideal", "100 levels (nearest)", "8 levels (nearest)", "8 levels (stochastic)", "update noise 1.0")
                 if c in t]
        rows.append({"exp": "E5", "claim": "device realism (Iris test accuracy)", "measured": "; ".join(parts)})
    if "e6" in results:
        t = {(e["task"], e["model"], e["rule"]): e for e in results["e6"]["table"]}
        for task in dict.fromkeys(e["task"] for e in results["e6"]["table"]):
            lin, drn = t.get((task, "linear", "analytical")), t.get((task, "drn", "analytical"))
            if lin and drn:
                rows.append({"exp": "E6", "claim": f"{task}: test accuracy, DRN vs linear crossbar (analytical)",
                             "measured": f"{pm(drn['test_accuracy'], drn['test_accuracy_std'])} "
                                         f"vs {pm(lin['test_accuracy'], lin['test_accuracy_std'])}"})
        sl = results["e6"]["gradient_bias"]["slopes"]
        rows.append({"exp": "E6", "claim": "EP on a DRN: one-sided O(beta), centered O(beta^2)",
                     "measured": f"slopes {_f(sl['EP positive'])}, {_f(sl['EP centered'])}"})
    if "e7" in results:
        rows += e7_headline(results["e7"])
    return rows


def render_report(results: dict, meta: dict) -> str:
    L = [f"# kirchnet reproduction report{' (quick mode)' if meta['quick'] else ''}", "",
         f"Generated {meta['date']} by `{meta['command']}` in {meta['wall_time']:.0f} s "
         f"(kirchnet {meta['version']}, Python {meta['python']}, solver backend "
         f"{meta['backend']}).", "", "## Headline", "",
         markdown_table(headline(results), ["exp", "claim", "measured"], ["exp", "claim", "measured"]), ""]
    if "e1" in results:
        r = results["e1"]
        L += ["## E1 gradient fidelity", "",
              "Relative error `||s - dC/dg|| / ||dC/dg||` of each two-phase estimator against the exact "
              "adjoint gradient, teacher-student batch of 32 at random conductances; slope = log-log fit over "
              "beta <= 0.1. Networks: " + ", ".join(f"{k} ({v['n_nodes']} nodes, {v['n_edges']} edges)"
                                                    for k, v in r["networks"].items()) + ".", "",
              "| estimator | slope | max rel. error at beta=1e-2 | min cosine at 1e-2 | min cosine at 1e-4 |",
              "|---|---|---|---|---|"]
        for h in r["headline"]:
            slope = "exact" if h["exact"] else _f(h["slope"])
            cos = [f"{c:.6f}" if np.isfinite(c) else "–" for c in (h["min_cosine_at_1e-2"], h["min_cosine_smallest"])]
            L.append(f"| {h['estimator']} | {slope} | {_f(h['max_rel_error_at_1e-2'])} | {cos[0]} | {cos[1]} |")
        L += ["", "![E1 bias](e1_gradient_bias.png)", "", "![E1 cosine](e1_cosine.png)", ""]
        if "nonlinear" in r:
            nl = r["nonlinear"]
            L += ["### E1 on a diode network", "",
                  f"4x4 lattice with {nl['network']['diodes']} Shockley diodes and {nl['network']['rectifiers']} "
                  f"rectifiers, batch {nl['network']['batch']}; CL is also compared with its eta -> 0 limit (the "
                  "gradient of the frozen-stiffness objective), in-situ over its small-signal amplitude.", "",
                  "| estimator | slope | rel. error at the smallest beta / amplitude |", "|---|---|---|"]
            L += [f"| {h['estimator']} | {_f(h['slope'])} | {_f(h['rel_error_smallest'])} at {h['smallest']:g} |"
                  for h in nl["summary"]]
            L += ["", "![E1 diode network](e1_nonlinear.png)", ""]
    if "e2" in results:
        r = results["e2"]
        L += ["## E2 training comparison", "",
              f"Mean ± std over seeds {r['seeds']}. Rules: " +
              ", ".join(f"`{k}` {v}" for k, v in r["rules"].items()) + ".", "",
              table_markdown(r["table"]), ""]
        L += [f"![E2 {t}](e2_{t}.png)" for t in dict.fromkeys(e["task"] for e in r["table"])] + [""]
    if "e3" in results:
        r = results["e3"]
        L += ["## E3 in-situ protocol vs measurement noise", "",
              "Relative Gaussian noise sigma on every measured edge current and output voltage; sigma=0 is "
              f"the exact gradient. Seeds {r['seeds']}.", "",
              "| task | noise | test loss | test accuracy |", "|---|---|---|---|"]
        for e in r["table"]:
            acc = pm(e["test_accuracy"], e["test_accuracy_std"]) if "test_accuracy" in e else "–"
            L.append(f"| {e['task']} | {e['noise']:g} | {pm(e['test_loss'], e['test_loss_std'])} | {acc} |")
        L += ["", "![E3](e3_insitu.png)", ""]
    if "e4" in results:
        r = results["e4"]
        L += ["## E4 partial updates", "", "Analytical rule restricted to the tunable edges. "
              f"Seeds {r['seeds']}.", "",
              "| task | subset | fraction | train loss | test accuracy | loss reduction |", "|---|---|---|---|---|---|"]
        for e in r["table"]:
            acc = pm(e["test_accuracy"], e["test_accuracy_std"]) if "test_accuracy" in e else "–"
            L.append(f"| {e['task']} | {e['mode']} | {e['fraction']:g} | {pm(e['train_loss'], e['train_loss_std'])} "
                     f"| {acc} | {_f(e['loss_reduction'])} |")
        L += ["", "![E4](e4_partial.png)", ""]
    if "e5" in results:
        r = results["e5"]
        L += ["## E5 device realism", "", f"Task {r['task']}; seeds {r['seeds']}.", "",
              "| condition | rule | test loss | test accuracy |", "|---|---|---|---|"]
        for e in r["table"]:
            L.append(f"| {e['condition']} | {e['rule']} | {pm(e['test_loss'], e['test_loss_std'])} | "
                     f"{pm(e['test_accuracy'], e['test_accuracy_std'])} |")
        L += ["", "![E5](e5_device.png)", ""]
    if "e6" in results:
        r = results["e6"]
        st = r["settings"]
        L += ["## E6 nonlinear: linear crossbar vs deep resistive network", "",
              f"Test accuracy, mean ± std over seeds {r['seeds']}. Rules: " +
              ", ".join(f"`{k}` {v}" for k, v in r["rules"].items()) + ". Hidden sizes: " +
              ", ".join(f"{k} DRN {v['hidden']} / linear {v['lin_hidden']}, {v['epochs']} epochs"
                        + (f" (DRN CL / in-situ: {v['general']['hidden']} hidden, {v['general']['epochs']} epochs)"
                           if "general" in v else "") for k, v in st.items()) + ".", "",
              e6_table(r), ""]
        L += [f"- {n}" for n in r["notes"]] + ([""] if r["notes"] else [])
        sl = r["gradient_bias"]["slopes"]
        L += ["![E6 curves](e6_curves.png)", "",
              f"EP on a DRN {'-'.join(map(str, r['gradient_bias']['layers']))} against the exact gradient: "
              f"log-log slopes {_f(sl['EP positive'])} (positive) and {_f(sl['EP centered'])} (centered), fitted over "
              "the betas at which no diode switches in the nudged phases (the kinks above them are such "
              "switches).", "",
              "![E6 bias](e6_gradient_bias.png)", ""]
    if "e7" in results:
        L += e7_section(results["e7"])
    L += ["## Files", "", "Every experiment wrote `eN_*.json` (all numbers), `eN_*.csv` (one row per run or "
          "point) and the figures above into this directory.", ""]
    return "\n".join(L)


@reraises_ctrl_c
def reproduce(out_dir, quick: bool = False, seed: int = 0, experiments=None, progress=None,
              command: str = "kirchnet reproduce") -> dict:
    """Run the selected experiments (default all of E1-E7) into ``out_dir`` and write
    ``report.md`` and ``summary.json``. ``out_dir`` must already be prepared
    (see :func:`kirchnet.experiments.io.prepare_out_dir`)."""
    from .. import __version__, solvers

    out = Path(out_dir)
    names = list(experiments or EXPERIMENTS)
    t0 = time.perf_counter()
    results, timings = {}, {}
    for name in names:
        t1 = time.perf_counter()
        results[name] = EXPERIMENTS[name](out, quick=quick, seed=seed, progress=progress)
        timings[name] = time.perf_counter() - t1
    meta = {"quick": quick, "seed": seed, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": command, "wall_time": time.perf_counter() - t0, "version": __version__,
            "python": platform.python_version(),
            "backend": (f"auto (dense up to {solvers.DENSE_MAX} free nodes, then "
                        + ("CHOLMOD" if solvers.cholmod_available() else "SuperLU; CHOLMOD not installed")
                        + " or PCG by predicted fill)"),
            "timings": timings}
    io.write_text(out / "report.md", render_report(results, meta))
    io.write_json(out / "summary.json", {"meta": meta, "headline": headline(results)})
    return {"meta": meta, "results": results, "headline": headline(results)}
