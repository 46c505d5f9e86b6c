"""Plotting: figures carry the data they are meant to show."""

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import LogNorm

from kirchnet import Circuit, plotting, topologies
from kirchnet.experiments import io


def test_draw_network_colour_is_conductance_width_is_current(tmp_path):
    net = topologies.lattice(4, 5)
    c = Circuit(net, ground=0, inputs=[19], outputs=[10])
    g = np.geomspace(0.1, 10, net.n_edges)
    state = c.solve(g, np.array([[1.0], [0.5]]))
    fig = plotting.draw_network(net, g, state.currents, circuit=c, max_width=5.0, min_width=0.5)
    lc = [col for col in fig.axes[0].collections if isinstance(col, LineCollection)][0]
    np.testing.assert_allclose(lc.get_array(), g)
    assert isinstance(lc.norm, LogNorm) and lc.norm.vmin == pytest.approx(0.1) and lc.norm.vmax == pytest.approx(10)
    widths = np.asarray(lc.get_linewidths())
    i = np.abs(state.currents).mean(axis=0)
    np.testing.assert_allclose(widths, 0.5 + 4.5 * i / i.max())
    # stored positions are used for the segments
    np.testing.assert_allclose(lc.get_segments()[0], net.positions[net.edges[0]])
    path = io.save_figure(fig, tmp_path / "net.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_network_without_positions_uses_a_layout():
    net = topologies.random_connected(15, mean_degree=3, seed=0)
    pos = plotting.network_layout(net)
    assert pos.shape == (15, 2) and np.all(np.isfinite(pos))
    np.testing.assert_allclose(plotting.network_layout(net), pos)  # seeded
    fig = plotting.draw_network(net, np.ones(net.n_edges))
    lc = [col for col in fig.axes[0].collections if isinstance(col, LineCollection)][0]
    assert len(lc.get_segments()) == net.n_edges


def test_gradient_bias_is_loglog_with_slopes_in_legend():
    x = np.geomspace(1e-3, 1, 5)
    fig = plotting.gradient_bias({"a": (x, x), "b": (x, x ** 2)}, slopes={"a": 1.0, "b": 2.0})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["a (slope 1.00)", "b (slope 2.00)"]


def test_learning_curves_band_and_metric_curve():
    ep = np.arange(5)
    fig = plotting.learning_curves({"r": (ep, np.ones(5), 0.1 * np.ones(5)), "s": (ep, np.ones(5))})
    ax = fig.axes[0]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    assert len(ax.get_lines()) == 2
    fig2 = plotting.metric_curve([0, 0.1, 1], {"acc": ([0.9, 0.8, 0.5], [0.01, 0.02, 0.05])},
                                 xlabel="noise", ylabel="acc", logx=True)
    line = fig2.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [0.9, 0.8, 0.5])


def test_import_keeps_the_users_backend_and_pyplot_state():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import kirchnet.plotting, kirchnet.experiments.run; "
            "import numpy as np; from kirchnet import topologies; net = topologies.lattice(2, 3); "
            "kirchnet.plotting.draw_network(net, np.ones(net.n_edges)); import matplotlib.pyplot as plt; "
            "print(matplotlib.get_backend(), plt.get_fignums())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["svg", "[]"]


def test_figures_are_not_registered_with_pyplot():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    fig = plotting.learning_curves({"a": ([0, 1], [1.0, 0.5])}, ylabel=plotting.loss_label("mse"))
    assert isinstance(fig, Figure) and plt.get_fignums() == before
    assert fig.axes[0].get_ylabel() == "squared error 1/2 ||o - y||² (V²)"
    from kirchnet.losses import CrossEntropy

    assert plotting.loss_label(CrossEntropy(0.05)) == "cross-entropy of softmax(o / 0.05 V) (nats)"


