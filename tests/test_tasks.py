"""Tasks: encoding, splits, terminal placement, teacher-student realizability, allostery."""

import numpy as np
import pytest

from kirchnet import topologies
from kirchnet.errors import BoundaryConditionError
from kirchnet.losses import CrossEntropy
from kirchnet.tasks import (
    Task, allostery, class_patterns, digits, encode_inputs, iris, make_task, place_terminals,
    scale_features, teacher_student,
)


def test_scale_features_maps_train_range_to_unit_interval():
    xtr = np.array([[0.0, 5.0, 2.0], [10.0, 5.0, 4.0], [5.0, 5.0, 3.0]])
    xte = np.array([[20.0, 1.0, 2.5]])
    a, b = scale_features(xtr, xte)
    np.testing.assert_allclose(a[:, 0], [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(a[:, 1], 0.0)  # constant feature
    np.testing.assert_allclose(a[:, 2], [-1.0, 1.0, 0.0])
    # test data scaled with the training statistics: 20 -> 2 (x - 0)/10 - 1 = 3
    np.testing.assert_allclose(b, [[3.0, 0.0, -0.5]])
    c, _ = scale_features(np.array([[0.0], [8.0]]), low=0.0, high=16.0)
    np.testing.assert_allclose(c[:, 0], [-1.0, 0.0])


def test_encode_inputs_signed_copies_and_bias():
    x = np.array([[0.5, -1.0]])
    v = encode_inputs(x, voltage=2.0, signed=True, bias=True)
    np.testing.assert_allclose(v, [[1.0, -2.0, -1.0, 2.0, 2.0, -2.0]])
    assert encode_inputs(x, signed=False, bias=False).shape == (1, 2)


def test_class_patterns():
    p = class_patterns(3, 0.1, 0.6)
    np.testing.assert_allclose(p, 0.1 + 0.5 * np.eye(3))


def test_place_terminals_on_lattice_uses_opposite_sides():
    net = topologies.lattice(6, 8)
    ground, inputs, outputs = place_terminals(net, 3, 2)
    pos = net.positions
    assert set(pos[inputs, 0]) == {0.0}
    assert set(pos[outputs, 0]) == {7.0}
    assert ground not in inputs + outputs
    assert len(set(inputs)) == 3 and len(set(outputs)) == 2
    # ground is as far as possible from every terminal: not adjacent to any of them
    adj = net.adjacency().toarray() > 0
    assert not adj[ground, inputs + outputs].any()
    assert place_terminals(net, 3, 2) == (ground, inputs, outputs)


def test_place_terminals_without_positions_and_too_small():
    net = topologies.random_connected(30, mean_degree=4, seed=2)
    g, i, o = place_terminals(net, 4, 3)
    assert len({g, *i, *o}) == 8
    assert place_terminals(net, 4, 3) == (g, i, o)
    with pytest.raises(BoundaryConditionError, match="terminals"):
        place_terminals(topologies.lattice(2, 2), 2, 2)


def test_teacher_student_is_realizable_and_seeded():
    net = topologies.delaunay(40, seed=1)
    t = teacher_student(net, n_inputs=3, n_outputs=2, n_train=20, n_test=10, seed=5)
    c = t.circuit()
    ev = t.evaluate(c, t.info["teacher"])
    assert ev["train_loss"] < 1e-25 and ev["test_loss"] < 1e-25
    assert t.x_train.shape == (20, 3) and t.y_test.shape == (10, 2)
    assert np.all(np.abs(t.x_train) <= 1.0)
    t2 = teacher_student(net, n_inputs=3, n_outputs=2, n_train=20, n_test=10, seed=5)
    np.testing.assert_array_equal(t.y_train, t2.y_train)
    t3 = teacher_student(net, n_inputs=3, n_outputs=2, n_train=20, n_test=10, seed=6)
    assert not np.allclose(t.y_train, t3.y_train)
    # the circuit's outputs lie in the convex hull of the input voltages and ground (passive network)
    assert np.all(np.abs(t.y_train) <= np.abs(t.x_train).max(axis=1, keepdims=True) + 1e-12)
    with pytest.raises(BoundaryConditionError):
        t.circuit(topologies.lattice(5, 5))


def test_iris_split_encoding_and_decision():
    t = iris(test_fraction=0.3, seed=0)
    assert t.x_train.shape == (105, 10) and t.x_test.shape == (45, 10)
    assert np.bincount(t.labels_test).tolist() == [15, 15, 15]  # stratified
    np.testing.assert_array_equal(np.argmax(t.y_train, axis=1), t.labels_train)
    assert t.x_train[:, :4].min() == -1.0 and t.x_train[:, :4].max() == 1.0
    np.testing.assert_allclose(t.x_train[:, 4:8], -t.x_train[:, :4])
    np.testing.assert_allclose(t.x_train[:, 8:], [[1.0, -1.0]] * 105)
    # the decision rule on the class patterns themselves is perfect
    assert t.accuracy(t.patterns[t.labels_test], t.labels_test) == 1.0
    np.testing.assert_array_equal(iris(seed=0).x_train, t.x_train)
    assert not np.array_equal(iris(seed=1).x_train, t.x_train)
    ce = iris(loss="cross_entropy", temperature=0.1)
    assert isinstance(ce.loss, CrossEntropy) and ce.loss.temperature == 0.1
    assert ce.y_train.ndim == 1


def test_nearest_pattern_vs_argmax():
    pats = np.array([[0.0, 0.0], [1.0, 1.0]])
    t = Task("toy", "classification", np.zeros((1, 1)), np.zeros((1, 2)), np.zeros((1, 1)),
             np.zeros((1, 2)), 2, patterns=pats, decision="nearest")
    o = np.array([[0.1, 0.4], [0.9, 0.7]])
    np.testing.assert_array_equal(t.predict_labels(o), [0, 1])
    t2 = Task("toy", "classification", np.zeros((1, 1)), np.zeros((1, 2)), np.zeros((1, 1)),
              np.zeros((1, 2)), 2, patterns=pats, decision="argmax")
    np.testing.assert_array_equal(t2.predict_labels(o), [1, 0])


def test_digits_shapes_and_subsampling():
    t = digits(max_train=200, seed=3)
    assert t.x_train.shape == (200, 130) and t.n_outputs == 10
    assert t.x_train[:, :64].min() >= -1.0 and t.x_train[:, :64].max() <= 1.0
    c = t.circuit(topologies.layered([131, 10]))
    assert c.n_inputs == 130 and c.n_outputs == 10


def test_allostery_targets_reachable_range():
    net = topologies.random_connected(40, mean_degree=4, seed=0)
    t = allostery(net, n_sources=2, n_targets=3, seed=1)
    g, i, o = t.terminals
    assert len({g, *i, *o}) == 6
    assert t.x_train.shape == (1, 2) and t.y_train.shape == (1, 3)
    assert np.all(t.y_train > 0) and np.all(t.y_train < t.x_train.min())
    assert t.circuit().n_outputs == 3


def test_make_task_errors():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("mnist")
    with pytest.raises(BoundaryConditionError, match="needs a network"):
        make_task("teacher_student")


# ------------------------------------------------------------ argument validation (issue 9)
_NET = topologies.lattice(4, 4)


@pytest.mark.parametrize("call, match", [
    (lambda: iris(voltage=np.nan), r"voltage must be finite, got nan"),
    (lambda: iris(voltage=0.0), r"voltage must be > 0\.0, got 0\.0"),
    (lambda: digits(voltage=-1.0), r"voltage must be > 0\.0, got -1\.0"),
    (lambda: iris(test_fraction=np.nan), r"test_fraction must be finite, got nan"),
    (lambda: iris(test_fraction=1.0), r"test_fraction must lie in \[0\.0, 1\.0\), got 1\.0"),
    (lambda: iris(seed=-1), r"seed must be a non-negative integer, got -1"),
    (lambda: iris(loss="hinge"), r"loss must be one of 'mse', 'cross_entropy', 'ce'; got 'hinge'"),
    (lambda: iris(loss="cross_entropy", temperature=0.0), r"temperature must be > 0\.0, got 0\.0"),
    (lambda: iris(temperature=np.nan), r"temperature must be finite, got nan"),
    (lambda: iris(target_low=np.nan), r"\(target_low, target_high\)\[0\] must be finite, got nan"),
    (lambda: iris(target_low=0.5, target_high=0.5), r"target_low and target_high must differ"),
    (lambda: iris(decision="max"), r"decision must be one of 'argmax', 'nearest'; got 'max'"),
    (lambda: iris(signed=1), r"signed must be True or False, got 1"),
    (lambda: digits(max_train=2.5), r"max_train must be an integer, got 2\.5"),
    (lambda: digits(max_train=0), r"max_train must be >= 1, got 0"),
    (lambda: teacher_student(_NET, noise=np.nan), r"noise must be finite, got nan"),
    (lambda: teacher_student(_NET, noise=-0.1), r"noise must be >= 0\.0, got -0\.1"),
    (lambda: teacher_student(_NET, voltage=np.inf), r"voltage must be finite, got inf"),
    (lambda: teacher_student(_NET, n_train=0), r"n_train must be >= 1, got 0"),
    (lambda: teacher_student(_NET, n_test=2.5), r"n_test must be an integer, got 2\.5"),
    (lambda: teacher_student(_NET, n_inputs="3"), r"n_inputs must be an integer, got '3'"),
    (lambda: teacher_student(_NET, g_range=(2.0, 1.0)), r"g_range must satisfy low <= high, got \(2\.0, 1\.0\)"),
    (lambda: teacher_student(_NET, g_range=(0.0, 1.0)), r"g_range\[0\] must be > 0\.0, got 0\.0"),
    (lambda: teacher_student(_NET, g_range=1.0), r"g_range must be a pair \(low, high\), got 1\.0"),
    (lambda: teacher_student(_NET, seed=-5), r"seed must be a non-negative integer, got -5"),
    (lambda: allostery(_NET, n_sources=1.5), r"n_sources must be an integer, got 1\.5"),
    (lambda: allostery(_NET, voltage=np.nan), r"voltage must be finite, got nan"),
    (lambda: allostery(_NET, seed=-1), r"seed must be a non-negative integer, got -1"),
    (lambda: make_task(3), r"unknown task 3"),
])
def test_task_arguments_are_checked(call, match):
    from kirchnet.errors import ParameterError

    with pytest.raises(ParameterError, match=match):
        call()


def test_task_data_are_finite():
    """Every task factory builds finite data (the NaN voltage/noise cases above raise)."""
    for t in (iris(), teacher_student(_NET, noise=0.01), allostery(_NET), digits(max_train=50)):
        for a in (t.x_train, t.y_train, t.x_test, t.y_test):
            assert np.isfinite(np.asarray(a, dtype=float)).all()


# ------------------------------------------------------------ tasks on labelled graphs
def test_task_circuit_on_networkx_graph_with_tuple_labels():
    """Tasks place terminals by internal id; a network with stored labels (here grid tuples)
    used to fail with 'unknown node label 15'."""
    import networkx as nx

    from kirchnet import Network

    net = Network.from_networkx(nx.grid_2d_graph(4, 5))
    task = make_task("teacher_student", network=net, n_inputs=2, n_outputs=2, n_train=8, n_test=4)
    c = task.circuit()
    ground, inputs, outputs = place_terminals(net, 2, 2)
    assert c.ground == ground
    assert c.input_nodes.tolist() == inputs
    assert np.unique(c.readout.indices).tolist() == sorted(outputs)
    # the teacher's targets are what this circuit computes at the teacher's conductances
    out = c.solve(task.info["teacher"], task.x_train).outputs
    np.testing.assert_allclose(out, task.y_train, rtol=1e-12, atol=1e-14)


def test_task_terminals_on_integer_labels_with_gaps_are_not_remapped():
    """With integer labels that are not 0..n-1, internal ids were silently read as labels
    (other nodes) or rejected; the circuit must use the internal ids the task chose."""
    import networkx as nx

    from kirchnet import Network

    G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(4, 5))
    G.remove_nodes_from([0, 7])
    net = Network.from_networkx(G)
    assert net.labels is not None and net.labels[0] == 1
    task = make_task("allostery", network=net, n_sources=2, n_targets=2, seed=1)
    ground, inputs, outputs = task.terminals
    c = task.circuit()
    assert c.ground == ground
    assert c.input_nodes.tolist() == inputs
    assert c.readout.indices.tolist() == outputs
    # iris terminals placed on a graph with string labels
    S = nx.relabel_nodes(nx.random_regular_graph(4, 30, seed=1), {i: f"v{i}" for i in range(30)})
    iris_task = make_task("iris")
    c2 = iris_task.circuit(Network.from_networkx(S))
    assert c2.n_inputs == iris_task.n_inputs and c2.n_outputs == 3


def test_encoding_helpers_check_their_arguments():
    from kirchnet import Network
    from kirchnet.errors import ParameterError, ShapeError

    with pytest.raises(ShapeError, match=r"x_train must be finite; 1 NaN or inf value\(s\), e\.g\. at index \(1, 0\)"):
        scale_features(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ShapeError, match="x_test must be finite"):
        scale_features(np.ones((2, 2)), np.array([[np.inf, 0.0]]))
    with pytest.raises(ParameterError, match=r"voltage must be finite, got nan"):
        encode_inputs(np.zeros((2, 2)), voltage=np.nan)
    with pytest.raises(ParameterError, match=r"n_classes must be an integer, got 2\.5"):
        class_patterns(2.5)
    net = Network(6, [[i, i + 1] for i in range(5)])
    with pytest.raises(ParameterError, match=r"n_inputs must be an integer, got 1\.5"):
        place_terminals(net, 1.5, 1)
