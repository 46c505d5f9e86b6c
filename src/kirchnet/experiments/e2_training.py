"""E2, training comparison: Analytical vs EP vs CL on regression, Iris and digits.

Every (task, rule) pair is trained from the same initial conductances for each seed
(the seed also draws the topology, the teacher and the train/test split); the table
reports final train/test loss and accuracy as mean +- std over the seeds, the figures
the learning curves (mean +- std bands).
"""

from __future__ import annotations

import numpy as np

from .. import plotting
from .common import Ticker, aggregate, curve, pm, preset, write_results
from .run import train


def _loss_label(task, quick, overrides) -> str:
    """Axis label naming the training loss of a preset (with its overrides)."""
    from ..config import TrainConfig
    from ..losses import CrossEntropy
    from .common import deep_update

    t = TrainConfig.from_dict(deep_update(preset(task, quick, 0), overrides or {})).task
    return plotting.loss_label(CrossEntropy(t.temperature) if t.loss == "cross_entropy" else "mse")

#: rule configs compared (EP: centered, energy nudge, the physical "weak clamp"; CL: positive)
RULES = {
    "analytical": {"name": "analytical"},
    "ep": {"name": "ep", "beta": 0.1, "variant": "centered", "nudge": "energy"},
    "cl": {"name": "cl", "eta": 0.1, "variant": "positive"},
}
TASKS = ("regression", "iris", "digits")


def e2_training(out_dir=None, quick: bool = False, seed: int = 0, n_seeds: int = 5, progress=None,
                tasks=TASKS, rules=None, overrides=None) -> dict:
    """Run E2 over ``n_seeds`` seeds (``seed .. seed + n_seeds - 1``); write
    ``e2_training.json/.csv`` and ``e2_<task>.png`` (loss and accuracy curves)."""
    rules = RULES if rules is None else {k: RULES[k] for k in rules}
    seeds = list(range(seed, seed + n_seeds))
    tick = Ticker(progress, len(tasks) * len(rules) * len(seeds), "E2 training comparison")
    rows, table, histories = [], [], {}
    for task in tasks:
        histories[task] = {}
        for rname, rcfg in rules.items():
            hs, ms = [], []
            for s in seeds:
                m, res, _ = train(preset(task, quick, s, **(overrides or {}), rule=rcfg))
                rows.append({"task": task, "rule": rname, "seed": s, **{k: v for k, v in m.items()
                                                                        if k not in ("name", "task", "rule", "seed")}})
                hs.append(res.history)
                ms.append(m)
                tick.advance()
            histories[task][rname] = hs
            entry = aggregate(ms, ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "wall_time"),
                              task=task, rule=rname)
            table.append(entry)
    data = {"experiment": "E2", "quick": quick, "seeds": seeds, "rules": rules, "table": table}
    if out_dir is None:
        return {**data, "rows": rows}
    figures = {}
    for task in tasks:
        classification = "train_accuracy" in histories[task][next(iter(rules))][0][0]
        fig, axes = plotting.figure(figsize=(11 if classification else 5.5, 4.0), ncols=2 if classification else 1)
        axes = np.atleast_1d(axes)
        plotting.learning_curves({f"{r} (train)": curve(h, "train_loss") for r, h in histories[task].items()}
                                 | {f"{r} (test)": curve(h, "test_loss") for r, h in histories[task].items()},
                                 ylabel=f"{_loss_label(task, quick, overrides)}, mean ± std over seeds",
                                 title=f"E2 {task}: loss", ax=axes[0])
        if classification:
            plotting.learning_curves({r: curve(h, "test_accuracy") for r, h in histories[task].items()},
                                     ylabel="test accuracy", logy=False, title=f"E2 {task}: test accuracy",
                                     ax=axes[1])
        figures[f"e2_{task}.png"] = fig
    return write_results(out_dir, "e2_training", data, rows, figures)


def table_markdown(table: list[dict]) -> str:
    lines = ["| task | rule | train loss | test loss | train acc | test acc |", "|---|---|---|---|---|---|"]
    for e in table:
        acc = [pm(e[k], e[k + "_std"]) if k in e else "–" for k in ("train_accuracy", "test_accuracy")]
        lines.append(f"| {e['task']} | {e['rule']} | {pm(e['train_loss'], e['train_loss_std'])} | "
                     f"{pm(e['test_loss'], e['test_loss_std'])} | {acc[0]} | {acc[1]} |")
    return "\n".join(lines)
