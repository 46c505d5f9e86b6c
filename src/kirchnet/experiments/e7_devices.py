"""E7, training on devices: which rule still trains under device non-idealities?

Every update is programmed as pulses through a device model
(:class:`kirchnet.devices.PulseProgrammer`, the ``[device]`` table of a training config).
The base device has a linear, symmetric, noise-free step in the tasks' units, a window
``[G_MIN, G_MAX] = [0.05, 5]`` S and ``n_levels = 1000`` steps across it
(``step = (G_MAX - G_MIN) / n_levels``). Each condition changes one thing:

* number of levels ``n`` (``step = (G_MAX - G_MIN) / n``);
* asymmetry ``a``: RESET steps ``a`` times the SET steps; and soft bounds (``gamma = 1``:
  steps shrink linearly towards the window's ends);
* cycle-to-cycle noise ``c2c``: each pulse's step times ``1 + c2c xi``;
* device-to-device variation ``d2d``: every device parameter ``p exp(d2d xi_e)``;
* retention drift ``g = g_prog (t / t0)^(-nu)`` with one second per training step.

Rules: ``analytical`` (exact gradient, Adam, stochastic pulse rounding), ``ep`` (centered,
energy nudge, beta 0.1) and ``cl`` (coupled learning, eta 0.03), both through Adam and
pulses like the analytical rule, and ``insitu``: the in-situ protocol with no optimizer,
one pulse per edge and step whose amplitude is ``min(gain |i_e i_adj_e|, v_pulse)`` (the
device's step times the amplitude fraction). Tasks: the teacher-student regression and
Iris on the linear crossbar of E2-E5 (a deep resistive network is not trained here: DRN
training runs through :func:`kirchnet.drn.fit_drn`, not the Trainer that programs devices).

Degradation of a rule: per seed, the mean over the non-ideal conditions of ``log10(test
loss / the same seed's ideal test loss)`` (regression) or of ``ideal test accuracy - test
accuracy`` (Iris), then mean and standard error over seeds; the report names the rule with
the smallest and says whether the runner-up is more than a standard error behind.
"""

from __future__ import annotations

import math

import numpy as np

from .common import Ticker, aggregate, pm, preset, write_results
from .run import train

G_MIN, G_MAX = 0.05, 5.0
N_LEVELS = 1000
INSITU_GAIN = 1e5  # amplitude per unit |dC/dr| (1 / (loss / ohm)); calibrated on both tasks

RULES = {
    "analytical": ({"name": "analytical"}, "pulses"),
    "insitu": ({"name": "insitu"}, "in_situ"),
    "ep": ({"name": "ep", "beta": 0.1, "variant": "centered", "nudge": "energy"}, "pulses"),
    "cl": ({"name": "cl", "eta": 0.03}, "pulses"),
}

#: changes to the E2-E5 task presets (quick / full): E7 runs 15 conditions x 4 rules x 2 tasks x 3 seeds,
#: so the regression uses the 60-node Delaunay network of the quick preset in full mode too
SIZES = {True: {"regression": {"epochs": 10}, "iris": {"epochs": 10}},
         False: {"regression": {"epochs": 100, "network": {"kind": "delaunay", "n": 60}}}}

#: the families of non-idealities: (label, parameter name on the x axis)
FAMILIES = {"levels": "number of levels", "asymmetry": "RESET / SET step ratio", "c2c": "cycle-to-cycle noise",
            "d2d": "device-to-device variation", "drift": "drift exponent nu (1 s per step)"}


def base_params(n_levels: int = N_LEVELS) -> dict:
    """Parameters of the base (ideal) device for :func:`kirchnet.devices.preset` ``"ideal"``."""
    step = (G_MAX - G_MIN) / n_levels
    return {"g_min": G_MIN, "g_max": G_MAX, "step_up": step, "step_down": step, "gamma_up": 0.0,
            "gamma_down": 0.0}


def conditions(quick: bool) -> dict[str, dict]:
    """``label -> {"family", "value", "params", "dt"}``: the base device and one change each."""
    out = {"ideal": {"family": "ideal", "value": None, "params": base_params(), "dt": 0.0}}

    def add(family, value, label, dt=0.0, **params):
        out[label] = {"family": family, "value": value, "params": {**base_params(), **params}, "dt": dt}

    if quick:
        add("levels", 30, "30 levels", **base_params(30))
        add("c2c", 1.0, "c2c 1.0", c2c=1.0)
        return out
    for n in (300, 100, 30, 10):
        add("levels", n, f"{n} levels", **base_params(n))
    step = (G_MAX - G_MIN) / N_LEVELS
    for a in (0.5, 0.2):
        add("asymmetry", a, f"asymmetry {a:g}", step_down=a * step)
    add("asymmetry", "soft", "soft bounds", gamma_up=1.0, gamma_down=1.0)
    for c in (0.3, 1.0, 2.0):
        add("c2c", c, f"c2c {c:g}", c2c=c)
    for d in (0.3, 0.6):
        add("d2d", d, f"d2d {d:g}", d2d=d)
    for nu in (0.01, 0.05):
        add("drift", nu, f"drift nu {nu:g}", dt=1.0, drift_nu=nu)
    return out


