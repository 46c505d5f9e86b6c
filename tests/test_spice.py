"""SPICE netlist export/import and cross-validation against ngspice."""

from __future__ import annotations

import os

import numpy as np
import pytest

from _reference import _diode_circuit, _reference_potentials, _resistor_tree
from kirchnet import Circuit, Edge, FloatingComponentError, KirchnetError, Network, Pair, topologies
from kirchnet.elements import Diode, IdealDiode, Rectifier, Resistor
from kirchnet.errors import NetlistError, SimulatorError
from kirchnet.spice import (
    IDEAL_MODEL,
    NGSPICE_THERMAL_VOLTAGE,
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


# ============================================================================= diodes
# ----------------------------------------------------------------------------- export
def test_diode_export_cards_by_hand():
    # 0 = ground; D0 anode 1 -> cathode 2; D2 with a series source; two edges share a law
    net = Network(4, [[1, 2], [2, 0], [1, 3], [3, 0], [3, 2]])
    d1, d2 = Diode(), Diode(2e-12, 1.5, thermal_voltage=NGSPICE_THERMAL_VOLTAGE)
    c = Circuit(net, ground=0, inputs=[1, Edge(2)], outputs=[2], elements={d1: [0, 4], d2: [2]})
    g = np.array([2.0, 1e-3, 0.5, 1e-3, 0.25])
    lines = to_netlist(c, g, [1.0, 0.3]).splitlines()
    assert ".options gmin=0.0" in lines  # ngspice's junction GMIN switched off
    assert "D0 n1 n2 KN_D1 area=2.0" in lines  # anode = tail, cathode = head, area = g
    assert "D2 n1 s2 KN_D2 area=0.5" in lines  # the series source's internal node
    assert "D4 n3 n2 KN_D1 area=0.25" in lines
    assert "R1 n2 0 1000.0" in lines and "VS2 n3 s2 DC 0.3" in lines
    models = [line for line in lines if line.startswith(".model")]
    assert len(models) == 2  # one card per distinct law
    n1 = d1.emission * d1.thermal_voltage / NGSPICE_THERMAL_VOLTAGE
    assert models[0] == f".model KN_D1 D(IS=1e-14 N={n1!r})"
    assert models[1] == ".model KN_D2 D(IS=2e-12 N=1.5)"  # ngspice's Vt: N = n exactly
    # a resistor network's netlist is unchanged: no .options, no .model
    lin = to_netlist(Circuit(net, ground=0, inputs=[1], outputs=[2]), g, [1.0])
    assert ".options" not in lin and ".model" not in lin


def test_exported_emission_reproduces_n_vt_for_any_thermal_voltage():
    law = Diode(1e-13, emission=1.2, thermal_voltage=0.031)
    net = Network(2, [[1, 0], [1, 0]])
    c = Circuit(net, ground=0, inputs=[1], elements={law: [0]})
    text = to_netlist(c, [1.0, 1.0], [0.5])
    N = parse_value(text.split("N=")[1].split(")")[0])
    assert N * NGSPICE_THERMAL_VOLTAGE == pytest.approx(1.2 * 0.031, rel=1e-15)
    back = from_netlist(text).circuit.elements.law_of(0)
    w = np.linspace(-1, 1.5, 101)
    np.testing.assert_allclose(back.phi(w), law.phi(w), rtol=1e-13)


def test_ngspice_thermal_voltage_constant():
    # k T / q at 300.15 K with ngspice's const.h (CODATA 2014) values
    assert NGSPICE_THERMAL_VOLTAGE == pytest.approx(0.0258649170071575, rel=1e-14)
    assert Diode().thermal_voltage == NGSPICE_THERMAL_VOLTAGE  # the same expression, bit for bit


def test_default_diode_card_has_n_1_and_reads_back_equal():
    net = Network(3, [[1, 2], [2, 0]])
    c = Circuit(net, ground=0, inputs=[1], outputs=[2], elements={Diode(): [0]})
    text = to_netlist(c, [1.0, 1e-3], [0.7])
    assert "D(IS=1e-14 N=1.0)" in text
    assert from_netlist(text).circuit.elements.law_of(0) == Diode()


def test_ideal_diode_and_rectifier_export():
    net = Network(4, [[1, 2], [2, 0], [1, 3], [3, 0], [3, 2]])
    c = Circuit(net, ground=0, inputs=[1, Edge(2)], outputs=[2],
                elements={IdealDiode(): [0], Rectifier(): [2, 4]})
    g = np.array([2.0, 1e-3, 0.5, 1e-3, 0.25])
    lines = to_netlist(c, g, [1.0, 0.3], ideal_model=(1e-16, 0.01)).splitlines()
    assert "D0 n1 n2 KN_IDEAL" in lines
    # rectifier = resistor 1/g in series with the steep diode through the internal node d<e>
    assert "R2 n1 d2 2.0" in lines and "D2 d2 s2 KN_IDEAL" in lines
    assert "R4 n3 d4 4.0" in lines and "D4 d4 n2 KN_IDEAL" in lines
    assert [ln for ln in lines if ln.startswith(".model")] == [".model KN_IDEAL D(IS=1e-16 N=0.01)"]
    default = to_netlist(c, g, [1.0, 0.3])
    assert f".model KN_IDEAL D(IS={IDEAL_MODEL[0]!r} N={IDEAL_MODEL[1]!r})" in default.splitlines()
    for bad in [(0.0, 1e-3), (1e-15,), (1e-15, -1.0), "steep"]:
        with pytest.raises(KirchnetError, match="ideal_model"):
            to_netlist(c, g, [1.0, 0.3], ideal_model=bad)
    with pytest.raises(KirchnetError, match="gmin"):
        to_netlist(c, g, [1.0, 0.3], gmin=-1.0)


# ----------------------------------------------------------------------------- import
DIODES = """diodes by hand
V1 in 0 2
R1 in a 1k
D1 a 0 Dfast 2.5
Dslow a b DSLOW area = 4m
R2 b 0 10k
d3 B 0 dfast
.MODEL dfast d (is=10f n=1.5)
.model DSLOW D
+ IS=2.5e-9
.end
"""


def test_import_diodes_models_and_areas():
    sc = from_netlist(DIODES)
    c = sc.circuit
    assert sc.resistor_names == ("R1", "D1", "Dslow", "R2", "d3")
    np.testing.assert_array_equal(c.network.edges, [[1, 2], [2, 0], [2, 3], [3, 0], [3, 0]])
    np.testing.assert_allclose(sc.conductances, [1e-3, 2.5, 4e-3, 1e-4, 1.0], rtol=1e-15)
    fast, slow = c.elements.law_of(1), c.elements.law_of(2)
    assert c.elements.law_of(4) == fast and not c.is_linear
    assert isinstance(c.elements.law_of(0), Resistor)
    assert (fast.saturation_current, fast.emission) == (pytest.approx(1e-14), 1.5)
    assert (slow.saturation_current, slow.emission) == (2.5e-9, 1.0)  # ngspice's default N
    assert fast.thermal_voltage == slow.thermal_voltage == NGSPICE_THERMAL_VOLTAGE


@pytest.mark.parametrize("text,line,pattern", [
    ("t\nD1 a 0 dm\nR1 a 0 1\n.model dm D(IS=1e-14 RS=10)\n", 4, "parameter 'RS'"),
    ("t\nD1 a 0 dm\nR1 a 0 1\n.model dm D(CJO=1p)\n", 4, "parameter 'CJO'"),
    ("t\nD1 a 0 dm\nR1 a 0 1\n.model dm D(is=1e-14 bv=5)\n", 4, "parameter 'BV'"),
    ("t\nR1 a 0 1\n.model q1 NPN(BF=100)\n", 3, "type 'NPN'"),
    ("t\nR1 a 0 1\nD1 a 0 nomodel\n", 3, "model 'nomodel' is not defined"),
    ("t\nR1 a 0 1\nD1 a 0 dm -2\n.model dm D\n", 3, "area must be positive"),
    ("t\nR1 a 0 1\nD1 a 0 dm area=0\n.model dm D\n", 3, "area must be positive"),
    ("t\nR1 a 0 1\nD1 a 0 dm off\n.model dm D\n", 3, "unsupported diode parameter"),
    ("t\nR1 a 0 1\nD1 a 0 dm 2 temp=30\n.model dm D\n", 3, "unsupported diode parameter"),
    ("t\nR1 a 0 1\nD1 a 0\n", 3, "missing model name"),
    ("t\nR1 a 0 1\nD1 a a dm\n.model dm D\n", 3, "both terminals"),
    ("t\nR1 a 0 1\n.model dm D(IS=1e-14)\n.model DM D(IS=2e-14)\n", 4, "defined twice"),
    ("t\nR1 a 0 1\n.model dm D(IS 1e-14)\n", 3, "expected 'PARAM=value'"),
    ("t\nR1 a 0 1\n.model dm D(IS=1e-14 IS=2e-14)\n", 3, "given twice"),
    ("t\nR1 a 0 1\n.model dm D(N=0)\n", 3, "N must be positive"),
    ("t\nR1 a 0 1\n.model dm D(IS=abc)\n", 3, "cannot read 'abc'"),
    ("t\nR1 a 0 1\n.model dm\n", 3, "needs a name and a type"),
])
def test_malformed_diode_netlists_report_the_line(text, line, pattern):
    with pytest.raises(NetlistError, match=pattern) as info:
        from_netlist(text)
    assert info.value.line == line


@pytest.mark.parametrize("laws", [
    [Diode()],
    [Diode(1e-12, 1.8), Diode(3e-15, thermal_voltage=NGSPICE_THERMAL_VOLTAGE)],
])
def test_diode_round_trip_reproduces_laws_areas_and_terminals(laws):
    c, g, diodes, rng = _diode_circuit(60, seed=3, laws=laws)
    x = rng.uniform(-2, 2, 3)
    sc = from_netlist(to_netlist(c, g, x))
    ids = np.array([sc.node(name) for name in spice_node_names(c)])
    np.testing.assert_array_equal(sc.circuit.network.edges, ids[c.network.edges])
    np.testing.assert_allclose(sc.conductances, g, rtol=1e-15)  # areas and conductances
    np.testing.assert_array_equal(sc.x, x)
    w = np.linspace(-2, 1.2, 200)
    for e in range(c.network.n_edges):
        law, back = c.elements.law_of(e), sc.circuit.elements.law_of(e)
        assert type(back) is type(law)
        if isinstance(law, Diode):
            assert back.saturation_current == law.saturation_current
            if law.thermal_voltage == NGSPICE_THERMAL_VOLTAGE:
                assert back == law  # the identical law
            np.testing.assert_allclose(back.phi(w), law.phi(w), rtol=1e-13)
    assert len(sc.circuit.elements.laws) == len(c.elements.laws)
    # the imported circuit has the same operating point (independent reference solver)
    ref = _reference_potentials(c, g, x[None])[0]
    back = _reference_potentials(sc.circuit, sc.conductances, sc.x[None])[0]
    np.testing.assert_allclose(back[ids], ref, rtol=1e-12, atol=1e-14)


def test_ideal_solution_is_the_limit_of_the_exported_steep_diodes():
    """kirchnet's exact ideal-diode / rectifier solution vs the same netlist's steep
    diodes (imported, solved by the reference): the error shrinks in proportion to N."""
    net = topologies.random_connected(12, m=30, seed=2)
    rng = np.random.default_rng(2)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    inner = rest[np.all(net.edges[rest] > 2, axis=1)]  # ideal diodes away from the sources
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[3],
                elements={IdealDiode(): inner[:3], Rectifier(): np.setdiff1d(rest, inner[:3])[:6]})
    g = rng.uniform(0.5, 2.0, net.n_edges)
    x = np.array([1.0, -0.7])
    ideal = c.solve(g, x).potentials[0]
    errs = []
    for N in (1e-1, 1e-2, 1e-3):
        sc = from_netlist(to_netlist(c, g, x, ideal_model=(1e-12, N)))
        ids = np.array([sc.node(name) for name in spice_node_names(c)])
        u = _reference_potentials(sc.circuit, sc.conductances, sc.x[None])[0]
        errs.append(np.max(np.abs(u[ids] - ideal)))
    errs = np.array(errs)
    assert errs[0] > 1e-3  # the steep model is an approximation...
    np.testing.assert_allclose(errs[1:] / errs[:-1], 0.1, rtol=0.2)  # ...with error O(N)
    assert errs[-1] < 1e-3 * np.max(np.abs(ideal))


