"""Every validation error is raised, with a message that says what is wrong and where,
and no numbers come out of an ill-posed problem."""

from __future__ import annotations

import numpy as np
import pytest

from kirchnet import (
    BoundaryConditionError,
    Circuit,
    Edge,
    FloatingComponentError,
    KirchnetError,
    Network,
    Pair,
    ParameterError,
    ShapeError,
    TopologyError,
    errors,
    topologies,
)
from kirchnet.gradient import adjoint_potentials


@pytest.fixture
def grid():
    net = topologies.lattice(3, 4)  # 12 nodes, 17 edges
    c = Circuit(net, ground=0, inputs=[11, Edge(3)], outputs=[5, Pair(6, 7)], clamped=[9])
    return net, c, np.ones(net.n_edges)


def test_hierarchy():
    for cls in (TopologyError, BoundaryConditionError, FloatingComponentError, ParameterError,
                ShapeError):
        assert issubclass(cls, KirchnetError) and issubclass(cls, ValueError)
    assert issubclass(FloatingComponentError, BoundaryConditionError)
    assert issubclass(errors.ConvergenceError, errors.SolverError)
    assert issubclass(errors.SolverError, RuntimeError)


# ------------------------------------------------------------ floating parts
def test_floating_component_names_its_nodes():
    # component {0, 1, 2} holds ground and input; component {3, 4, 5} has nothing clamped
    net = Network(6, [[0, 1], [1, 2], [3, 4], [4, 5], [5, 3]])
    with pytest.raises(FloatingComponentError, match=r"component with node\(s\) 3, 4, 5 contains no ground, input or clamped node") as info:
        Circuit(net, ground=0, inputs=[2], outputs=[1])
    assert info.value.nodes == (3, 4, 5)
    # an isolated node is a floating component too
    net2 = Network(4, [[0, 1], [1, 2]])
    with pytest.raises(FloatingComponentError, match=r"node\(s\) 3 contains no ground") as info:
        Circuit(net2, ground=0, inputs=[2], outputs=[1])
    assert info.value.nodes == (3,)
    # a series source does not anchor a component; a clamp or input node does
    with pytest.raises(FloatingComponentError, match=r"node\(s\) 3, 4, 5"):
        Circuit(net, ground=0, inputs=[Edge(2)], outputs=[1])
    Circuit(net, ground=0, inputs=[2], outputs=[1], clamped=[4])
    Circuit(net, ground=0, inputs=[2, 5], outputs=[1])


def test_floating_message_truncates_long_lists():
    net = Network(30, [[0, 1]] + [[i, i + 1] for i in range(2, 29)])
    with pytest.raises(FloatingComponentError, match=r"2, 3, 4, 5, 6, 7, 8, 9, 10, 11, \.\.\. \(28 in all\)") as info:
        Circuit(net, ground=0, inputs=[1], outputs=[1])
    assert len(info.value.nodes) == 28


# ------------------------------------------------------------ conductances
@pytest.mark.parametrize("bad, match", [
    (0.0, r"conductances must be strictly positive; non-positive value\(s\) on edge\(s\) 2, 5 \(e\.g\. 0\.0\)"),
    (-1.0, r"strictly positive.*edge\(s\) 2, 5 \(e\.g\. -1\.0\)"),
    (np.nan, r"conductances must be finite; NaN or inf on edge\(s\) 2, 5"),
    (np.inf, r"must be finite; NaN or inf on edge\(s\) 2, 5"),
    (-np.inf, r"must be finite.*edge\(s\) 2, 5"),
])
def test_bad_conductances_name_the_edges(grid, bad, match):
    net, c, g = grid
    g = g.copy()
    g[[2, 5]] = bad
    x = np.ones((1, 2))
    calls = [
        lambda: c.factorize(g),
        lambda: c.solve(g, x),
        lambda: c.loss_and_grad(g, x, np.zeros((1, 2))),
        lambda: c.reduced_laplacian(g),
        lambda: c.factorize(np.ones(net.n_edges)).update(g),
    ]
    for call in calls:
        with pytest.raises(ParameterError, match=match) as info:
            call()
        assert info.value.edges == (2, 5)


@pytest.mark.parametrize("shape", [(16,), (18,), (1, 17), (17, 1), ()])
def test_conductance_shape(grid, shape):
    net, c, _ = grid
    with pytest.raises(ShapeError, match=r"conductances must have shape \(17,\) \(one value per edge\)"):
        c.factorize(np.ones(shape))