def device_table(cond: dict, mode: str) -> dict:
    """The ``[device]`` config table of one condition and programming mode."""
    return {"preset": "ideal", "params": cond["params"], "mode": mode, "rounding": "stochastic",
            "dt": cond["dt"], "gain": INSITU_GAIN}


def _key(task: str) -> str:
    return "test_accuracy" if task != "regression" else "test_loss"


def degradation(rows: list[dict], task: str, rule: str) -> tuple[float, float]:
    """Degradation of ``rule`` (module docstring) per seed against that seed's ideal run:
    ``(mean, standard error)`` over the seeds (``rows``: one dict per run)."""
    key = _key(task)
    by_seed: dict = {}
    for r in rows:
        if r["task"] == task and r["rule"] == rule:
            by_seed.setdefault(r["seed"], {})[r["condition"]] = r[key]
    per_seed = []
    for runs in by_seed.values():
        ideal = runs["ideal"]
        vals = [math.log10(max(v, 1e-300) / max(ideal, 1e-300)) if key == "test_loss" else ideal - v
                for c, v in runs.items() if c != "ideal"]
        if vals:
            per_seed.append(float(np.mean(vals)))
    if not per_seed:
        return math.nan, math.nan
    se = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed))) if len(per_seed) > 1 else math.nan
    return float(np.mean(per_seed)), se


def summarize(rows: list[dict], tasks, rules) -> list[dict]:
    """Per task: each rule's degradation (mean, standard error over seeds), the least degraded
    rule, and whether it is ``resolved``: ahead of the runner-up by more than the standard
    error of the difference (``sqrt(se_1^2 + se_2^2)``; unknown with one seed)."""
    out = []
    for task in tasks:
        deg = {r: degradation(rows, task, r) for r in rules}
        ranked = sorted((r for r in rules if np.isfinite(deg[r][0])), key=lambda r: deg[r][0])
        best = ranked[0] if ranked else None
        resolved = None
        if len(ranked) > 1:
            (m1, s1), (m2, s2) = deg[ranked[0]], deg[ranked[1]]
            if np.isfinite(s1) and np.isfinite(s2):
                resolved = bool(m2 - m1 > math.hypot(s1, s2))
        out.append({"task": task, "metric": _key(task), "degradation": {r: v[0] for r, v in deg.items()},
                    "degradation_se": {r: v[1] for r, v in deg.items()}, "least_degraded": best,
                    "runner_up": ranked[1] if len(ranked) > 1 else None, "resolved": resolved})
    return out


def e7_devices(out_dir=None, quick: bool = False, seed: int = 0, n_seeds: int | None = None,
               progress=None, tasks=None, rules=None, overrides=None) -> dict:
    """Run E7; write ``e7_devices.json/.csv`` and ``e7_devices.png``."""
    tasks = tuple(tasks or (("regression",) if quick else ("regression", "iris")))
    rules = tuple(rules or RULES)
    conds = conditions(quick)
    seeds = list(range(seed, seed + (n_seeds or (1 if quick else 3))))
    tick = Ticker(progress, len(tasks) * len(conds) * len(rules) * len(seeds), "E7 devices")
    rows, table = [], []
    for task in tasks:
        for label, cond in conds.items():
            for rname in rules:
                rule, mode = RULES[rname]
                ms = []
                for s in seeds:
                    cfg = preset(task, quick, s, **{**SIZES[quick].get(task, {}), **(overrides or {})}, rule=rule,
                                 device=device_table(cond, mode))
                    m, _, _ = train(cfg)
                    rows.append({"task": task, "condition": label, "rule": rname, "seed": s,
                                 **{k: m[k] for k in m if k.endswith(("loss", "accuracy"))}})
                    ms.append(m)
                    tick.advance()
                table.append(aggregate(ms, ("train_loss", "test_loss", "train_accuracy", "test_accuracy"),
                                       task=task, condition=label, family=cond["family"],
                                       value=cond["value"], rule=rname))
    summary = summarize(rows, tasks, rules)
    data = {"experiment": "E7", "quick": quick, "seeds": seeds, "tasks": list(tasks), "rules": list(rules),
            "base_device": base_params(), "insitu_gain": INSITU_GAIN,
            "conditions": {k: {kk: v for kk, v in c.items() if kk != "params"} | {"params": c["params"]}
                           for k, c in conds.items()},
            "table": table, "summary": summary}
    if out_dir is None:
        return {**data, "rows": rows}
    return write_results(out_dir, "e7_devices", data, rows, {"e7_devices.png": figure(table, tasks, rules)})


