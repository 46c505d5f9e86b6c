"""Matplotlib figures from experiment data (Agg backend; every function returns a Figure).

* :func:`learning_curves`: loss/accuracy vs epoch, mean +- std bands over seeds.
* :func:`gradient_bias`: log-log error vs nudge strength with the fitted slopes.
* :func:`metric_curve`: a metric vs a parameter (partial-update fraction, noise level...).
* :func:`draw_network`: the network, edge colour = conductance (log scale), edge width
  = |current| (stored positions when present, a networkx spring layout otherwise).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

__all__ = ["learning_curves", "gradient_bias", "metric_curve", "draw_network", "network_layout"]


def _ax(ax, figsize=(5.5, 4.0)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    return fig, ax


def _label(ax, xlabel: str, ylabel: str, title: str | None, legend_size: int, grid_which: str = "both"):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which=grid_which)
    ax.legend(fontsize=legend_size)


def learning_curves(curves: Mapping[str, tuple], ylabel: str = "loss", logy: bool = True,
                    title: str | None = None, ax=None):
    """``curves[label] = (epochs, mean)`` or ``(epochs, mean, std)``; std drawn as a band."""
    fig, ax = _ax(ax)
    for label, c in curves.items():
        x, mean = np.asarray(c[0], float), np.asarray(c[1], float)
        (line,) = ax.plot(x, mean, label=label, lw=1.6)
        if len(c) > 2 and c[2] is not None:
            std = np.asarray(c[2], float)
            lo = mean - std
            if logy:
                lo = np.maximum(lo, mean * 1e-3)
            ax.fill_between(x, lo, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    if logy:
        ax.set_yscale("log")
    _label(ax, "epoch", ylabel, title, 8)
    return fig


def gradient_bias(series: Mapping[str, tuple], xlabel: str = "nudge strength (beta or eta)",
                  ylabel: str = "relative error to exact gradient", slopes: Mapping[str, float] | None = None,
                  title: str | None = None, ax=None, floor: float = 1e-16):
    """Log-log plot; ``series[label] = (params, values)``; ``slopes[label]`` is added to the legend."""
    fig, ax = _ax(ax, (6.0, 4.4))
    styles = ("-", "--", ":", "-.")
    for j, (label, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, float), np.maximum(np.asarray(y, float), floor)
        lab = label if not slopes or label not in slopes or not np.isfinite(slopes[label]) \
            else f"{label} (slope {slopes[label]:.2f})"
        ax.loglog(x, y, marker="o", ls=styles[j % len(styles)], ms=3.5, lw=1.3, label=lab)
    _label(ax, xlabel, ylabel, title, 7)
    return fig


def metric_curve(x: Sequence[float], series: Mapping[str, tuple], xlabel: str, ylabel: str,
                 logx: bool = False, title: str | None = None, ax=None, logy: bool = False):
    """``series[label] = (mean,)`` or ``(mean, std)`` over the points ``x``; error bars = std
    (with ``logy`` the lower bar is capped at 90 % of the mean so it stays on the axis)."""
    fig, ax = _ax(ax)
    x = np.asarray(x, float)
    for label, s in series.items():
        mean = np.asarray(s[0], float)
        std = np.asarray(s[1], float) if len(s) > 1 and s[1] is not None else None
        yerr = std
        if std is not None and logy:
            yerr = np.stack([np.minimum(std, 0.9 * mean), std])
        ax.errorbar(x, mean, yerr=yerr, fmt="o-", ms=4, capsize=3, lw=1.4, label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("symlog", linthresh=min(x[x > 0]) if np.any(x > 0) else 1.0)
    _label(ax, xlabel, ylabel, title, 8, grid_which="major")
    return fig


def network_layout(network, seed: int = 0) -> np.ndarray:
    """Node positions (n, 2): stored positions, else a seeded networkx spring layout."""
    if network.positions is not None:
        return np.asarray(network.positions, dtype=float)
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(network.n_nodes))
    G.add_edges_from(map(tuple, np.asarray(network.edges)))
    pos = nx.spring_layout(G, seed=seed)
    return np.array([pos[v] for v in range(network.n_nodes)])


def draw_network(network, conductances, currents=None, circuit=None, ax=None, title: str | None = None,
                 max_width: float = 4.0, min_width: float = 0.3, cmap: str = "viridis"):
    """Draw edges coloured by conductance (log colour scale, colour bar) with width
    proportional to ``|current|`` (``currents`` (m,) or (b, m): mean |i| over the batch).
    With a ``circuit``, inputs (triangles), outputs (squares) and ground (star) are marked.
    """
    fig, ax = _ax(ax, (6.0, 5.0))
    pos = network_layout(network)
    g = np.asarray(conductances, dtype=float)
    segs = pos[np.asarray(network.edges)]
    if currents is None:
        width = np.full(g.size, 1.2)
    else:
        i = np.abs(np.asarray(currents, dtype=float))
        if i.ndim == 2:
            i = i.mean(axis=0)
        top = i.max() if i.size and i.max() > 0 else 1.0
        width = min_width + (max_width - min_width) * i / top
    positive = g[g > 0]
    if positive.size and positive.max() > positive.min() * 1.0001:
        norm = LogNorm(vmin=positive.min(), vmax=positive.max())
    else:
        v = positive.max() if positive.size else 1.0
        norm = Normalize(vmin=0.5 * v, vmax=1.5 * v)
    lc = LineCollection(segs, array=g, cmap=cmap, norm=norm, linewidths=width)
    ax.add_collection(lc)
    fig.colorbar(lc, ax=ax, label="conductance g")
    ax.scatter(pos[:, 0], pos[:, 1], s=6, c="0.3", zorder=2)
    if circuit is not None:
        ins = np.asarray(circuit.input_nodes, dtype=int)
        from .circuit import Edge, Pair

        # node outputs given as ids or labels -> internal ids (Edge/Pair outputs are not marked)
        outs = [network.node_index(s) for s in circuit.output_specs if not isinstance(s, (Edge, Pair))]
        ax.scatter(pos[ins, 0], pos[ins, 1], marker="^", s=40, c="tab:red", zorder=3, label="inputs")
        if outs:
            outs = np.asarray(outs, dtype=int)
            ax.scatter(pos[outs, 0], pos[outs, 1], marker="s", s=40, c="tab:blue", zorder=3, label="outputs")
        ax.scatter(*pos[circuit.ground], marker="*", s=120, c="k", zorder=3, label="ground")
        ax.legend(fontsize=7, loc="upper right")
    ax.autoscale()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([]); ax.set_yticks([])
    ax.set_title(title or f"{network.n_nodes} nodes, {network.n_edges} edges (width = |current|)")
    return fig