# ------------------------------------------------------------ LTspice lines
def test_ltspice_backanno_line_is_ignored():
    from kirchnet.spice import from_netlist

    sc = from_netlist("title\nV1 n1 0 1\nR1 n1 n2 1k\nR2 n2 0 1k\n.backanno\n.end\n", outputs=["n2"])
    assert np.allclose(sc.solve().outputs, 0.5)


# ----------------------------------------------------------------------------- ngspice, diodes
@needs_ngspice
def test_ngspice_thermal_voltage_and_area():
    """1 mA into a diode of area 2: v = N Vt log(1 + I / (IS area)) with ngspice's Vt."""
    law = Diode(1e-14, emission=1.3, thermal_voltage=NGSPICE_THERMAL_VOLTAGE)
    c = Circuit(Network(2, [[1, 0]]), ground=0, elements={law: [0]})
    u = ngspice_potentials(c, [2.0], np.zeros((1, 0)), currents=[0.0, 1e-3])
    expected = 1.3 * NGSPICE_THERMAL_VOLTAGE * np.log1p(1e-3 / 2e-14)
    assert u[0, 1] == pytest.approx(expected, rel=1e-12)
    # kirchnet's default diode has a thermal voltage within 1e-6 of ngspice's
    assert abs(Diode().thermal_voltage / NGSPICE_THERMAL_VOLTAGE - 1) < 1e-6