def test_draw_network_units_width_legend_frozen_edges_and_floor():
    net = topologies.lattice(4, 4)
    c = Circuit(net, ground=0, inputs=[15], outputs=[10])
    g = np.geomspace(0.1, 10, net.n_edges)
    g[:5] = 1e-6  # five edges at the clip floor
    tunable = np.arange(net.n_edges) % 4 != 0
    state = c.solve(g, np.array([[1.0]]))
    fig = plotting.draw_network(net, g, state.currents, circuit=c, tunable=tunable)
    ax = fig.axes[0]
    lc = [col for col in ax.collections if isinstance(col, LineCollection)][0]
    assert lc.norm.vmin == pytest.approx(g[5]) and lc.norm.vmax == pytest.approx(10)  # not the floor
    assert fig.axes[1].get_ylabel() == "conductance g (S)"
    styles = lc.get_linestyles()
    dashed = [s[1] is not None for s in styles]
    assert dashed == list(~tunable)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    i_max = np.abs(state.currents).max()
    assert f"|i| = {i_max:.2g} A" in labels and "frozen (not tunable)" in labels
    assert "5 at the floor g = 1e-06 S" in labels


def test_metric_curve_symlog_axis_has_no_negative_ticks():
    fig = plotting.metric_curve([0.0, 0.1, 1.0, 10.0], {"acc": ([0.9, 0.9, 0.8, 0.5],)}, xlabel="noise",
                                ylabel="acc", logx=True)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.1", "1", "10"]
    assert ax.get_xlim()[0] > -0.1


# ------------------------------------------------------------ labelled circuits
def test_draw_network_marks_outputs_given_by_label():
    """Node outputs were taken from the raw specs as internal ids: string labels were
    dropped and integer labels marked the wrong node."""
    import networkx as nx

    from kirchnet import Network
    from kirchnet.plotting import draw_network

    G = nx.path_graph(6)
    G = nx.relabel_nodes(G, {i: 10 + 7 * i for i in range(6)})  # labels 10, 17, ..., 45
    G.add_edge(10, 31)
    net = Network.from_networkx(G)
    c = Circuit(net, ground=10, inputs=[45], outputs=[24, 38])
    fig = draw_network(net, np.ones(net.n_edges), circuit=c)
    ax = fig.axes[0]
    from kirchnet.plotting import network_layout

    pos = network_layout(net)
    marked = [col for col in ax.collections if col.get_label() == "outputs"]
    assert len(marked) == 1
    np.testing.assert_allclose(marked[0].get_offsets(), pos[[2, 4]])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_draw_network_shows_diodes_apart_with_forward_arrows_and_legend(tmp_path):
    from matplotlib.quiver import Quiver

    from kirchnet.drn import deep_resistive_circuit
    from kirchnet.elements import Diode

    drn, c, g = deep_resistive_circuit((3, 5, 2), seed=0, bias=0.5)
    x = drn.circuit_inputs(np.random.default_rng(0).uniform(-1, 1, (4, 3)))
    fig = plotting.draw_network(c.network, g, c.solve(g, x).currents, circuit=c)
    ax = fig.axes[0]
    lcs = [col for col in ax.collections if isinstance(col, LineCollection)]
    n = drn.params.size
    # resistors keep the conductance colour scale; the 5 diodes are one separate collection
    np.testing.assert_allclose(lcs[0].get_array(), g[:n])
    diodes = [lc for lc in lcs[1:] if len(lc.get_segments()) == 5]
    assert len(diodes) == 1
    np.testing.assert_allclose(np.array(diodes[0].get_segments()), c.network.positions[c.network.edges[n:]])
    (q,) = [col for col in ax.collections if isinstance(col, Quiver)]
    d = c.network.positions[c.network.edges[n:, 1]] - c.network.positions[c.network.edges[n:, 0]]
    np.testing.assert_allclose(np.stack([q.U, q.V], axis=1), 0.3 * d)   # arrows point anode -> cathode
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "5 ideal diodes (arrow: forward)" in labels
    io.save_figure(fig, tmp_path / "drn.png")
    # a Shockley-diode lattice: its own legend entry, linear circuits have none
    net = topologies.lattice(3, 3)
    dc = Circuit(net, ground=0, inputs=[8], outputs=[4], elements={Diode(): [0, 1]})
    labels = [t.get_text() for t in plotting.draw_network(net, np.ones(net.n_edges), circuit=dc)
              .axes[0].get_legend().get_texts()]
    assert "2 diodes (arrow: forward)" in labels
    lin = Circuit(net, ground=0, inputs=[8], outputs=[4])
    labels = [t.get_text() for t in plotting.draw_network(net, np.ones(net.n_edges), circuit=lin)
              .axes[0].get_legend().get_texts()]
    assert not any("diode" in t for t in labels)
