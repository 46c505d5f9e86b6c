"""Matplotlib figures from experiment data; every function returns a ``matplotlib.figure.Figure``.

Figures are built with the object-oriented API on a :class:`matplotlib.figure.Figure` with an
Agg canvas (:func:`figure`): importing this module never selects or changes the matplotlib
backend, and no figure is registered with ``pyplot`` (so ``plt.show()`` and notebooks keep
working, and nothing accumulates in pyplot's figure manager). Save with ``fig.savefig(path)``.

* :func:`learning_curves`: loss/accuracy vs epoch, mean +- std bands over seeds;
  :func:`loss_label` names the loss for the axis.
* :func:`gradient_bias`: log-log error vs nudge strength with the fitted slopes.
* :func:`metric_curve`: a metric vs a parameter (partial-update fraction, noise level...).
* :func:`draw_network`: the network, edge colour = conductance in siemens (log scale; edges
  at the floor in grey, outside the colour range), edge width = |current| in amperes (with
  a width legend), frozen (non-tunable) edges dashed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["figure", "learning_curves", "gradient_bias", "metric_curve", "draw_network", "network_layout",
           "loss_label"]


def figure(figsize=(5.5, 4.0), nrows: int = 1, ncols: int = 1, **subplot_kw):
    """``(fig, axes)``: a :class:`~matplotlib.figure.Figure` on an Agg canvas (not managed by
    pyplot) and ``fig.subplots(nrows, ncols, **subplot_kw)``."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def _ax(ax, figsize=(5.5, 4.0)):
    if ax is None:
        return figure(figsize)
    return ax.figure, ax


def _label(ax, xlabel: str, ylabel: str, title: str | None, legend_size: int, grid_which: str = "both"):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which=grid_which)
    ax.legend(fontsize=legend_size)


def loss_label(loss) -> str:
    """Axis label naming a loss (a name or a :class:`~kirchnet.losses.Loss`), e.g.
    ``"squared error 1/2 ||o - y||^2 (V^2)"``."""
    from .losses import CrossEntropy, SquaredError, get_loss

    loss = get_loss(loss)
    if isinstance(loss, SquaredError):
        return "squared error 1/2 ||o - y||² (V²)"
    if isinstance(loss, CrossEntropy):
        return f"cross-entropy of softmax(o / {loss.temperature:g} V) (nats)"
    return f"loss ({getattr(loss, 'name', type(loss).__name__)})"


