"""E5, device realism: bounded and quantized conductances and noisy updates.

Iris on the reference crossbar with the analytical rule and with EP, under device
models applied after every update (:mod:`kirchnet.constraints`): conductance bounds
``[0.1, 10]``; ``n`` log-spaced levels in that range with nearest or stochastic
rounding (a digital potentiometer has 100 steps); multiplicative update noise
``dg <- dg (1 + sigma xi)``. Reports final test accuracy per device model.
"""

from __future__ import annotations

import numpy as np

from .common import Ticker, aggregate, preset, write_results
from .run import train

G_MIN, G_MAX = 0.1, 10.0
N_CLASSES = {"iris": 3, "digits": 10}
#: caption of the figure: why few levels with nearest rounding can end below chance
NEAREST_NOTE = ("n levels (nearest): the first update rounds every conductance to the nearest of n log-spaced "
                "levels in [0.1, 10] S (neighbouring levels differ by a factor 100^(1/(n-1)), 1.93 for n = 8); "
                "later steps (a few % per update) are smaller than half a level spacing and are rounded away, so "
                "the network stays at its rounded random initial state, whose accuracy can lie below chance "
                "(it predicts classes in the wrong order). Stochastic rounding keeps the small steps on average.")


def conditions(quick: bool) -> dict[str, dict]:
    """Device models (constraint configs) by label."""
    b = {"g_min": G_MIN, "g_max": G_MAX}
    out = {"ideal": {"g_min": 1e-3}, "bounded [0.1, 10]": b}
    levels = (8, 32, 100) if quick else (4, 8, 16, 32, 100, 256)
    for n in levels:
        out[f"{n} levels (nearest)"] = {**b, "levels": n, "rounding": "nearest"}
    for n in ((8, 32) if quick else (8, 32, 100)):
        out[f"{n} levels (stochastic)"] = {**b, "levels": n, "rounding": "stochastic"}
    for s in ((0.3, 1.0) if quick else (0.1, 0.3, 1.0, 2.0)):
        out[f"update noise {s}"] = {**b, "update_noise": s}
    out["100 levels + noise 0.3"] = {**b, "levels": 100, "rounding": "nearest", "update_noise": 0.3}
    return out


RULES = {"analytical": {"name": "analytical"},
         "ep": {"name": "ep", "beta": 0.1, "variant": "centered", "nudge": "energy"}}


def e5_device(out_dir=None, quick: bool = False, seed: int = 0, n_seeds: int | None = None,
              progress=None, task: str = "iris", rules=None, overrides=None) -> dict:
    """Run E5; write ``e5_device.json/.csv`` and ``e5_device.png``."""
    conds = conditions(quick)
    rules = tuple(rules or (("analytical",) if quick else ("analytical", "ep")))
    seeds = list(range(seed, seed + (n_seeds or (3 if quick else 5))))
    tick = Ticker(progress, len(conds) * len(rules) * len(seeds), "E5 device realism")
    rows, table = [], []
    for label, ccfg in conds.items():
        for rname in rules:
            ms = []
            for s in seeds:
                m, _, _ = train(preset(task, quick, s, **(overrides or {}), rule=RULES[rname], constraints=ccfg))
                rows.append({"condition": label, "rule": rname, "seed": s,
                             **{k: m[k] for k in m if k.endswith(("loss", "accuracy"))}})
                ms.append(m)
                tick.advance()
            e = aggregate(ms, ("train_loss", "test_loss", "train_accuracy", "test_accuracy"),
                          condition=label, rule=rname, **ccfg)
            table.append(e)
    data = {"experiment": "E5", "quick": quick, "seeds": seeds, "task": task, "table": table}
    if out_dir is None:
        return {**data, "rows": rows}
    from .. import plotting

    key = "test_accuracy" if "test_accuracy" in table[0] else "test_loss"
    labels = list(conds)
    fig, ax = plotting.figure(figsize=(max(7.0, 0.75 * len(labels) * len(rules)), 4.2))
    width = 0.8 / len(rules)
    for j, rname in enumerate(rules):
        t = {e["condition"]: e for e in table if e["rule"] == rname}
        xs = np.arange(len(labels)) + (j - (len(rules) - 1) / 2) * width
        ax.bar(xs, [t[c][key] for c in labels], width, yerr=[t[c][key + "_std"] for c in labels],
               capsize=2, label=rname)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(key.replace("_", " "))
    if key.endswith("accuracy"):
        ax.set_ylim(0.0, 1.0)
        k = N_CLASSES.get(task)
        if k:
            ax.axhline(1.0 / k, color="0.3", ls=":", lw=1.2, label=f"chance (1/{k})")
    ax.set_title(f"E5 {task}: device models (mean ± std over {len(seeds)} seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    if any("levels (nearest)" in c for c in labels):
        fig.text(0.01, -0.2, NEAREST_NOTE, fontsize=7.5, ha="left", va="top", wrap=True)  # below the tick labels
    return write_results(out_dir, "e5_device", data, rows, {"e5_device.png": fig})
