"""The sweep report: aggregation across seeds, figures, ``report.md``."""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .spec import _RESERVED_COLUMNS, RunSpec, SweepSpec, _canonical_json, _label_text
from ..experiments.io import write_bytes, write_text
from .store import _iso, _write_tables, build_table, preload_table_libraries

__all__ = ["summarize", "write_report"]


# --------------------------------------------------------------------------- report


def _metric_columns(df, axes: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    import pandas as pd

    skip = {*_RESERVED_COLUMNS, *axes}
    if wanted:
        missing = [m for m in wanted if m not in df.columns]
        if missing and not df.empty:
            logging.getLogger(__name__).warning("report metrics not in the results: %s", missing)
        return [m for m in wanted if m in df.columns]
    cols = []
    for c in df.columns:
        if c in skip:
            continue
        num = pd.to_numeric(df[c], errors="coerce")
        if num.notna().any() and num.dropna().nunique() > 1:
            cols.append(c)
    return cols


def summarize(df, axes: Sequence[str], metrics: Sequence[str]):
    """Mean, sample std (ddof=1) and count across seeds, per combination of the other axes."""
    import pandas as pd

    ok = df[df["status"] == "ok"] if "status" in df else df
    group = [a for a in axes if a != "seed" and a in ok.columns]
    if ok.empty or not metrics:
        return pd.DataFrame(columns=[*group, "n"])
    num = ok[[*group, *metrics]].copy()
    for m in metrics:
        num[m] = pd.to_numeric(num[m], errors="coerce")
    if group:
        g = num.groupby(group, dropna=False, sort=False)
        agg = g[list(metrics)].agg(["mean", "std"])
        agg.columns = [f"{m}_{s}" for m, s in agg.columns]
        agg.insert(0, "n", g.size())
        return agg.reset_index()
    row = {"n": len(num)}
    for m in metrics:
        row[f"{m}_mean"], row[f"{m}_std"] = num[m].mean(), num[m].std()
    return pd.DataFrame([row])


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def preload_report_libraries() -> None:
    """Import now what the report imports on first use: the table libraries
    (:func:`preload_table_libraries`) and matplotlib's pyplot on the Agg backend, as
    :func:`_plot_metric` does. A sweep calls this before its loop, where a Ctrl-C would leave
    a half-imported module behind and the report that follows could not be written."""
    preload_table_libraries()
    _pyplot()


def _pyplot():
    """matplotlib's pyplot, on the Agg backend where none is chosen yet (files, no screen)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _plot_metric(summary, metric: str, x: str | None, hue: Sequence[str], facet: Sequence[str],
                 logx: bool | None, path: Path) -> None:
    """One PNG: mean +- std of ``metric`` vs ``x``, a line per ``hue`` combination,
    a panel per ``facet`` combination."""
    import numpy as np
    import pandas as pd

    plt = _pyplot()
    panels = (list(summary.groupby(list(facet), dropna=False, sort=False)) if facet
              else [((), summary)])
    ncols = min(len(panels), math.ceil(math.sqrt(len(panels))))
    nrows = -(-len(panels) // ncols)
    width = 4.6 * ncols + 2.2
    fig, axs = plt.subplots(nrows, ncols, figsize=(width, 3.4 * nrows + 0.6), squeeze=False)
    fig.subplots_adjust(left=0.8 / width, right=1 - 2.4 / width, bottom=0.55 / (3.4 * nrows + 0.6),
                        top=1 - 0.75 / (3.4 * nrows + 0.6), wspace=0.3, hspace=0.45)
    xs_all = pd.to_numeric(summary[x], errors="coerce") if x else None
    numeric_x = xs_all is not None and xs_all.notna().any()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    hue_keys = (list(dict.fromkeys(tuple(_fmt(v) for v in row)
                                   for row in summary[list(hue)].itertuples(index=False)))
                if hue else [()])
    pos = xs_all[xs_all > 0] if numeric_x else ()
    auto_logx = numeric_x and len(pos) == xs_all.notna().sum() and pos.max() / pos.min() >= 20
    use_logx = numeric_x and (logx if logx is not None else auto_logx)
    if numeric_x:  # dodge the lines of different hues a little along x so they stay visible
        xu = np.unique(xs_all.dropna().to_numpy(float))
        span = (np.log(xu.max() / xu.min()) if use_logx else xu.max() - xu.min()) if xu.size > 1 else 0
        dodge = 0.012 * span
    for ax, (fkey, panel) in zip(axs.flat, panels):
        fkey = fkey if isinstance(fkey, tuple) else (fkey,)
        vals = panel[f"{metric}_mean"].to_numpy(float)
        finite = vals[np.isfinite(vals)]
        logy = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() >= 30
        groups = panel.groupby(list(hue), dropna=False, sort=False) if hue else [((), panel)]
        for key, sub in groups:
            key = key if isinstance(key, tuple) else (key,)
            idx = hue_keys.index(tuple(_fmt(k) for k in key)) if hue else 0
            color = colors[idx % len(colors)] if hue else None
            shift = (idx - (len(hue_keys) - 1) / 2) * dodge if numeric_x else 0.0
            label = ", ".join(f"{h}={_fmt(k)}" for h, k in zip(hue, key)) or metric
            m = sub[f"{metric}_mean"].to_numpy(float)
            s = sub[f"{metric}_std"].fillna(0.0).to_numpy(float)
            err = np.vstack([np.minimum(s, 0.9 * m), s]) if logy else s  # log axis: clip below
            if x is None:
                ax.errorbar([label], m, yerr=err, fmt="o", capsize=4, color=color)
                continue
            if numeric_x:
                xv = pd.to_numeric(sub[x], errors="coerce").to_numpy(float)
                if np.isnan(xv).all():  # this group does not use the x axis: a reference band
                    ax.axhline(m.mean(), ls="--", lw=1, color=color, label=f"{label} (no {x})")
                    ax.axhspan(m.mean() - s.mean(), m.mean() + s.mean(), color=color, alpha=0.12)
                    continue
                order = np.argsort(xv)
                xd = xv[order] * np.exp(shift) if use_logx else xv[order] + shift
                ax.errorbar(xd, m[order], yerr=err[..., order], marker="o", ms=4, capsize=3,
                            label=label, color=color)
            else:
                ax.errorbar(sub[x].astype(str).to_numpy(), m, yerr=err, marker="o", capsize=3,
                            label=label, color=color)
        if x is not None:
            ax.set_xlabel(x)
            if use_logx:
                ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_ylabel(metric)
        ax.set_title(", ".join(f"{f}={_fmt(k)}" for f, k in zip(facet, fkey)) or metric, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axs.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axs.flat[0].get_legend_handles_labels()
    for ax in list(axs.flat)[1:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles and (hue or x is not None):
        fig.legend(handles, labels, loc="upper right", bbox_to_anchor=(1.0, 1 - 0.6 / fig.get_figheight()),
                   fontsize=7, frameon=False)
    fig.suptitle(f"{metric}: mean ± std across seeds")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def _choose_x(spec: SweepSpec, summary, group: Sequence[str]) -> str | None:
    import pandas as pd

    if spec.report.x is not None:
        return spec.report.x
    varying = [a for a in group if summary[a].nunique(dropna=True) > 1]
    for a in varying:
        if pd.to_numeric(summary[a], errors="coerce").notna().sum() > 1:
            return a
    return varying[0] if varying else None


def write_report(out_dir: str | os.PathLike, spec: SweepSpec, runs: Sequence[RunSpec],
                 records: Mapping[str, dict], info: Mapping[str, Any] | None = None) -> Path:
    """Write ``results.csv/.parquet``, ``summary.csv``, ``figures/*.png`` and ``report.md``."""
    out = Path(out_dir)
    axes = spec.axis_names()
    recs = [records[r.run_id] for r in runs if r.run_id in records]
    df = build_table(recs, axes)
    _write_tables(out, df)
    metrics = _metric_columns(df, axes, spec.report.metrics)
    summary = summarize(df, axes, metrics)
    write_text(out / "summary.csv", summary.to_csv(index=False))
    group = [a for a in axes if a != "seed"]
    lines = [f"# Sweep report: {spec.sweep.name}", ""]
    n_ok = sum(r.get("status") == "ok" for r in recs)
    n_failed = sum(r.get("status") == "failed" for r in recs)
    lines += [f"- runs: {len(runs)} in the grid, {n_ok} ok, {n_failed} failed, "
              f"{len(runs) - n_ok - n_failed} without result",
              "- axes: " + (", ".join(f"`{a}` ({len(set(map(_canonical_json, [r.labels.get(a) for r in runs])))})"
                                       for a in axes) or "none")]
    walls = [r["wall_s"] for r in recs if isinstance(r.get("wall_s"), (int, float))]
    if walls:
        lines.append(f"- compute: {sum(walls):.1f} s summed over {len(walls)} runs "
                     f"({sum(walls) / len(walls):.2f} s per run)")
    for k, v in (info or {}).items():
        lines.append(f"- {k}: {v}")
    lines += [f"- generated: {_iso(time.time())}", "",
              "Files: `results.csv` (one row per run), `summary.csv` (mean and sample std across "
              "seeds), `runs/<run_id>.json` (each run's config, metrics or error).", ""]
    if metrics and not summary.empty:
        lines += ["## Results (mean ± std across seeds; n = finished seeds)", ""]
        header = [*group, "n", *metrics]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for _, row in summary.iterrows():
            cells = [_fmt(row[a]) for a in group] + [str(int(row["n"]))]
            cells += [f"{_fmt(row[f'{m}_mean'])} ± {_fmt(row[f'{m}_std'])}" for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        x = _choose_x(spec, summary, group)
        facet = [f for f in spec.report.facet if f != x]
        hue = [a for a in group if a != x and a not in facet and summary[a].nunique(dropna=False) > 1]
        figs = out / "figures"
        lines += ["## Figures", ""]
        for m in metrics[:8]:
            if summary[f"{m}_mean"].notna().any():
                name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in m)
                _plot_metric(summary, m, x, hue, facet, spec.report.logx, figs / f"{name}.png")
                lines += [f"![{m}](figures/{name}.png)", ""]
    failed = [r for r in recs if r.get("status") == "failed"]
    if failed:
        lines += ["## Failed runs", "", "| run_id | axes | error |", "|---|---|---|"]
        for r in failed:
            err = (r.get("error") or "").splitlines()[0][:200].replace("|", "\\|")
            lines.append(f"| `{r['run_id']}` | {_label_text(r.get('labels', {}))} | {err} |")
        lines.append("")
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
