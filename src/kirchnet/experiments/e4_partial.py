"""E4, partial updates: only a subset of the conductances is tunable.

The update is the rule's estimate restricted to the tunable edges (projected gradient
descent). Subsets: a random fraction (1, 0.75, 0.5, 0.25, 0.1 of the edges) and
regions of the same sizes, the edges nearest the inputs or nearest the outputs (hop
distance of an edge ``min(d(a), d(b))`` to the nearest input/output node). Reports the
final loss (and accuracy) vs the tunable fraction.
"""

from __future__ import annotations

from .. import plotting
from .common import Ticker, aggregate, preset, task_panels, write_results
from .run import train

FRACTIONS = (1.0, 0.75, 0.5, 0.25, 0.1)
MODES = ("random", "inputs", "outputs")


def e4_partial(out_dir=None, quick: bool = False, seed: int = 0, n_seeds: int | None = None,
               progress=None, fractions=FRACTIONS, tasks=("regression", "iris"), overrides=None) -> dict:
    """Run E4 with the analytical rule; write ``e4_partial.json/.csv`` and ``e4_partial.png``."""
    seeds = list(range(seed, seed + (n_seeds or (3 if quick else 5))))
    combos = [(m, f) for m in MODES for f in fractions if not (m != "random" and f >= 1.0)]
    tick = Ticker(progress, len(tasks) * len(combos) * len(seeds), "E4 partial updates")
    rows, table = [], []
    for task in tasks:
        for mode, frac in combos:
            ms = []
            for s in seeds:
                cfg = preset(task, quick, s, **(overrides or {}), tunable={"mode": mode, "fraction": frac})
                m, _, _ = train(cfg)
                rows.append({"task": task, "mode": mode, "fraction": frac, "seed": s,
                             "n_tunable": m["n_tunable"], "n_edges": m["n_edges"],
                             **{k: m[k] for k in m if k.endswith(("loss", "accuracy"))}})
                ms.append(m)
                tick.advance()
            e = aggregate(ms, ("train_loss", "test_loss", "test_accuracy", "loss_reduction"),
                          task=task, mode=mode, fraction=frac)
            table.append(e)
    # full-network rows are shared by every mode in the plot
    data = {"experiment": "E4", "quick": quick, "seeds": seeds, "fractions": list(fractions), "table": table}
    if out_dir is None:
        return {**data, "rows": rows}
    fig, panels = task_panels(tasks, table)
    for ax, task, t in panels:
        key = "test_accuracy" if "test_accuracy" in t[0] else "train_loss"
        full = next(e for e in t if e["mode"] == "random" and e["fraction"] >= 1.0)
        series = {}
        for mode in MODES:
            pts = sorted([e for e in t if e["mode"] == mode] + ([] if mode == "random" else [full]),
                         key=lambda e: e["fraction"])
            label = {"random": "random subset", "inputs": "region near inputs", "outputs": "region near outputs"}
            series[label[mode]] = ([e[key] for e in pts], [e[key + "_std"] for e in pts])
        xs = sorted(fractions)
        plotting.metric_curve(xs, series, xlabel="tunable fraction of edges", ylabel=key.replace("_", " "),
                              title=f"E4 {task}: final {key.replace('_', ' ')}", ax=ax,
                              logy=key.endswith("loss"))
    return write_results(out_dir, "e4_partial", data, rows, {"e4_partial.png": fig})
