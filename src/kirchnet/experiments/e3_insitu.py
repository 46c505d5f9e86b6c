"""E3, no replica and output-only readout: the in-situ protocol under measurement noise.

The in-situ rule (:class:`kirchnet.rules.InSitu`) measures, on ONE network, the local
edge currents of a voltage-mode run and of a current-mode run (inputs off, the output
error injected at the outputs) and updates each edge from their product; the only
global signal is the output error read at the output nodes. Every measured value gets
relative Gaussian noise ``v (1 + sigma xi)``. The experiment trains Iris (and a
teacher-student regression) at several ``sigma`` and reports final accuracy/loss vs noise;
``sigma = 0`` is the exact analytical gradient.
"""

from __future__ import annotations

from .. import plotting
from .common import Ticker, aggregate, preset, task_panels, write_results
from .run import train

NOISE_QUICK = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
NOISE_FULL = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def e3_insitu(out_dir=None, quick: bool = False, seed: int = 0, n_seeds: int | None = None,
              progress=None, noise_levels=None, tasks=("iris", "regression"), overrides=None) -> dict:
    """Run E3; write ``e3_insitu.json/.csv`` and ``e3_insitu.png``."""
    noise_levels = tuple(noise_levels or (NOISE_QUICK if quick else NOISE_FULL))
    seeds = list(range(seed, seed + (n_seeds or (3 if quick else 5))))
    tick = Ticker(progress, len(tasks) * len(noise_levels) * len(seeds), "E3 in-situ noise")
    rows, table = [], []
    for task in tasks:
        for sigma in noise_levels:
            ms = []
            for s in seeds:
                rule = {"name": "insitu", "noise": float(sigma)}
                m, _, _ = train(preset(task, quick, s, **(overrides or {}), rule=rule))
                rows.append({"task": task, "noise": sigma, "seed": s,
                             **{k: m[k] for k in m if k.endswith(("loss", "accuracy"))}})
                ms.append(m)
                tick.advance()
            e = aggregate(ms, ("train_loss", "test_loss", "train_accuracy", "test_accuracy"),
                          task=task, noise=float(sigma))
            table.append(e)
    data = {"experiment": "E3", "quick": quick, "seeds": seeds, "noise_levels": noise_levels, "table": table}
    if out_dir is None:
        return {**data, "rows": rows}
    fig, panels = task_panels(tasks, table)
    for ax, task, t in panels:
        key = "test_accuracy" if "test_accuracy" in t[0] else "test_loss"
        plotting.metric_curve([e["noise"] for e in t], {f"in-situ ({key})": ([e[key] for e in t],
                                                                             [e[key + "_std"] for e in t])},
                              xlabel="relative measurement noise sigma",
                              ylabel=key.replace("_", " ") + (" (squared error, V²)" if key.endswith("loss") else ""),
                              logx=True, title=f"E3 {task}: final {key.replace('_', ' ')} vs noise", ax=ax,
                              logy=key == "test_loss")
    return write_results(out_dir, "e3_insitu", data, rows, {"e3_insitu.png": fig})
