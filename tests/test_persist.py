"""kirchnet.save / load / load_run: every boundary role, labels, positions and edge order
round-trip; a trained run reloads to bit-identical metrics; unknown versions are refused."""

import json
import shutil
import zipfile

import networkx as nx
import numpy as np
import pytest

import kirchnet as kn
from kirchnet import Circuit, Edge, Network, Pair, topologies
from kirchnet.errors import ConfigError, FormatError
from kirchnet.experiments.run import run_training
from kirchnet.persist import FORMAT_VERSION, to_toml


def _labelled_circuit():
    """Mixed labels (int, str, tuple, float), positions, parallel edges, and every role:
    node and Edge inputs, node / Edge / Pair outputs, an extra clamp."""
    G = nx.MultiGraph()
    base = nx.grid_2d_graph(3, 4)  # tuple labels
    G.add_edges_from(base.edges)
    G.add_edges_from([((0, 0), 7), (7, "out"), ("out", (2, 3)), (7, "out"), ((1, 1), 2.5), (2.5, (2, 2))])
    for i, v in enumerate(G.nodes):
        G.nodes[v]["pos"] = (0.5 * i, np.sin(i))
    net = Network.from_networkx(G)
    c = Circuit(net, ground=(0, 0), inputs=[(2, 3), Edge(3), (0, 3)],
                outputs=["out", Edge(5), Pair((1, 2), 2.5), 7], clamped=[(1, 0)])
    return net, c


@pytest.mark.parametrize("archive", [False, True])
def test_every_boundary_role_round_trips(tmp_path, archive):
    net, c = _labelled_circuit()
    g = np.random.default_rng(0).uniform(0.3, 3.0, net.n_edges)
    tunable = np.arange(net.n_edges) % 3 != 0
    path = kn.save(tmp_path / ("net.zip" if archive else "net"), c, g, metadata={"note": "x", "n": 3},
                   tunable=tunable)
    assert zipfile.is_zipfile(path) == archive
    s = kn.load(path)
    n2, c2 = s.network, s.circuit
    assert n2.labels == net.labels and [type(v) for v in n2.labels] == [type(v) for v in net.labels]
    np.testing.assert_array_equal(n2.edges, net.edges)
    np.testing.assert_array_equal(n2.positions, net.positions)
    assert c2.ground == c.ground and c2.n_inputs == c.n_inputs and c2.n_outputs == c.n_outputs
    for attr in ("input_nodes", "source_edges", "_node_cols", "_edge_cols", "clamped_nodes", "free_nodes"):
        np.testing.assert_array_equal(getattr(c2, attr), getattr(c, attr))
    assert (c2.readout != c.readout).nnz == 0
    assert [type(o) for o in c2.output_specs] == [type(o) for o in c.output_specs]
    np.testing.assert_array_equal(s.conductances, g)
    np.testing.assert_array_equal(s.tunable, tunable)
    assert s.metadata == {"note": "x", "n": 3} and s.config is None and s.history is None
    x = np.random.default_rng(1).uniform(-1, 1, (5, 3))
    a, b = c.solve(g, x, clamp=np.array([0.2])), c2.solve(s.conductances, x, clamp=np.array([0.2]))
    np.testing.assert_array_equal(a.potentials, b.potentials)
    np.testing.assert_array_equal(a.outputs, b.outputs)