def test_many_bad_edges_are_summarized(grid):
    net, c, g = grid
    with pytest.raises(ParameterError, match=r"edge\(s\) 0, 1, .*, 9, \.\.\. \(17 in all\)"):
        c.factorize(-g)


# ------------------------------------------------------------ data shapes
@pytest.mark.parametrize("x, match", [
    (np.ones(3), r"x must have shape \(2,\) or \(batch, 2\), got \(3,\)"),
    (np.ones((4, 1)), r"got \(4, 1\)"),
    (np.ones((2, 2, 2)), r"got \(2, 2, 2\)"),
    (np.ones(()), r"got \(\)"),
    ([[1.0, np.nan]], "x contains NaN or inf"),
    ([1.0, np.inf], "x contains NaN or inf"),
])
def test_bad_inputs(grid, x, match):
    net, c, g = grid
    with pytest.raises(ShapeError, match=match):
        c.solve(g, x)
    with pytest.raises(ShapeError, match=match):
        c.loss_and_grad(g, x, np.zeros((1, 2)))


def test_bad_clamp_and_currents(grid):
    net, c, g = grid
    fac = c.factorize(g)
    x = np.ones((3, 2))
    with pytest.raises(ShapeError, match=r"clamp must have shape \(1,\) or \(batch, 1\), got \(2,\)"):
        fac.solve(x, clamp=[1.0, 2.0])
    with pytest.raises(ShapeError, match="clamp has batch 2 but x has batch 3"):
        fac.solve(x, clamp=np.ones((2, 1)))
    with pytest.raises(ShapeError, match="clamp contains NaN or inf"):
        fac.solve(x, clamp=[np.nan])
    with pytest.raises(ShapeError, match=r"currents must have shape \(12,\) or \(batch, 12\), got \(11,\)"):
        fac.solve(x, currents=np.ones(11))
    with pytest.raises(ShapeError, match="currents has batch 2 but x has batch 3"):
        fac.solve(x, currents=np.ones((2, 12)))
    with pytest.raises(ShapeError, match="currents contains NaN or inf"):
        fac.solve_currents(np.full(12, np.nan))
    with pytest.raises(ShapeError, match=r"currents must have shape \(12,\)"):
        fac.solve_currents(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"delta must have shape \(batch, 2\), got \(3,\)"):
        adjoint_potentials(fac, np.ones(3))


@pytest.mark.parametrize("y, loss, match", [
    (np.zeros((1, 3)), "mse", r"targets must have shape \(1, 2\) \(batch, n_outputs\), got \(1, 3\)"),
    (np.zeros((2, 2)), "mse", r"targets must have shape \(1, 2\)"),
    ([[np.nan, 0.0]], "mse", "targets contain NaN or inf"),
    ([0, 1], "cross_entropy", r"labels must have shape \(1,\), got \(2,\)"),
    ([2], "cross_entropy", r"class labels must lie in 0\.\.1"),
    ([-1], "cross_entropy", r"class labels must lie in 0\.\.1"),
    ([0.5], "cross_entropy", "class labels must be integers"),
    ([[0.2, 0.3, 0.5]], "cross_entropy", r"target probabilities must have shape \(1, 2\)"),
    ([[1.2, -0.2]], "cross_entropy", "finite and non-negative"),
    ([[np.nan, 1.0]], "cross_entropy", "finite and non-negative"),
])
def test_bad_targets(grid, y, loss, match):
    net, c, g = grid
    with pytest.raises(ShapeError, match=match):
        c.loss_and_grad(g, np.ones(2), y, loss=loss)


