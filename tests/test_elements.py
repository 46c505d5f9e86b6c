"""Element laws and the element map: phi, phi', co-content, serialization, SPICE cards."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import kirchnet as kn
from kirchnet.elements import (
    THERMAL_VOLTAGE_27C,
    Diode,
    ElementMap,
    IdealDiode,
    Law,
    Rectifier,
    Resistor,
    law_from_dict,
)
from kirchnet.errors import ParameterError, TopologyError

SMOOTH = [Resistor(), Diode(), Diode(saturation_current=1e-3, emission=1.7, thermal_voltage=0.05),
          Diode(saturation_current=1e-2, thermal_voltage=0.1, max_exponent=20.0), Rectifier()]


def _grid(law):
    if isinstance(law, Diode):
        return np.linspace(-3 * law.max_voltage, 1.5 * law.max_voltage, 2001)
    return np.linspace(-3.0, 3.0, 2001)


@pytest.mark.parametrize("law", SMOOTH, ids=repr)
def test_co_content_derivative_is_phi_and_phi_derivative_is_dphi(law):
    w = _grid(law)
    w = w[np.abs(w) > 1e-3]  # the rectifier's kink
    if isinstance(law, Diode):
        w = w[np.abs(w - law.max_voltage) > 1e-3 * law.max_voltage]
    h = 1e-6 * (1.0 + np.abs(w))
    dPhi = (law.Phi(w + h) - law.Phi(w - h)) / (2 * h)
    dphi = (law.phi(w + h) - law.phi(w - h)) / (2 * h)
    phi = law.phi(w)
    scale = np.abs(phi) + np.abs(law.dphi(w)) * np.abs(w) + 1e-30
    rounding = 1e-15 * (np.abs(law.Phi(w + h)) + np.abs(law.Phi(w - h))) / h
    assert np.all(np.abs(dPhi - phi) <= 1e-6 * scale + rounding)
    rounding = 1e-15 * (np.abs(law.phi(w + h)) + np.abs(law.phi(w - h))) / h
    assert np.all(np.abs(dphi - law.dphi(w)) <= 1e-5 * np.abs(law.dphi(w)) + rounding)
    assert law.Phi(np.zeros(1))[0] == 0.0 and law.phi(np.zeros(1))[0] == 0.0


@pytest.mark.parametrize("law", SMOOTH, ids=repr)
def test_laws_are_monotone_with_convex_co_content(law):
    w = _grid(law)
    assert np.all(np.diff(law.phi(w)) >= 0)
    assert np.all(law.dphi(w) >= 0)
    assert np.all(law.Phi(w) >= 0)  # convex with minimum 0 at w = 0
    assert np.all(np.isfinite(law.phi(np.array([1e6, -1e6]))))  # no overflow far out


def test_diode_defaults_are_ngspice_defaults_at_27C():
    d = Diode()
    assert d.saturation_current == 1e-14 and d.emission == 1.0
    assert THERMAL_VOLTAGE_27C == (1.38064852e-23 / 1.6021766208e-19) * 300.15  # ngspice's const.h
    assert d.thermal_voltage == pytest.approx(0.0258648, rel=1e-5)
    w = np.array([0.3, 0.6, -0.5])
    expected = 1e-14 * np.expm1(w / THERMAL_VOLTAGE_27C)
    np.testing.assert_allclose(d.phi(w), expected, rtol=1e-14)


def test_diode_linear_continuation_above_max_voltage_is_c1():
    d = Diode(saturation_current=1e-3, thermal_voltage=0.05, max_exponent=10.0)
    wm = d.max_voltage
    assert wm == pytest.approx(0.5)
    eps = 1e-9
    assert d.phi(np.array([wm + eps]))[0] == pytest.approx(d.phi(np.array([wm - eps]))[0], rel=1e-7)
    assert d.dphi(np.array([wm + 0.3]))[0] == pytest.approx(1e-3 / 0.05 * math.exp(10.0), rel=1e-14)
    slope = (d.phi(np.array([wm + 0.4])) - d.phi(np.array([wm + 0.2])))[0] / 0.2
    assert slope == pytest.approx(d.dphi(np.array([wm]))[0], rel=1e-9)
    # Shockley below w_max, exactly
    w = np.array([0.1, 0.49])
    np.testing.assert_allclose(d.phi(w), 1e-3 * np.expm1(w / 0.05), rtol=1e-14)


def test_diode_limit_lands_where_the_linearized_current_is_carried():
    """Junction limiting: an upward jump above vcrit (from v > 0) and a downward step from a
    forward v are Newton steps of the inverse (logarithmic) law: the limited voltage carries
    exactly the current the diode linearized at v predicts at w."""
    d = Diode()
    nvt, vc = d.nvt, d.critical_voltage
    v = np.array([0.50, 0.60, 0.70, 0.72, 0.68])
    w = np.array([1.40, 0.95, 0.69, 0.70, 0.66])  # two jumps up, three stiff descents
    lim = d.limit(v, w)
    predicted = d.phi(v) + d.dphi(v) * (w - v)
    np.testing.assert_allclose(d.phi(lim), predicted, rtol=1e-9)
    assert np.all(lim[:2] < w[:2]) and np.all(lim[:2] > v[:2])  # up: between v and w
    assert np.all(lim[2:] < w[2:])  # down: below the voltage Newton step (it undershoots)
    # from a reverse linearization, SPICE's rule n Vt ln(w / n Vt)
    assert d.limit(np.array([-0.3]), np.array([2.0]))[0] == pytest.approx(nvt * math.log(2.0 / nvt), rel=1e-14)
    # a descent the linear model carries to a reverse current stops after max_descent n Vt
    assert d.limit(np.array([0.7]), np.array([0.2]))[0] == pytest.approx(0.7 - d.max_descent * nvt, rel=1e-14)
    # small steps, steps below vcrit and reverse diodes are plain Newton (v' = w, bit for bit)
    small = (np.array([0.70, 0.30, -1.0, -0.5]), np.array([0.70 + 1.9 * nvt, 0.6, -0.2, -0.9]))
    assert np.array_equal(d.limit(*small), small[1])
    assert np.array_equal(d.limit(np.array([0.7]), np.array([0.7 - 0.005 * nvt])), [0.7 - 0.005 * nvt])
    assert vc == pytest.approx(nvt * math.log(nvt / (math.sqrt(2) * d.saturation_current)))


def test_only_diodes_limit_and_the_element_map_limits_per_law():
    for law in (Resistor(), Rectifier(), IdealDiode()):
        w = np.array([0.3, 5.0, -2.0])
        assert not law.limits and law.limit(np.zeros(3), w) is w
    em = ElementMap(4, {Diode(): [1, 3]})
    assert em.limits and not ElementMap(4, {Rectifier(): [1]}).limits
    v = np.array([[0.5, 0.5, 0.5, 0.5]])
    w = np.array([[3.0, 3.0, 3.0, 0.51]])
    out = em.limit(v, w)
    assert out[0, 0] == 3.0 and out[0, 2] == 3.0  # resistors: w
    assert out[0, 1] == Diode().limit(np.array([0.5]), np.array([3.0]))[0] < 3.0
    assert out[0, 3] == 0.51


def test_ideal_diode_is_a_constraint_not_a_function():
    ideal = IdealDiode()
    assert ideal.constraint and not ideal.linear
    with pytest.raises(ParameterError, match="constraint"):
        ideal.phi(np.zeros(3))
    assert np.all(ideal.Phi(np.array([-1.0, 0.0])) == 0)


@pytest.mark.parametrize("bad", [dict(saturation_current=0.0), dict(emission=-1.0),
                                 dict(thermal_voltage=float("nan")), dict(max_exponent=800.0),
                                 dict(saturation_current="a lot")])
def test_diode_parameters_are_validated(bad):
    with pytest.raises(ParameterError, match="Diode"):
        Diode(**bad)


@pytest.mark.parametrize("law", [Resistor(), Diode(), Diode(saturation_current=2e-9, emission=1.5),
                                 Rectifier(), IdealDiode()], ids=repr)
def test_laws_round_trip_through_dicts_and_json(law):
    d = json.loads(json.dumps(law.to_dict()))
    back = law_from_dict(d)
    assert back == law and hash(back) == hash(law) and type(back) is type(law)


def test_law_from_dict_errors_name_the_problem():
    with pytest.raises(ParameterError, match="unknown law kind 'triode'"):
        law_from_dict({"kind": "triode"})
    with pytest.raises(ParameterError, match="unknown parameter"):
        law_from_dict({"kind": "diode", "bv": 3.0})
    with pytest.raises(ParameterError, match="kind"):
        law_from_dict({"saturation_current": 1.0})


def test_laws_compare_by_value():
    assert Diode() == Diode(saturation_current=1e-14)
    assert Diode() != Diode(emission=2.0)
    assert Resistor() != Rectifier()
    assert len({Diode(), Diode(), Rectifier()}) == 2


def test_spice_cards():
    assert Resistor().spice("1", 3, 0, 0.25) == "R1 3 0 4"
    d = Diode(saturation_current=1e-14, emission=1.0)
    card = d.spice("7", "a", "b", 2.0)
    assert card.startswith("D7 a b ") and card.endswith("area=2")
    assert d.model_card() == f".model {d.model_name} D(IS=1e-14 N=1)"
    assert d.model_name in card
    rect = Rectifier().spice("4", 1, 2, 0.5).splitlines()
    assert rect[0] == "R4 1 4_rd 2" and rect[1] == f"D4 4_rd 2 {IdealDiode.MODEL}"
    assert IdealDiode().model_card().startswith(f".model {IdealDiode.MODEL} D(")


# ---------------------------------------------------------------- element map
def test_element_map_defaults_and_lookup():
    em = ElementMap(6, {Diode(): [1, 4], Rectifier(): np.array([2])})
    assert not em.is_linear
    assert em.law_of(0) == Resistor() and em.law_of(4) == Diode() and em.law_of(2) == Rectifier()
    np.testing.assert_array_equal(em.edges_of(Diode()), [1, 4])
    assert em.constraint_edges.size == 0
    w = np.array([[0.1, 0.2, -0.3, 0.4, 0.5, -0.6]])
    phi = em.phi(w)
    assert phi[0, 0] == 0.1 and phi[0, 2] == 0.0 and phi[0, 1] == Diode().phi(np.array([0.2]))[0]
    assert ElementMap(6).is_linear and ElementMap(6, {Resistor(): [0, 1]}).is_linear
    assert ElementMap(3, {IdealDiode(): [2]}).constraint_edges.tolist() == [2]


def test_element_map_round_trip_and_equality():
    em = ElementMap(5, {Diode(emission=1.3): [0, 3], IdealDiode(): [4]})
    back = ElementMap.from_dict(json.loads(json.dumps(em.to_dict())))
    assert back == em and hash(back) == hash(em)
    assert back != ElementMap(5, {Diode(emission=1.3): [0], IdealDiode(): [4]})
    assert set(em.as_mapping()) == {Diode(emission=1.3), IdealDiode()}


@pytest.mark.parametrize("elements, error, match", [
    ({Diode(): [1], Rectifier(): [1]}, TopologyError, "edge 1 is given more than one law"),
    ({Diode(): [1, 1]}, TopologyError, "more than one law"),
    ({Diode(): [9]}, TopologyError, "unknown edge index 9"),
    ({Diode(): [-1]}, TopologyError, "unknown edge index -1"),
    ({Diode(): [0.5]}, TopologyError, "integers"),
    ({"diode": [0]}, ParameterError, "keys must be laws"),
    ([Diode()], ParameterError, "mapping"),
])
def test_element_map_errors(elements, error, match):
    with pytest.raises(error, match=match):
        ElementMap(4, elements)


def test_circuit_elements_argument_and_is_linear():
    net = kn.topologies.lattice(3, 3)
    plain = kn.Circuit(net, ground=0, inputs=[8], outputs=[4])
    assert plain.is_linear and plain.elements == ElementMap(net.n_edges)
    nl = kn.Circuit(net, ground=0, inputs=[8], outputs=[4], elements={Diode(): [0, 5]})
    assert not nl.is_linear and nl.elements.law_of(5) == Diode()
    with pytest.raises(TopologyError, match="unknown edge index"):
        kn.Circuit(net, ground=0, inputs=[8], outputs=[4], elements={Diode(): [net.n_edges]})
    assert isinstance(Diode(), Law)


def test_circuit_accepts_an_element_map_and_round_trips_it():
    net = kn.topologies.lattice(3, 3)
    em = ElementMap(net.n_edges, {Diode(emission=1.2): [1, 3], IdealDiode(): [7]})
    c = kn.Circuit(net, ground=0, inputs=[8], outputs=[4], elements=em)
    assert c.elements is em and not c.is_linear
    c2 = kn.Circuit(net, ground=0, inputs=[8], outputs=[4],
                    elements=ElementMap.from_dict(c.elements.to_dict()).as_mapping())
    assert c2.elements == em