def learning_curves(curves: Mapping[str, tuple], ylabel: str = "loss", logy: bool = True,
                    title: str | None = None, ax=None):
    """``curves[label] = (epochs, mean)`` or ``(epochs, mean, std)``; std drawn as a band.
    ``ylabel`` should name the loss (:func:`loss_label`)."""
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
    (with ``logy`` the lower bar is capped at 90 % of the mean so it stays on the axis).
    ``logx`` with a point at 0: a symmetric-log axis, linear below the smallest positive
    point, ticks at the data points (no negative ticks)."""
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
        if np.any(x <= 0):
            lin = float(min(x[x > 0])) if np.any(x > 0) else 1.0
            ax.set_xscale("symlog", linthresh=lin, linscale=0.5)
            ax.set_xticks(np.unique(x))
            ax.set_xticklabels([f"{v:g}" for v in np.unique(x)])
            ax.xaxis.set_minor_locator(_NoTicks())
            ax.set_xlim(min(0.0, float(x.min())) - 0.1 * lin, float(x.max()) * 1.3)
        else:
            ax.set_xscale("log")
    _label(ax, xlabel, ylabel, title, 8, grid_which="major")
    return fig


def _NoTicks():
    from matplotlib.ticker import NullLocator

    return NullLocator()


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
                 max_width: float = 4.0, min_width: float = 0.3, cmap: str = "viridis", tunable=None,
                 floor: float | None = None):
    """Draw edges coloured by conductance (siemens, log colour scale, colour bar) with width
    ``min_width + (max_width - min_width) |i| / max |i|`` (``currents`` (m,) or (b, m): mean
    |i| over the batch, amperes; a legend gives the widths in A). With a ``circuit``, inputs
    (triangles), outputs (squares) and ground (star) are marked; with ``tunable`` (bool mask
    (m,)) the frozen edges are dashed. Edges at ``floor`` (default: the smallest conductance
    when it is shared by several edges, e.g. the 1e-6 S clip) are drawn grey, below the
    colour range, so that the range spans the other edges. Nonlinear elements of a
    ``circuit`` (:class:`~kirchnet.elements.IdealDiode`, ``Diode``, ``Rectifier``, any
    non-resistor law) are drawn apart from the resistors: one colour per law kind, with
    an arrow at the edge's midpoint in its forward direction (anode -> cathode), a legend
    entry per kind, and no share in the conductance colour scale (their ``g`` is an area
    or scale factor).
    """
    fig, ax = _ax(ax, (6.4, 5.0))
    pos = network_layout(network)
    g_all = np.asarray(conductances, dtype=float)
    segs_all = pos[np.asarray(network.edges)]
    elements = getattr(circuit, "elements", None) if circuit is not None else None
    groups = {} if elements is None else elements.as_mapping()   # {law: edges}, resistors left out
    resistor = np.ones(g_all.size, dtype=bool)
    for e in groups.values():
        resistor[np.asarray(e, dtype=np.int64)] = False
    g, segs = g_all[resistor], segs_all[resistor]
    i = None
    if currents is None:
        width_all = np.full(g_all.size, 1.2)
    else:
        i = np.abs(np.asarray(currents, dtype=float))
        if i.ndim == 2:
            i = i.mean(axis=0)
        top = i.max() if i.size and i.max() > 0 else 1.0
        width_all = min_width + (max_width - min_width) * i / top
    width = width_all[resistor]
    positive = g[g > 0]
    if floor is None and positive.size:
        gmin = positive.min()
        at_min = np.count_nonzero(g <= gmin * (1 + 1e-9))
        floor = gmin if at_min >= 2 and at_min < g.size else None
    at_floor = np.zeros(g.size, dtype=bool) if floor is None else g <= floor * (1 + 1e-9)
    rest = g[(g > 0) & ~at_floor]
    if rest.size and rest.max() > rest.min() * 1.0001:
        norm = LogNorm(vmin=rest.min(), vmax=rest.max())
    else:
        v = rest.max() if rest.size else (positive.max() if positive.size else 1.0)
        norm = Normalize(vmin=0.5 * v, vmax=1.5 * v)
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(under="0.75")
    styles = ["solid"] * g.size
    if tunable is not None:
        frozen = ~np.asarray(tunable, dtype=bool)[resistor]
        styles = ["--" if f else "solid" for f in frozen]
    lc = LineCollection(segs, array=g, cmap=cm, norm=norm, linewidths=width, linestyles=styles)
    ax.add_collection(lc)
    cb = fig.colorbar(lc, ax=ax, label="conductance g (S)", extend="min" if at_floor.any() else "neither")
    if isinstance(norm, LogNorm):  # plain numbers (2, 3, 0.5) instead of 2x10^0 labels
        from matplotlib.ticker import FuncFormatter, NullFormatter

        fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
        cb.ax.yaxis.set_major_formatter(fmt)
        cb.ax.yaxis.set_minor_formatter(fmt if norm.vmax / norm.vmin < 10 else NullFormatter())
    ax.scatter(pos[:, 0], pos[:, 1], s=6, c="0.3", zorder=2)
    handles = []
    colours = ("tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
    for k, (law, e) in enumerate(groups.items()):
        e = np.asarray(e, dtype=np.int64)
        col = colours[k % len(colours)]
        ax.add_collection(LineCollection(segs_all[e], colors=col, linewidths=width_all[e], zorder=1.5))
        a, b = segs_all[e, 0], segs_all[e, 1]
        mid, d = 0.5 * (a + b), b - a
        ax.quiver(mid[:, 0] - 0.15 * d[:, 0], mid[:, 1] - 0.15 * d[:, 1], 0.3 * d[:, 0], 0.3 * d[:, 1],
                  color=col, angles="xy", scale_units="xy", scale=1, width=0.006, headwidth=4,
                  headlength=4, zorder=2.5)
        name = {"IdealDiode": "ideal diode", "Diode": "diode", "Rectifier": "rectifier"}.get(
            type(law).__name__, type(law).__name__)
        handles.append(Line2D([], [], color=col, lw=1.5, marker=">", ms=6,
                              label=f"{e.size} {name}{'s' if e.size != 1 else ''} (arrow: forward)"))
    if circuit is not None:
        ins = np.asarray(circuit.input_nodes, dtype=int)
        from .circuit import Edge, Pair

        # node outputs given as ids or labels -> internal ids (Edge/Pair outputs are not marked)
        outs = [network.node_index(s) for s in circuit.output_specs if not isinstance(s, (Edge, Pair))]
        handles.append(ax.scatter(pos[ins, 0], pos[ins, 1], marker="^", s=40, c="tab:red", zorder=3,
                                  label="inputs"))
        if outs:
            outs = np.asarray(outs, dtype=int)
            handles.append(ax.scatter(pos[outs, 0], pos[outs, 1], marker="s", s=40, c="tab:blue", zorder=3,
                                      label="outputs"))
        handles.append(ax.scatter(*pos[circuit.ground], marker="*", s=120, c="k", zorder=3, label="ground"))
    if i is not None and i.max() > 0:
        for frac in (1.0, 0.5, 0.1):
            handles.append(Line2D([], [], color="0.3", lw=min_width + (max_width - min_width) * frac,
                                  label=f"|i| = {frac * i.max():.2g} A"))
    if tunable is not None and (~np.asarray(tunable, dtype=bool)[resistor]).any():
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1.2, label="frozen (not tunable)"))
    if at_floor.any():
        handles.append(Line2D([], [], color="0.75", lw=1.5,
                              label=f"{int(at_floor.sum())} at the floor g = {floor:.2g} S"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.25, 1.0), borderaxespad=0)
    ax.autoscale()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([]); ax.set_yticks([])
    ax.set_title(title or f"{network.n_nodes} nodes, {network.n_edges} edges (width = mean |current|)")
    return fig