@needs_ngspice
def test_ngspice_gmin_is_handled_explicitly():
    """ngspice's GMIN (1e-12 S across every junction) would move a node held only by a
    1 nS resistor from 8.6 uV to 59 uV; the exported netlists set gmin = 0."""
    # node 1 clamped at +50 mV; diode anode 2 -> cathode 1, reverse-biased by less than
    # 3 Vt (where ngspice's diode is still Shockley's); node 2 -> ground through 1 nS
    net = Network(3, [[2, 1], [2, 0]])
    c = Circuit(net, ground=0, inputs=[1], outputs=[2], elements={Diode(): [0]})
    g, v = np.array([1.0, 1e-9]), 0.05
    ref = _reference_potentials(c, g, [[v]])
    leak = -Diode().phi(ref[0, 2] - v)  # the reverse current, into node 2
    assert ref[0, 2] == pytest.approx(leak / 1e-9, rel=1e-9) and ref[0, 2] > 8e-6
    u = ngspice_potentials(c, g, [v])  # gmin = 0 (SPICE_GMIN)
    assert _rel_err(u, ref) < 1e-9
    assert u[0, 2] == pytest.approx(ref[0, 2], rel=1e-6)
    # ngspice's default GMIN = kirchnet's circuit with a 1e-12 S resistor across the diode
    u_gmin = ngspice_potentials(c, g, [v], gmin=1e-12)
    c_gmin = Circuit(Network(3, [[2, 1], [2, 0], [2, 1]]), ground=0, inputs=[1], outputs=[2],
                     elements={Diode(): [0]})
    ref_gmin = _reference_potentials(c_gmin, np.r_[g, 1e-12], [[v]])
    assert u_gmin[0, 2] == pytest.approx(ref_gmin[0, 2], rel=1e-6)
    assert u_gmin[0, 2] > 5 * u[0, 2]