def test_trained_run_reloads_to_identical_metrics_and_graphml(tmp_path):
    cfg = {"name": "persist", "seed": 3, "epochs": 4, "batch_size": 16, "task": {"name": "iris"},
           "network": {"kind": "layered", "sizes": [11, 6, 3]}, "rule": {"name": "ep"},
           "tunable": {"mode": "random", "fraction": 0.7}}
    metrics = run_training(cfg, out_dir=tmp_path)
    s = kn.load_run(tmp_path)
    ev = s.task().evaluate(s.circuit, s.conductances)
    for k, v in ev.items():
        assert v == metrics[k], k  # bit for bit
    assert s.metadata["metrics"]["test_loss"] == metrics["test_loss"]
    assert s.config == kn.TrainConfig.from_dict(cfg)
    assert s.tunable.sum() == metrics["n_tunable"]
    hist = json.loads((tmp_path / "history.json").read_text())
    assert s.history == hist and len(hist) == 5
    # the readable copies agree with the authoritative arrays and config
    assert kn.TrainConfig.from_toml(tmp_path / "config.toml") == s.config
    rows = (tmp_path / "conductances.csv").read_text().splitlines()
    assert rows[0] == "edge,tail,head,conductance,resistance,tunable,mean_abs_current"
    np.testing.assert_array_equal([float(r.split(",")[3]) for r in rows[1:]], s.conductances)
    # GraphML: same edge order, node ids and conductances through networkx
    H = nx.read_graphml(tmp_path / "network.graphml")
    back = Network.from_networkx(H)
    np.testing.assert_array_equal(back.edges, s.network.edges)
    assert back.labels is None
    g_graphml = np.array([d["conductance"] for *_, d in sorted(H.edges(data=True), key=lambda e: e[2]["index"])])
    np.testing.assert_array_equal(g_graphml, s.conductances)
    # an output directory written before the format existed: rebuilt from config.json + CSV
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "conductances.csv", "history.json", "metrics.json"):
        shutil.copy(tmp_path / name, old / name)
    s_old = kn.load_run(old)
    np.testing.assert_array_equal(s_old.conductances, s.conductances)
    assert s_old.task().evaluate(s_old.circuit, s_old.conductances) == ev


def test_graphml_round_trip_keeps_labels_positions_and_parallel_edges(tmp_path):
    net, _ = _labelled_circuit()
    g = np.linspace(0.5, 2.0, net.n_edges)
    net.write_graphml(tmp_path / "n.graphml", g, tunable=np.arange(net.n_edges) % 2 == 0)
    back = Network.from_networkx(nx.read_graphml(tmp_path / "n.graphml"))
    assert back.labels == net.labels
    np.testing.assert_array_equal(back.edges, net.edges)
    np.testing.assert_array_equal(back.positions, net.positions)
    lat = topologies.lattice(3, 3)  # integer ids stay integer ids (no labels)
    lat.write_graphml(tmp_path / "l.graphml")
    b2 = Network.from_networkx(nx.read_graphml(tmp_path / "l.graphml"))
    assert b2.labels is None
    np.testing.assert_array_equal(b2.edges, lat.edges)


def _edit_index(path, **changes):
    idx = json.loads((path / "kirchnet.json").read_text())
    for key, value in changes.items():
        *head, last = key.split(".")
        d = idx
        for h in head:
            d = d[h]
        d[last] = value
    (path / "kirchnet.json").write_text(json.dumps(idx))


def test_unknown_version_format_and_element_law_are_refused(tmp_path):
    c = Circuit(topologies.lattice(2, 3), ground=0, inputs=[5], outputs=[2])
    g = np.ones(c.network.n_edges)
    for bad, match in (({"version": FORMAT_VERSION + 1}, r"format version 2 is not supported .*reads version 1"),
                       ({"format": "something-else"}, "format is 'something-else'"),
                       ({"elements": [{"law": {"kind": "memristor"}, "edges": [0]}]},
                        "elements: unknown law kind 'memristor'"),
                       ({"elements": [{"law": "resistor", "edges": "all"}]}, "elements: a law must be a mapping")):
        p = kn.save(tmp_path / f"s{len(list(tmp_path.iterdir()))}", c, g)
        _edit_index(p, **bad)
        with pytest.raises(FormatError, match=match):
            kn.load(p)
    p = kn.save(tmp_path / "wrong_m", c, g)
    np.save(p / "conductances.npy", np.ones(3))
    with pytest.raises(FormatError, match="3 conductances for a network of 7 edges"):
        kn.load(p)
    with pytest.raises(FormatError, match="no kirchnet.json"):
        kn.load(tmp_path / "wrong_m" / "..")
    with pytest.raises(FormatError, match="no such file"):
        kn.load(tmp_path / "missing")
    assert issubclass(FormatError, kn.KirchnetError)