def figure(table: list[dict], tasks, rules):
    """One row per task, one panel per family of non-idealities: the final metric against the
    non-ideality's value, one line per rule (the ideal device as a dotted line per rule)."""
    from .. import plotting

    fams = [f for f in FAMILIES if any(e["family"] == f for e in table)]
    fig, axes = plotting.figure(figsize=(3.6 * max(len(fams), 1), 3.2 * len(tasks)), nrows=len(tasks),
                                ncols=max(len(fams), 1), squeeze=False)
    colors = {r: f"C{i}" for i, r in enumerate(rules)}
    for i, task in enumerate(tasks):
        key = _key(task)
        for j, fam in enumerate(fams):
            ax = axes[i][j]
            for r in rules:
                pts = [e for e in table if e["task"] == task and e["rule"] == r and e["family"] == fam]
                ideal = [e for e in table if e["task"] == task and e["rule"] == r and e["condition"] == "ideal"]
                labels = [str(e["value"]) if isinstance(e["value"], str) else f"{e['value']:g}" for e in pts]
                xs = np.arange(len(pts))
                ax.errorbar(xs, [e[key] for e in pts], yerr=[e[key + "_std"] for e in pts], marker="o",
                            capsize=2, color=colors[r], label=r)
                if ideal:
                    ax.axhline(ideal[0][key], color=colors[r], ls=":", lw=1)
                ax.set_xticks(xs)
                ax.set_xticklabels(labels)
            ax.set_xlabel(FAMILIES[fam])
            if key == "test_loss":
                ax.set_yscale("log")
                ax.set_ylabel("test loss (squared error, V²)" if j == 0 else "")
            else:
                low = min([e[key] for e in table if e["task"] == task], default=0.0)
                ax.set_ylim(max(0.0, math.floor(10 * low - 1) / 10), 1.0)
                ax.set_ylabel("test accuracy" if j == 0 else "")
            ax.set_title(f"{task}: {fam}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.suptitle("E7 training on devices (dotted: each rule on the ideal device)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- report
def headline_rows(result: dict) -> list[dict]:
    """The rows E7 adds to the report's headline table."""
    rows = []
    for s in result["summary"]:
        rows.append({"exp": "E7", "claim": f"{s['task']}: the rule that degrades least on devices",
                     "measured": _verdict(s)})
    return rows


def _verdict(s: dict) -> str:
    what = "mean log10(test loss / ideal)" if s["metric"] == "test_loss" else "mean drop in test accuracy"
    se = s["degradation_se"]
    deg = ", ".join(f"{r} {v:.3g}" + (f" ± {se[r]:.2g}" if np.isfinite(se[r]) else "")
                    for r, v in s["degradation"].items())
    note = {True: f"ahead of {s['runner_up']} by more than the standard error",
            False: f"not resolved: within the standard error of {s['runner_up']}",
            None: "one seed: not resolved"}[s["resolved"]]
    return f"{s['least_degraded']} least degraded ({note}); {what}: {deg}"


def table_markdown(result: dict) -> str:
    """Markdown table: one row per task and condition, one column per rule (the metric)."""
    rules = result["rules"]
    out = ["| task | condition | " + " | ".join(rules) + " |", "|---|---|" + "---|" * len(rules)]
    for task in result["tasks"]:
        key = _key(task)
        t = {(e["condition"], e["rule"]): e for e in result["table"] if e["task"] == task}
        for label in dict.fromkeys(e["condition"] for e in result["table"] if e["task"] == task):
            cells = [pm(t[label, r][key], t[label, r][key + "_std"]) for r in rules]
            out.append(f"| {task} ({key.replace('_', ' ')}) | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def report_section(result: dict) -> list[str]:
    """The E7 section of ``report.md``."""
    L = ["## E7 training on devices", "",
         f"Every update programmed as pulses. Base device: window [{G_MIN:g}, {G_MAX:g}] S, "
         f"{N_LEVELS} linear symmetric noise-free steps; each condition changes one property. "
         f"Rules: analytical / EP / CL through Adam and stochastic pulse rounding; in-situ: one pulse per "
         f"edge of amplitude min({INSITU_GAIN:g} |i_e i_adj_e|, 1) (no optimizer). Seeds {result['seeds']}; "
         "mean ± std.", "", table_markdown(result), ""]
    L += ["Degradation per seed against the same seed's ideal device, averaged over the non-ideal "
          "conditions (± standard error over seeds):", ""]
    L += [f"- {s['task']}: {_verdict(s)}" for s in result["summary"]]
    L += ["", "![E7](e7_devices.png)", ""]
    return L