@needs_ngspice
@pytest.mark.parametrize("m,n_clamped", [(10, 2), (200, 2), (1000, 31),
                                         pytest.param(2000, 2, marks=pytest.mark.slow)])
def test_ngspice_exported_diode_networks_match_a_reference(m, n_clamped):
    """The export is validated independently of kirchnet's solver: ngspice's operating
    points of random resistor-diode networks equal the test's reference Newton solve
    (with 31 clamped inputs some diodes sit between clamped nodes at up to 4 V)."""
    c, g, diodes, rng = _diode_circuit(m, seed=m, n_clamped=n_clamped)
    X = rng.uniform(-2, 2, (3 if m < 2000 else 1, c.n_inputs))
    ref = _reference_potentials(c, g, X)
    u = ngspice_potentials(c, g, X, timeout=120)
    assert _rel_err(u, ref) < 1e-6
    w = ref[:, c.network.tails[diodes]] - ref[:, c.network.heads[diodes]]
    assert np.sum(w > 0.3) >= 3 and np.sum(w < -0.1) >= 3  # forward and reverse diodes


@needs_ngspice
@pytest.mark.parametrize("m", [10, 200, pytest.param(2000, marks=pytest.mark.slow)])
def test_ngspice_matches_kirchnet_nonlinear_solve(m):
    """Operating points of random resistor-diode networks (10 to 2000 elements, two
    diode laws, forward and reverse biased): kirchnet's Newton solve = ngspice to 1e-6."""
    laws = [Diode(), Diode(1e-12, 1.7)]
    c, g, diodes, rng = _diode_circuit(m, seed=m + 1, laws=laws)
    X = rng.uniform(-2, 2, (8 if m < 2000 else 2, 3))
    u = ngspice_potentials(c, g, X, timeout=120)
    st = c.solve(g, X)
    assert _rel_err(st.potentials, u) < 1e-6
    w = u[:, c.network.tails[diodes]] - u[:, c.network.heads[diodes]]
    assert np.sum(w > 0.3) >= 3 and np.sum(w < -0.1) >= 3


