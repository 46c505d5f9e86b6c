"""The conductance / resistance parametrization and its chain rule (kirchnet.parametrization)."""

import pickle

import numpy as np
import pytest

import kirchnet as kn
from kirchnet import parametrization as P


def test_get_names_aliases_and_refusal():
    assert P.get("conductance") is P.get("g") is P.CONDUCTANCE
    assert P.get("resistance") is P.get("r") is P.RESISTANCE
    assert P.get(P.RESISTANCE) is P.RESISTANCE
    assert pickle.loads(pickle.dumps(P.RESISTANCE)) is P.RESISTANCE
    with pytest.raises(kn.ParameterError, match="wrt must be 'conductance' or 'resistance', got 'ohm'"):
        P.get("ohm")


def test_resistance_chain_rule_matches_finite_differences_and_round_trips():
    """C(g) = sum_e a_e g_e^2: dC/dr from grad_from_g equals a central difference in r."""
    rng = np.random.default_rng(0)
    g, a = rng.uniform(0.5, 2.0, 6), rng.normal(size=6)
    dcdg = 2 * a * g
    r = P.RESISTANCE.from_g(g)
    np.testing.assert_allclose(P.RESISTANCE.to_g(r), g, rtol=1e-15)
    h = 1e-6
    fd = np.array([(a @ P.RESISTANCE.to_g(r + h * e) ** 2 - a @ P.RESISTANCE.to_g(r - h * e) ** 2) / (2 * h)
                   for e in np.eye(6)])
    dcdr = P.RESISTANCE.grad_from_g(dcdg, g)
    np.testing.assert_allclose(dcdr, fd, rtol=1e-7)
    np.testing.assert_allclose(P.RESISTANCE.grad_to_g(dcdr, g), dcdg, rtol=1e-14)
    np.testing.assert_allclose(P.CONDUCTANCE.convert(dcdr, g, "r"), dcdg, rtol=1e-14)
    assert P.RESISTANCE.convert(dcdr, g, P.RESISTANCE) is dcdr
    assert P.CONDUCTANCE.grad_from_g(dcdg, g) is dcdg


def test_resistance_chain_rule_refuses_overflow_naming_the_edges():
    g = np.array([1.0, 1e200, 2.0, 1e180])
    with pytest.raises(kn.ParameterError, match=r"dC/dr = -g\^2 dC/dg overflows float64 on edge\(s\) 1, 3"):
        P.RESISTANCE.grad_from_g(np.ones((2, 4)), g)
