"""Regression tests for bugs found by independent QA (one test per bug, with the fix)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from kirchnet import Circuit, Network
from kirchnet.tasks import make_task, place_terminals


# --------------------------------------------------------------------------- CLI error text
def test_cli_error_messages_keep_square_brackets(tmp_path):
    """rich markup used to swallow '[...]' in error messages ('needs sizes = ' lost its hint)."""
    from typer.testing import CliRunner

    from kirchnet.cli import app

    cfg = tmp_path / "bad.toml"
    cfg.write_text('name = "x"\n[network]\nkind = "layered"\nsizes = [20]\n[task]\nname = "iris"\n')
    r = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2
    assert "[at least two positive ints]" in r.output


# --------------------------------------------------------------------------- InSitu(wrt="resistance") in training
@pytest.mark.parametrize("parametrization", ["conductance", "resistance"])
def test_trainer_reads_resistance_space_insitu_estimates(parametrization):
    """InSitu(wrt="resistance") returns dC/dr; the Trainer used to apply it as dC/dg
    (opposite sign), so training *raised* the loss. Now it trains exactly like Analytical."""
    from kirchnet import topologies
    from kirchnet.rules import Analytical, InSitu
    from kirchnet.training import Trainer

    net = topologies.lattice(4, 4)
    task = make_task("teacher_student", network=net, n_train=16, n_test=4, seed=2)
    c = task.circuit()
    g0 = np.ones(net.n_edges)
    runs = {}
    for name, rule in (("analytical", Analytical()), ("insitu_r", InSitu(wrt="resistance"))):
        tr = Trainer(rule, "sgd", lr=0.5, epochs=5, batch_size=8, parametrization=parametrization)
        runs[name] = tr.fit(c, g0, task.x_train, task.y_train)
    losses = [h["loss"] for h in runs["insitu_r"].history.to_dicts()]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(runs["insitu_r"].conductances, runs["analytical"].conductances, rtol=1e-9)


# --------------------------------------------------------------------------- drawing labelled circuits
def test_draw_network_marks_outputs_given_by_label():
    """Node outputs were taken from the raw specs as internal ids: string labels were
    dropped and integer labels marked the wrong node."""
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


# --------------------------------------------------------------------------- complex input
def test_complex_conductances_and_inputs_are_rejected():
    """Complex arrays were cast to float with only a ComplexWarning: the imaginary part was
    silently dropped and real-part numbers returned."""
    from kirchnet import topologies
    from kirchnet.errors import ParameterError

    c = Circuit(topologies.lattice(3, 3), ground=0, inputs=[2], outputs=[8])
    g = np.ones(c.network.n_edges)
    with pytest.raises(ParameterError, match="conductances must be real"):
        c.solve(g + 0.5j, [1.0])
    with pytest.raises(ParameterError, match="x must be real"):
        c.solve(g, np.array([1.0 + 1.0j]))
    with pytest.raises(ParameterError, match="currents must be real"):
        c.solve(g, [1.0], currents=np.full(9, 1j))
    # ordinary real input still works
    assert c.solve(g, [1.0]).outputs.shape == (1, 1)


# --------------------------------------------------------------------------- pickling a used circuit
def test_circuit_can_be_copied_and_pickled_after_a_cholmod_factorization():
    """The cached CHOLMOD symbolic analysis made a used circuit impossible to deepcopy or
    pickle, so ResistiveRegressor(circuit=c), GridSearchCV(n_jobs>1) and Dask failed."""
    import copy
    import pickle

    from kirchnet import solvers, topologies

    if not solvers.cholmod_available():
        pytest.skip("CHOLMOD (scikit-sparse) not installed")
    net = topologies.lattice(6, 6)
    c = Circuit(net, ground=0, inputs=[5, 35], outputs=[20], backend="cholmod")
    g = np.linspace(0.5, 2.0, net.n_edges)
    x = np.array([[1.0, -0.5]])
    ref = c.factorize(g).solve(x).potentials  # caches the symbolic analysis
    for other in (copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        np.testing.assert_allclose(other.factorize(g).solve(x).potentials, ref, rtol=1e-12)
    from kirchnet import ResistiveRegressor

    X = np.random.default_rng(0).uniform(-1, 1, (12, 2))
    est = ResistiveRegressor(circuit=c, epochs=2).fit(X, X[:, 0] * 0.1)
    assert est.predict(X).shape == (12,)


# --------------------------------------------------------------------------- one-shot iterables
def test_outputs_given_as_a_generator_are_read():
    """``outputs`` was consumed twice (tuple() then the readout loop): a generator gave
    n_outputs = 2 with an all-zero readout, i.e. outputs silently stuck at 0."""
    from kirchnet import topologies

    net = topologies.lattice(3, 3)
    g = np.linspace(0.5, 2.0, net.n_edges)
    ref = Circuit(net, ground=0, inputs=[2], outputs=[8, 5]).solve(g, [1.0]).outputs
    c = Circuit(net, ground=0, inputs=(v for v in [2]), outputs=(v for v in [8, 5]))
    out = c.solve(g, [1.0]).outputs
    assert np.all(out != 0)
    np.testing.assert_allclose(out, ref, rtol=1e-14)


# --------------------------------------------------------------------------- Network validation
def test_network_rejects_duplicate_labels_and_prints_plain_ids():
    """Duplicate labels were accepted (a label then silently named the first such node);
    the unknown-id message printed numpy reprs ``(np.int64(0), np.int64(5))``."""
    from kirchnet.errors import TopologyError

    with pytest.raises(TopologyError, match="labels must be distinct"):
        Network(3, [[0, 1], [1, 2]], labels=("a", "b", "a"))
    with pytest.raises(TopologyError, match=r"edge 0 = \(0, 5\)"):
        Network(3, [[0, 5]])


# --------------------------------------------------------------------------- Trainer safety clip
def test_trainer_safety_clip_does_not_move_conductances_in_other_units():
    """The default safety clip (1e-6, 1e6) silently moved 10 Mohm resistors (g = 1e-7 S, as
    a SPICE import gives) to 1 Mohm on the first step, whatever the learning rate."""
    from kirchnet import topologies
    from kirchnet.training import Trainer

    net = topologies.lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[8], outputs=[4])
    g0 = np.full(net.n_edges, 1e-7)
    g0[0] = 3e7
    X = np.ones((4, 1))
    Y = c.solve(g0, X).outputs * 1.001
    res = Trainer(optimizer="sgd", lr=1e-30, epochs=2, batch_size=4).fit(c, g0, X, Y)
    np.testing.assert_allclose(res.conductances, g0, rtol=1e-12)
    # the clip still guards against leaving the (widened) range
    res = Trainer(optimizer="sgd", lr=1e30, epochs=1, batch_size=4).fit(c, g0, X, Y)
    assert np.all(res.conductances >= 1e-7 * (1 - 1e-12)) and np.all(res.conductances <= 3e7 * (1 + 1e-12))


# --------------------------------------------------------------------------- caller's arrays stay writable
def test_solving_does_not_freeze_the_callers_conductance_array():
    """The factorization kept (and froze) the caller's float64 array itself, so the usual
    manual loop ``loss, grad = c.loss_and_grad(g, ...); g -= lr * grad`` raised
    'assignment destination is read-only' after the first solve."""
    from kirchnet import topologies

    net = topologies.lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[8], outputs=[4])
    g = np.ones(net.n_edges)
    fac = c.factorize(g)
    losses = []
    for _ in range(3):
        loss, grad = c.loss_and_grad(g, [1.0], [0.2])
        g -= 0.5 * grad
        losses.append(loss)
    assert losses[-1] < losses[0]
    # the factorization holds its own frozen copy, unaffected by the caller's edits
    np.testing.assert_array_equal(fac.conductances, np.ones(net.n_edges))
    assert not fac.conductances.flags.writeable


# --------------------------------------------------------------------------- label lookups
def test_node_label_lookup_is_a_hash_lookup():
    """node_index searched the label tuple for every terminal (O(n) each), so circuits with
    many terminals on large labelled graphs took O(n k); 601 terminals on a 300x300 grid
    took 2.6 s. Count label comparisons instead of timing."""
    calls = {"eq": 0}

    class Label:
        def __init__(self, i):
            self.i = i

        def __hash__(self):
            return hash(self.i)

        def __eq__(self, other):
            calls["eq"] += 1
            return isinstance(other, Label) and other.i == self.i

    n = 2000
    labels = [Label(i) for i in range(n)]
    net = Network(n, np.c_[np.arange(n - 1), np.arange(1, n)], labels=labels)
    assert net.node_index(Label(5)) == 5  # the first lookup builds the index
    calls["eq"] = 0
    picks = list(range(n - 50, n))
    assert [net.node_index(Label(i)) for i in picks] == picks
    assert calls["eq"] <= 2 * len(picks)


def test_factorization_of_other_conductances_is_rejected():
    """A factorization passed with different conductances must not silently be used."""
    import kirchnet as kn
    from kirchnet.errors import ParameterError

    net = kn.topologies.lattice(4, 4)
    c = kn.Circuit(net, ground=0, inputs=[3, 12], outputs=[15])
    g = np.ones(net.n_edges)
    fac = c.factorize(g)
    x, y = np.ones((3, 2)), np.zeros((3, 1))
    g2 = g.copy()
    g2[0] = 2.0
    with pytest.raises(ParameterError, match="other conductances"):
        c.loss_and_grad(g2, x, y, factorization=fac)
    with pytest.raises(ParameterError, match="other conductances"):
        kn.EquilibriumPropagation(0.01).estimate(c, g2, x, y, factorization=fac)
    # the matching factorization is accepted and gives the same numbers as a fresh one
    assert np.allclose(c.loss_and_grad(g, x, y, factorization=fac)[1], c.loss_and_grad(g, x, y)[1])


def test_ltspice_backanno_line_is_ignored():
    from kirchnet.spice import from_netlist

    sc = from_netlist("title\nV1 n1 0 1\nR1 n1 n2 1k\nR2 n2 0 1k\n.backanno\n.end\n", outputs=["n2"])
    assert np.allclose(sc.solve().outputs, 0.5)