@needs_ngspice
def test_ngspice_steep_diodes_tend_to_kirchnets_ideal_solution():
    net = topologies.random_connected(30, m=80, seed=5)
    rng = np.random.default_rng(5)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    inner = rest[np.all(net.edges[rest] > 2, axis=1)]
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[3],
                elements={IdealDiode(): inner[:4], Rectifier(): np.setdiff1d(rest, inner[:4])[:15]})
    g = rng.uniform(0.5, 2.0, net.n_edges)
    X = np.array([[1.0, -0.7], [-0.4, 1.2]])
    st = c.solve(g, X)
    assert np.any(st.multipliers > 0) and np.any(st.currents[:, c.elements.edges_of(Rectifier())] > 0)
    errs = np.array([_rel_err(ngspice_potentials(c, g, X, ideal_model=(1e-12, N)), st.potentials)
                     for N in (1e-1, 1e-2, 1e-3)])
    assert errs[0] > 1e-3
    np.testing.assert_allclose(errs[1:] / errs[:-1], 0.1, rtol=0.2)  # error O(N)


def test_ideal_import_inverts_the_export_of_ideal_elements():
    net = topologies.random_connected(15, m=40, seed=4)
    rng = np.random.default_rng(4)
    rest = np.setdiff1d(np.arange(net.n_edges), _resistor_tree(net))
    inner = rest[np.all(net.edges[rest] > 3, axis=1)]
    rect = np.setdiff1d(rest, inner[:3])[:8]
    diodes = np.setdiff1d(rest, np.r_[inner[:3], rect])[:3]
    src = int(rect[np.all(net.edges[rect] != 0, axis=1)][0])  # (a source into the ground
    # would read back as a clamped node)
    c = Circuit(net, ground=0, inputs=[1, 2, Edge(src)], outputs=[3],
                elements={IdealDiode(): inner[:3], Rectifier(): rect,
                          Diode(thermal_voltage=NGSPICE_THERMAL_VOLTAGE): diodes})
    g = rng.uniform(0.5, 2.0, net.n_edges)
    g[inner[:3]] = 1.0  # an ideal diode has no scale; the netlist keeps none
    x = np.array([0.8, -0.5, 0.3])
    text = to_netlist(c, g, x)
    steep = from_netlist(text)  # default: the steep diodes the netlist describes
    assert steep.circuit.network.n_nodes == net.n_nodes + rect.size  # the d<e> nodes
    assert steep.circuit.network.n_edges == net.n_edges + rect.size
    sc = from_netlist(text, ideal=True)
    assert sc.node_names == tuple(spice_node_names(c))
    np.testing.assert_array_equal(sc.circuit.network.edges, c.network.edges)
    np.testing.assert_allclose(sc.conductances, g, rtol=1e-15)
    assert sc.circuit.elements == c.elements  # the same laws on the same edges
    np.testing.assert_array_equal(sc.circuit.source_edges, [src])
    np.testing.assert_allclose(sc.solve().potentials, c.solve(g, x).potentials, rtol=1e-12, atol=1e-14)


def _fake_ngspice(monkeypatch, circuit, converges_with, value=0.0):
    """Replace ngspice by a fake that 'converges' (returns every operating point of
    ``circuit``, every potential ``value``) only where the deck's .options hold
    ``converges_with``, else misses the last one; returns the list of decks it is given."""
    from kirchnet import spice as spice_mod
    decks, zeros = [], {f"v({nm})": value for nm in spice_node_names(circuit)}

    def run(netlist, **kwargs):
        decks.append(netlist)
        ops = netlist.count("\nop\n")
        done = ops if converges_with in netlist.splitlines()[1] else ops - 1
        return [dict(zeros) for _ in range(done)], "Supplies reduced to 66.4%\n"

    monkeypatch.setattr(spice_mod, "run_ngspice", run)
    return decks