def test_save_refuses_bad_input_and_task_needs_a_config(tmp_path):
    c = Circuit(topologies.lattice(2, 2), ground=0, inputs=[3], outputs=[1])
    with pytest.raises(kn.ParameterError):
        kn.save(tmp_path / "a", c, -np.ones(c.network.n_edges))
    with pytest.raises(FormatError, match="tunable must be a boolean mask"):
        kn.save(tmp_path / "a", c, np.ones(c.network.n_edges), tunable=[True])
    net = Network(2, [[0, 1]], labels=(object(), "b"))
    with pytest.raises(FormatError, match="cannot be saved"):
        kn.save(tmp_path / "b", Circuit(net, ground="b", inputs=[]), np.ones(1))
    s = kn.load(kn.save(tmp_path / "c", c, np.ones(c.network.n_edges)))
    with pytest.raises(ConfigError, match="no .*training config"):
        s.task()


def test_to_toml_writes_nested_tables_that_parse_back():
    import tomllib

    data = {"name": "x", "seed": 1, "flag": True, "ratio": 0.1, "missing": None,
            "network": {"kind": "layered", "sizes": [3, 2], "g_init": (0.5, 2.0)}}
    back = tomllib.loads(to_toml(data))
    assert back == {"name": "x", "seed": 1, "flag": True, "ratio": 0.1,
                    "network": {"kind": "layered", "sizes": [3, 2], "g_init": [0.5, 2.0]}}


def test_element_laws_round_trip(tmp_path):
    """A nonlinear circuit keeps every edge's law (kind and parameters); its solve reloads."""
    from kirchnet.elements import Diode, Rectifier

    net = topologies.lattice(3, 3)
    laws = {Diode(saturation_current=1e-12): [0, 3], Rectifier(): [5]}
    c = Circuit(net, ground=0, inputs=[8], outputs=[4], elements=laws)
    g = np.linspace(0.5, 2.0, net.n_edges)
    s = kn.load(kn.save(tmp_path / "nl", c, g))
    assert s.circuit.elements == c.elements and not s.circuit.is_linear
    assert s.circuit.elements.law_of(0) == Diode(saturation_current=1e-12)
    x = np.array([[0.8], [-0.3]])
    np.testing.assert_array_equal(s.circuit.solve(g, x).outputs, c.solve(g, x).outputs)
    idx = json.loads((tmp_path / "nl" / "kirchnet.json").read_text())
    assert [e["edges"] for e in idx["elements"]] == [[0, 3], [5]]
    lin = kn.save(tmp_path / "lin", Circuit(net, ground=0, inputs=[8], outputs=[4]), g)
    assert json.loads((lin / "kirchnet.json").read_text())["elements"] == []


def test_drn_circuit_keeps_the_layered_solver_through_save_load_and_pickle(tmp_path):
    import pickle

    from kirchnet import drn

    model = drn.DRN(drn.DRNSpec(layers=(3, 5, 2), gain=4.0, bias=1.0), seed=1)
    circuit, g = model.to_circuit()
    x = model.circuit_inputs(np.random.default_rng(0).uniform(-1, 1, (7, 3)))
    ref = circuit.solve(g, x).outputs
    back = kn.load(kn.save(tmp_path / "drn", circuit, g))
    assert drn.layered_spec(back.circuit) == model.spec
    np.testing.assert_array_equal(back.circuit.solve(back.conductances, x).outputs, ref)
    assert drn.layered_spec(pickle.loads(pickle.dumps(circuit))) == model.spec
    # a spec that does not describe the saved structure is refused, not trusted
    index = json.loads((tmp_path / "drn" / "kirchnet.json").read_text())
    index["layered"]["spec"]["layers"] = [3, 6, 2]
    (tmp_path / "drn" / "kirchnet.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="layered"):
        kn.load(tmp_path / "drn")
    # a plain circuit carries no layered entry
    plain = Circuit(topologies.lattice(3, 3), ground=0, inputs=[8], outputs=[4])
    kn.save(tmp_path / "plain", plain, np.ones(plain.network.n_edges))
    assert json.loads((tmp_path / "plain" / "kirchnet.json").read_text())["layered"] is None