# ------------------------------------------------------------ roles
NET = Network(5, [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0], [1, 3]])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(ground=7), TopologyError, r"ground: unknown node id 7; valid ids are 0\.\.4"),
    (dict(ground=-1), TopologyError, r"ground: unknown node id -1"),
    (dict(ground=True), BoundaryConditionError, r"ground: node ids must be integers, got True"),
    (dict(ground=1.0), TopologyError, r"ground: unknown node id 1\.0"),
    (dict(inputs=[9]), TopologyError, r"inputs: unknown node id 9"),
    (dict(inputs=["a"]), TopologyError, r"inputs: unknown node id 'a'"),
    (dict(inputs=[Edge(6)]), TopologyError, r"inputs: unknown edge index 6; valid indices are 0\.\.5"),
    (dict(inputs=[Edge(-1)]), TopologyError, r"inputs: unknown edge index -1"),
    (dict(inputs=[Edge(1.5)]), TopologyError, r"inputs: edge indices must be integers, got Edge\(1\.5\)"),
    (dict(inputs=[Pair(1, 2)]), BoundaryConditionError, r"inputs: use a node id or Edge\(index\), not Pair"),
    (dict(outputs=[5]), TopologyError, r"outputs: unknown node id 5"),
    (dict(outputs=[Edge(10)]), TopologyError, r"outputs: unknown edge index 10"),
    (dict(outputs=[Pair(1, 8)]), TopologyError, r"outputs: unknown node id 8"),
    (dict(outputs=[Pair(2, 2)]), BoundaryConditionError, r"outputs: Pair\(2, 2\) reads a node against itself"),
    (dict(outputs=[0]), BoundaryConditionError, r"outputs: node 0 is the ground; its potential is always 0"),
    (dict(clamped=[11]), TopologyError, r"clamped: unknown node id 11"),
    (dict(inputs=[2, 3, 2]), BoundaryConditionError, r"node 2 is listed twice as an input"),
    (dict(inputs=[Edge(1), Edge(1)]), BoundaryConditionError, r"edge 1 is listed twice as a source edge"),
    (dict(clamped=[3, 3]), BoundaryConditionError, r"node 3 is listed twice as a clamped node"),
    (dict(inputs=[0]), BoundaryConditionError, r"node 0 is the ground and cannot also be an input"),
    (dict(clamped=[0]), BoundaryConditionError, r"node 0 is the ground and cannot also be clamped"),
    (dict(inputs=[2, 4], clamped=[4]), BoundaryConditionError, r"node 4 is listed both as an input and as clamped"),
    (dict(backend="gpu"), BoundaryConditionError, r"unknown backend 'gpu'; choose one of auto, dense"),
])
def test_bad_roles(kwargs, error, match):
    args = dict(ground=0, inputs=[2], outputs=[3], clamped=[])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Circuit(NET, **args)


def test_network_type_is_checked():
    with pytest.raises(TypeError, match="network must be a kirchnet.Network, got list"):
        Circuit([[0, 1]], ground=0, inputs=[1], outputs=[1])


def test_topology_errors_through_circuit_entry_points():
    with pytest.raises(TopologyError, match="self-loops are not allowed"):
        Circuit(Network(3, [[0, 1], [1, 1]]), ground=0, inputs=[1], outputs=[1])
    with pytest.raises(TopologyError, match="the edge list is empty"):
        Network(3, [])
    with pytest.raises(TopologyError, match="at least one node"):
        Network(0, [[0, 1]])


def test_labelled_networks_use_labels():
    import networkx as nx

    G = nx.Graph([("in", "mid"), ("mid", "gnd"), ("mid", "out"), ("out", "gnd")])
    net = Network.from_networkx(G)
    c = Circuit(net, ground="gnd", inputs=["in"], outputs=["out", Pair("mid", "out")])
    s = c.solve(np.ones(net.n_edges), [1.0])
    assert s.outputs.shape == (1, 2)
    with pytest.raises(TopologyError, match="outputs: unknown node label 'nowhere'"):
        Circuit(net, ground="gnd", inputs=["in"], outputs=["nowhere"])


def test_edge_outputs_at_clamped_nodes_are_allowed_and_constant():
    """Reading an input node or a clamped-clamped edge is legal; the value is the drive."""
    c = Circuit(NET, ground=0, inputs=[2], outputs=[2, Edge(0)], clamped=[1])
    s = c.solve(np.ones(NET.n_edges), [[3.0]], clamp=[[0.5]])
    np.testing.assert_array_equal(s.outputs, [[3.0, -0.5]])


# ------------------------------------------------------------ the shared argument helpers
from kirchnet._validation import (  # noqa: E402
    check_choice, check_finite_array, check_int, check_positive, check_probability, check_real, check_seed,
)