def test_ngspice_potentials_retries_looser_tolerances_where_ngspice_does_not_converge(monkeypatch):
    """With the default tolerances, an ngspice run that misses operating points is run again
    with NGSPICE_RETRY_TOLERANCES (a RuntimeWarning names them); explicit tolerances are not
    retried, and the error suggests looser ones; linear circuits (no tolerances) raise at once;
    a non-finite potential is an error, not a result."""
    from kirchnet import spice as spice_mod
    c, g, diodes, rng = _diode_circuit(10, seed=3)
    X = rng.uniform(-2, 2, (3, c.n_inputs))
    loose = spice_mod.NGSPICE_RETRY_TOLERANCES[0]
    decks = _fake_ngspice(monkeypatch, c, loose)
    with pytest.warns(RuntimeWarning, match="did not converge with tolerances"):
        u = ngspice_potentials(c, g, X)
    assert u.shape == (3, c.network.n_nodes)
    assert len(decks) == 2
    assert spice_mod.NGSPICE_TOLERANCES in decks[0].splitlines()[1] and loose in decks[1].splitlines()[1]
    assert decks[0].splitlines()[2:] == decks[1].splitlines()[2:]  # only the options differ
    decks.clear()
    with pytest.raises(SimulatorError, match="looser ones may converge"):
        ngspice_potentials(c, g, X, tolerances="reltol=1e-12 vntol=1e-14 abstol=1e-18")
    assert len(decks) == 1
    decks = _fake_ngspice(monkeypatch, c, "never")
    with pytest.raises(SimulatorError, match="tolerances tried"):
        ngspice_potentials(c, g, X)
    assert len(decks) == 1 + len(spice_mod.NGSPICE_RETRY_TOLERANCES)
    lin = Circuit(topologies.lattice(3, 3), ground=0, inputs=[8], outputs=[4])
    decks = _fake_ngspice(monkeypatch, lin, "never")
    with pytest.raises(SimulatorError, match="expected 2") as info:
        ngspice_potentials(lin, np.ones(lin.network.n_edges), [[1.0], [2.0]])
    assert len(decks) == 1 and "tolerances tried" not in str(info.value)
    _fake_ngspice(monkeypatch, lin, "", value=float("nan"))  # a solve that failed inside ngspice
    with pytest.raises(SimulatorError, match="non-finite potential"):
        ngspice_potentials(lin, np.ones(lin.network.n_edges), [[1.0], [2.0]])


def test_run_ngspice_reports_a_failed_or_silent_ngspice(tmp_path):
    """run_ngspice with a stand-in executable (no ngspice needed): a nonzero exit is a
    failure naming its code and output; exit 0 without the raw file is a run that did not
    converge, which ngspice_potentials retries at looser tolerances before it gives up."""
    from kirchnet import spice as spice_mod

    def stand_in(name, code):
        exe = tmp_path / name
        exe.write_text(f"#!/bin/sh\necho 'doAnalyses: TRAN:  Timestep too small'\nexit {code}\n")
        exe.chmod(0o755)
        return str(exe)

    with pytest.raises(SimulatorError, match=r"failed \(exit code 3\)[\s\S]*Timestep too small"):
        spice_mod.run_ngspice("* deck\n.end\n", executable=stand_in("crashes", 3))
    silent = stand_in("silent", 0)
    with pytest.raises(spice_mod._NoConvergence, match="wrote no operating point[\\s\\S]*Timestep"):
        spice_mod.run_ngspice("* deck\n.end\n", executable=silent)
    c, g, diodes, rng = _diode_circuit(10, seed=3)
    with pytest.raises(SimulatorError, match="tolerances tried") as info:
        ngspice_potentials(c, g, rng.uniform(-2, 2, (2, c.n_inputs)), executable=silent)
    assert all(t in str(info.value) for t in (spice_mod.NGSPICE_TOLERANCES, *spice_mod.NGSPICE_RETRY_TOLERANCES))

