"""SPICE netlist export/import and cross-validation against ngspice."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kirchnet import Circuit, Edge, FloatingComponentError, KirchnetError, Network, Pair, topologies
from kirchnet.errors import NetlistError, SimulatorError
from kirchnet.spice import (
    from_netlist,
    ngspice_available,
    ngspice_potentials,
    parse_value,
    read_netlist,
    spice_node_names,
    to_netlist,
    write_netlist,
)

if not ngspice_available():
    if os.environ.get("CI"):
        # In CI ngspice is installed by .ci/run: its absence is a failure, never a skip.
        def test_ngspice_installed_in_ci():
            pytest.fail("ngspice is not installed but CI is set; install the Debian package 'ngspice'")
    needs_ngspice = pytest.mark.skip(reason="ngspice not installed (apt-get install ngspice)")
else:
    needs_ngspice = pytest.mark.skipif(False, reason="ngspice is installed")


def _mixed_circuit(seed=1, n=40, m=100, ground=3):
    net = topologies.random_connected(n, m=m, seed=seed)
    rng = np.random.default_rng(seed)
    c = Circuit(net, ground=ground, inputs=[5, Edge(7), 9, Edge(20)], outputs=[1, Pair(2, 6)],
                clamped=[11])
    g = rng.uniform(0.1, 10, net.n_edges)
    return c, g, rng


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("text,value", [
    ("1", 1.0), ("1.5", 1.5), ("-2e-3", -2e-3), (".5", 0.5), ("4.7k", 4700.0), ("4.7K", 4700.0),
    ("1meg", 1e6), ("1MEG", 1e6), ("2m", 2e-3), ("3u", 3e-6), ("4n", 4e-9), ("5p", 5e-12),
    ("6g", 6e9), ("7t", 7e12), ("8f", 8e-15), ("1mil", 25.4e-6), ("10kohm", 1e4), ("3mA", 3e-3),
    ("2V", 2.0), ("1e3k", 1e6), ("+1.25E+2", 125.0),
])
def test_parse_value_engineering_suffixes(text, value):
    assert parse_value(text) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("text", ["k", "abc", "1.2.3", "", "--1", "1e"])
def test_parse_value_rejects_garbage(text):
    if text == "1e":  # SPICE reads the trailing letter as a unit
        assert parse_value(text) == 1.0
        return
    with pytest.raises(ValueError):
        parse_value(text)


# ----------------------------------------------------------------------------- export
def test_export_layout_and_node_names():
    net = Network(3, [[0, 1], [1, 2], [2, 0]])
    c = Circuit(net, ground=0, inputs=[1, Edge(1)], outputs=[2])
    text = to_netlist(c, [1.0, 0.5, 0.25], [2.0, -1.0], currents=[0.0, 0.0, 3e-3], title="tri")
    lines = text.splitlines()
    assert lines[0] == "tri"
    assert spice_node_names(c) == ["0", "n1", "n2"]
    assert "R0 0 n1 1.0" in lines
    assert "R1 n1 s1 2.0" in lines  # the series source's internal node
    assert "R2 n2 0 4.0" in lines
    assert "VN1 n1 0 DC 2.0" in lines
    assert "VS1 n2 s1 DC -1.0" in lines
    assert "I2 0 n2 DC 0.003" in lines
    assert lines[-2:] == [".op", ".end"]
    assert ".op" not in to_netlist(c, [1.0, 0.5, 0.25], op=False)


def test_export_rejects_batches_and_bad_conductances():
    c, g, _ = _mixed_circuit()
    with pytest.raises(ValueError, match="one sample"):
        to_netlist(c, g, np.zeros((2, 4)))
    g[3] = -1.0
    with pytest.raises(KirchnetError, match="positive"):
        to_netlist(c, g, np.zeros(4))


def test_series_source_sign_by_hand():
    # one loop: ground -R0(1 ohm)- n1 -R1(1 ohm, series source s)- ground; w_1 = u_1 - 0 + s
    net = Network(2, [[0, 1], [1, 0]])
    c = Circuit(net, ground=0, inputs=[Edge(1)], outputs=[1])
    st = c.solve([1.0, 1.0], [2.0])
    # KCL at node 1: g0 (u1 - 0) flows 0->1 as -u1... current R0 (0->1) = -u1, R1 (1->0) = u1 + 2
    assert st.potentials[0, 1] == pytest.approx(-1.0)
    sc = from_netlist(to_netlist(c, [1.0, 1.0], [2.0]))
    assert sc.solve().potentials[0, sc.node("n1")] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- round trip
def test_round_trip_reproduces_the_circuit():
    c, g, rng = _mixed_circuit()
    x, clamp = rng.normal(size=4), rng.normal(size=1)
    J = rng.normal(size=c.network.n_nodes)
    ref = c.solve(g, x, currents=J, clamp=clamp)
    sc = from_netlist(to_netlist(c, g, x, currents=J, clamp=clamp))
    # topology: same edges (ground renumbered to 0), conductances to rounding
    ids = np.array([sc.node(name) for name in spice_node_names(c)])
    assert sc.circuit.network.n_edges == c.network.n_edges
    np.testing.assert_array_equal(sc.circuit.network.edges, ids[c.network.edges])
    np.testing.assert_allclose(sc.conductances, g, rtol=1e-15)
    np.testing.assert_array_equal(sc.x, np.r_[x, clamp])
    assert sc.input_names == ("VN5", "VS7", "VN9", "VS20", "VC11")
    assert sc.resistor_names[7] == "R7"
    np.testing.assert_array_equal(sc.circuit.source_edges, [7, 20])
    np.testing.assert_allclose(sc.solve().potentials[0, ids], ref.potentials[0], rtol=1e-12, atol=1e-12)


def test_round_trip_with_ground_zero_keeps_node_ids(tmp_path):
    net = topologies.lattice(4, 5)
    c = Circuit(net, ground=0, inputs=[3, Edge(10)], outputs=[19])
    g = np.linspace(0.5, 2.0, net.n_edges)
    path = write_netlist(tmp_path / "lat.cir", c, g, [1.0, 0.5])
    sc = read_netlist(path, outputs=["n19", ("n4", "N7")])
    assert sc.node_names == tuple(spice_node_names(c))
    np.testing.assert_array_equal(sc.circuit.network.edges, net.edges)
    ref = c.solve(g, [1.0, 0.5])
    st = sc.solve()
    np.testing.assert_allclose(st.potentials, ref.potentials, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(st.outputs[0], [ref.potentials[0, 19],
                                               ref.potentials[0, 4] - ref.potentials[0, 7]], atol=1e-14)


# ----------------------------------------------------------------------------- import syntax
HAND = """A hand-written divider with every syntax feature
* a comment line
V1 in 0 DC 10 ; inline comment
R1 in mid 1k
R2 mid GND
+ 3k $ continuation and a dollar comment
Rload mid out 2K
Rb out 0 2k
I1 0 out 1mA
.options reltol=1e-6
.op
.control
op
print all
.endc
.end
R9 junk after the end is ignored
"""


def test_import_hand_written_netlist_against_nodal_analysis():
    sc = from_netlist(HAND, outputs=["out", "mid"])
    assert sc.title.startswith("A hand-written")
    assert sc.node_names == ("0", "in", "mid", "out")  # order of appearance
    assert sc.resistor_names == ("R1", "R2", "Rload", "Rb")
    np.testing.assert_allclose(1.0 / sc.conductances, [1e3, 3e3, 2e3, 2e3])
    np.testing.assert_array_equal(sc.x, [10.0])
    np.testing.assert_array_equal(sc.currents, [0, 0, 0, 1e-3])
    # nodal equations by hand: mid: (10-m)/1k = m/3k + (m-o)/2k ; out: (m-o)/2k + 1mA = o/2k
    A = np.array([[1 / 1e3 + 1 / 3e3 + 1 / 2e3, -1 / 2e3], [-1 / 2e3, 2 / 2e3]])
    m, o = np.linalg.solve(A, [10 / 1e3, 1e-3])
    np.testing.assert_allclose(sc.solve().outputs[0], [o, m], rtol=1e-12)


def test_import_series_source_both_orientations():
    # V between two non-ground nodes in series with one resistor, written with either polarity
    base = "t\nVa a 0 1\nR1 a b 1\nR2 b 0 1\n"
    # u_k - u_c = 0.5 either way; k touches only R3 and Vs, so R3 becomes edge b -> c
    plus = from_netlist(base + "R3 b k 2\nVs k c 0.5\nR4 c 0 1\nR5 c 0 3\n")
    minus = from_netlist(base + "R3 b k 2\nVs c k -0.5\nR4 c 0 1\nR5 c 0 3\n")
    for sc in (plus, minus):
        assert sc.circuit.source_edges.tolist() == [2]
        assert "k" not in sc.node_names
        u = sc.solve().potentials[0]
        b, c = sc.node("b"), sc.node("c")
        # by hand: the series branch b -> c carries (u_b - u_c - 0.5) / 2
        i = (u[b] - u[c] - 0.5) / 2
        assert (1 - u[b]) / 1 == pytest.approx(u[b] / 1 + i, abs=1e-12)  # KCL at b
        assert i == pytest.approx(u[c] / 1 + u[c] / 3, abs=1e-12)  # KCL at c
    np.testing.assert_allclose(plus.solve().potentials, minus.solve().potentials, atol=1e-14)


def test_import_negative_ground_source_clamps_minus_value():
    sc = from_netlist("t\nV1 0 a 2\nR1 a b 1\nR2 b 0 1\n")
    u = sc.solve().potentials[0]
    assert u[sc.node("a")] == pytest.approx(-2.0)
    assert u[sc.node("b")] == pytest.approx(-1.0)


@pytest.mark.parametrize("text,line,pattern", [
    ("t\nR1 a 0 1k\nC1 a 0 1u\n", 3, "unsupported element"),
    ("t\nR1 a 0\n", 2, "missing resistance"),
    ("t\nR1 a 0 abc\n", 2, "cannot read 'abc'"),
    ("t\nR1 a 0 -5\n", 2, "must be positive"),
    ("t\nR1 a 0 0\n", 2, "must be positive"),
    ("t\nR1 a a 1\nR2 a 0 1\n", 2, "both ends"),
    ("t\nR1 a 0 1\nR1 a 0 2\n", 3, "defined twice"),
    ("t\n+ R1 a 0 1\n", 2, "continuation"),
    ("t\nR1 a 0 1 tc1=0.1\n", 2, "unsupported resistor parameter"),
    ("t\nV1 a 0 sin(0 1 1k)\nR1 a 0 1\n", 2, "DC values only"),
    ("t\nV1 a 0 DC\nR1 a 0 1\n", 2, "not followed by a value"),
    ("t\nR1 a 0 1\n.subckt foo 1 2\n", 3, "unsupported control line"),
    ("t\nR1 a 0 1\n.include x.lib\n", 3, "unsupported control line"),
    ("t\nR1 a b 1\nR2 b 0 1\nV1 a b 1\nR3 a 0 1\n", 4, "in series with exactly one resistor"),
    ("t\nR1 a 0 1\nV1 a 0 1\nV2 a 0 2\n", 4, "already held"),
    ("t\nR1\n", 2, "two node names"),
])
def test_malformed_netlists_report_the_line(text, line, pattern):
    with pytest.raises(NetlistError, match=pattern) as info:
        from_netlist(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}:")
    assert isinstance(info.value, ValueError) and isinstance(info.value, KirchnetError)


@pytest.mark.parametrize("text,pattern", [
    ("", "empty"),
    ("title only\n", "no resistors"),
    ("t\nR1 a b 1\n", "no ground"),
    ("t\nR1 a 0 1\n.control\nop\n", "not closed"),
])
def test_netlist_level_errors(text, pattern):
    with pytest.raises(NetlistError, match=pattern):
        from_netlist(text)


def test_floating_part_is_reported_with_spice_names():
    with pytest.raises(FloatingComponentError, match="x, y|y, x"):
        from_netlist("t\nR1 a 0 1\nR2 x y 1\n")


def test_unknown_output_name():
    with pytest.raises(NetlistError, match="no node named 'zz'"):
        from_netlist("t\nR1 a 0 1\n", outputs=["zz"])


# ----------------------------------------------------------------------------- ngspice
def _rel_err(u, ref):
    return float(np.max(np.abs(u - ref)) / np.max(np.abs(ref)))


@needs_ngspice
def test_ngspice_matches_every_boundary_condition():
    c, g, rng = _mixed_circuit(seed=4, n=60, m=200)
    X = rng.normal(size=(5, 4))
    J = rng.normal(size=(5, c.network.n_nodes))
    clamp = rng.normal(size=(5, 1))
    ref = c.factorize(g).solve(X, currents=J, clamp=clamp).potentials
    u = ngspice_potentials(c, g, X, currents=J, clamp=clamp)
    assert u.shape == ref.shape
    assert _rel_err(u, ref) < 1e-6
    assert np.all(u[:, c.ground] == 0)


@needs_ngspice
def test_ngspice_on_an_imported_hand_netlist():
    sc = from_netlist(HAND)
    u = ngspice_potentials(sc.circuit, sc.conductances, sc.x, currents=sc.currents)
    assert _rel_err(u, sc.solve().potentials) < 1e-6


@needs_ngspice
@pytest.mark.parametrize("family,size", [
    ("random", 1000), ("random", 2000), ("delaunay", 10000),
    pytest.param("lattice", 10000, marks=pytest.mark.slow),
])
def test_ngspice_cross_validation_random_networks(family, size):
    """Potentials agree with ngspice to 1e-6 relative, up to 1e4 edges (a few operating points)."""
    rng = np.random.default_rng(size)
    if family == "random":
        # mean degree 4 (ngspice's sparse LU fills in badly on random graphs: ~2 min per
        # operating point at 5000 nodes / 1e4 edges, so the 1e4-edge cases are planar)
        net = topologies.random_connected(size // 2, m=size, seed=size)
    elif family == "delaunay":
        net = topologies.delaunay(size // 3 + 60, seed=1)
    else:
        net = topologies.lattice(50, 101)
    assert net.n_edges >= 0.9 * size
    n = net.n_nodes
    nodes = rng.choice(np.arange(1, n), size=6, replace=False)
    c = Circuit(net, ground=0, inputs=[int(nodes[0]), int(nodes[1]), Edge(3)], outputs=[int(nodes[2])])
    g = np.exp(rng.uniform(np.log(0.1), np.log(10.0), net.n_edges))
    b = 2 if size <= 1000 else 1
    X = rng.normal(size=(b, 3))
    J = np.zeros((b, n))
    J[:, nodes[3:]] = rng.normal(size=(b, 3))
    ref = c.factorize(g).solve(X, currents=J).potentials
    u = ngspice_potentials(c, g, X, currents=J, timeout=120)
    assert _rel_err(u, ref) < 1e-6


@needs_ngspice
def test_ngspice_errors_are_clear(monkeypatch):
    c, g, rng = _mixed_circuit()
    with pytest.raises(SimulatorError, match="ngspice not found"):
        ngspice_potentials(c, g, np.zeros(4), executable="/nonexistent/ngspice")


# ------------------------------------------------------------ LTspice lines
def test_ltspice_backanno_line_is_ignored():
    from kirchnet.spice import from_netlist

    sc = from_netlist("title\nV1 n1 0 1\nR1 n1 n2 1k\nR2 n2 0 1k\n.backanno\n.end\n", outputs=["n2"])
    assert np.allclose(sc.solve().outputs, 0.5)