@pytest.mark.parametrize("value, expected", [(3, 3), (np.int64(3), 3), (3.0, 3), (np.float32(4.0), 4), (-2, -2)])
def test_check_int_accepts_whole_numbers(value, expected):
    out = check_int(value, "n")
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value, match", [
    (2.5, r"n must be an integer, got 2\.5; e\.g\. n=2 or 3"),
    ("3", r"n must be an integer, got '3'; pass an int, not a str"),
    (True, r"n must be an integer, got True; pass an int, not a bool"),
    (np.bool_(True), r"pass an int, not a bool"),
    (np.nan, r"n must be an integer, got nan"),
    (np.inf, r"n must be an integer, got inf"),
    (None, r"n must be an integer, got None"),
    ([3], r"n must be an integer, got \[3\]"),
])
def test_check_int_refuses_everything_else(value, match):
    with pytest.raises(ParameterError, match=match):
        check_int(value, "n")


def test_check_int_bounds_and_error_class():
    assert check_int(5, "k", 1, 5) == 5
    with pytest.raises(ParameterError, match=r"k must be >= 1, got 0"):
        check_int(0, "k", 1)
    with pytest.raises(ParameterError, match=r"k must be <= 5, got 6"):
        check_int(6, "k", maximum=5)
    with pytest.raises(TopologyError):
        check_int(1.5, "rows", error=TopologyError)


@pytest.mark.parametrize("call, match", [
    (lambda: check_real(np.nan, "x"), r"x must be finite, got nan; pass a finite number"),
    (lambda: check_real(-np.inf, "x"), r"x must be finite, got -inf"),
    (lambda: check_real("1", "x"), r"x must be a real number, got '1' \(str\)"),
    (lambda: check_real(1j, "x"), r"x must be a real number, got 1j \(complex\)"),
    (lambda: check_real(False, "x"), r"x must be a real number, got False \(bool\)"),
    (lambda: check_real(2.0, "eta", 0.0, 1.0, low_open=True), r"eta must lie in \(0\.0, 1\.0\], got 2\.0"),
    (lambda: check_real(1.0, "f", 0.0, 1.0, high_open=True), r"f must lie in \[0\.0, 1\.0\), got 1\.0"),
    (lambda: check_real(-1.0, "v", low=0.0), r"v must be >= 0\.0, got -1\.0"),
    (lambda: check_real(3.0, "v", high=2.0, high_open=True), r"v must be < 2\.0, got 3\.0"),
    (lambda: check_positive(0.0, "lr"), r"lr must be > 0\.0, got 0\.0"),
    (lambda: check_probability(1.5, "p"), r"p must lie in \[0\.0, 1\.0\], got 1\.5"),
    (lambda: check_seed(-1), r"seed must be a non-negative integer, got -1; use e\.g\. seed=1"),
    (lambda: check_seed(1.5), r"seed must be a non-negative integer, got 1\.5"),
    (lambda: check_seed("0"), r"seed must be a non-negative integer, got '0' \(str\)"),
    (lambda: check_seed(None), r"seed must be a non-negative integer, got None"),
    (lambda: check_choice("both", "variant", ("positive", "negative")), r"variant must be one of 'positive', 'negative'; got 'both'"),
    (lambda: check_choice(["a"], "variant", ("a",)), r"variant must be one of 'a'; got \['a'\]"),
    (lambda: check_choice(1, "mode", ("1",)), r"mode must be one of '1'; got 1"),
])
def test_scalar_helpers_name_the_argument_and_value(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_scalar_helpers_return_clean_values():
    assert check_real(np.float32(0.5), "x", 0.0, 1.0) == 0.5 and type(check_real(1, "x")) is float
    assert check_positive(2, "lr") == 2.0 and check_probability(0.0, "p") == 0.0
    assert check_seed(np.int64(7)) == 7 and check_seed(3.0) == 3
    assert check_choice("a", "k", ("a", "b")) == "a"


def test_check_finite_array():
    np.testing.assert_array_equal(check_finite_array([[1, 2], [3, 4]], "x"), [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ShapeError, match=r"x must be finite; 2 NaN or inf value\(s\), e\.g\. at index \(0, 1\), \(1, 0\); fix it"):
        check_finite_array([[1.0, np.nan], [np.inf, 0.0]], "x", fix="fix it")
    with pytest.raises(ShapeError, match=r"x must be an array of numbers \(a rectangular list or numpy array\), got list"):
        check_finite_array([[1.0, 2.0], [3.0]], "x")
    with pytest.raises(ShapeError, match="got str"):
        check_finite_array("abc", "x")
    with pytest.raises(ParameterError, match="x must be real; got complex values"):
        check_finite_array([1j], "x")
    # dtype=None keeps integer labels as integers
    assert check_finite_array([0, 2, 1], "y", dtype=None).dtype.kind == "i"

