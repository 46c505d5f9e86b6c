"""The in-situ two-run protocol: exact without noise, unbiased with noise, ADC and superposition."""

from __future__ import annotations

import numpy as np
import pytest

from kirchnet import Circuit, Edge, Pair, loss_and_grad, topologies
from kirchnet.errors import ParameterError
from kirchnet.gradient import adjoint_potentials
from kirchnet.rules import Analytical, InSitu


def _problem(batch=8, seed=0, kind="random"):
    rng = np.random.default_rng(seed)
    net = (topologies.random_connected(30, mean_degree=4, seed=seed) if kind == "random"
           else topologies.delaunay(36, seed=seed))
    c = Circuit(net, ground=0, inputs=[1, 2, Edge(4)], outputs=[15, 16, Pair(17, 18)])
    g = rng.uniform(0.3, 3.0, net.n_edges)
    return c, g, rng.normal(size=(batch, 3)), rng.normal(size=(batch, 3))


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("kind", ["random", "delaunay"])
@pytest.mark.parametrize("batch", [2, 40])  # fewer / more samples than outputs: both adjoint paths
@pytest.mark.parametrize("mode", ["sequential", "superposed"])
def test_noise_free_equals_analytical(kind, batch, mode):
    c, g, x, y = _problem(batch, kind=kind)
    ref = Analytical().estimate(c, g, x, y).estimate
    est = InSitu(mode=mode).estimate(c, g, x, y).estimate
    assert _rel(est, ref) <= (1e-12 if mode == "sequential" else 1e-10)


def test_ideal_shortcut_equals_simulated_measurements():
    """Ideal sensors skip the per-sample arrays; a 32-bit ADC forces the full simulation."""
    c, g, x, y = _problem(30)
    fast = InSitu().estimate(c, g, x, y).estimate
    simulated = InSitu(adc_bits=32).estimate(c, g, x, y).estimate
    assert _rel(simulated, fast) < 1e-8


def test_resistance_space_and_cross_entropy():
    c, g, x, y = _problem(12)
    _, grad_r = loss_and_grad(c, g, x, y, wrt="resistance")
    assert _rel(InSitu(wrt="resistance").estimate(c, g, x, y).estimate, grad_r) <= 1e-12
    labels = np.arange(12) % 3
    ref = Analytical(loss="cross_entropy").estimate(c, g, x, labels).estimate
    assert _rel(InSitu(loss="cross_entropy").estimate(c, g, x, labels).estimate, ref) <= 1e-12


@pytest.mark.parametrize("batch", [2, 40])
def test_current_mode_run_is_the_physical_adjoint(batch):
    """Inputs off (input nodes at 0 V, sources shorted), P^T delta injected: KCL and lam agree."""
    c, g, x, y = _problem(batch)
    fac = c.factorize(g)
    delta = np.random.default_rng(1).normal(size=(batch, c.n_outputs))
    rule = InSitu()
    u = rule.adjoint_run(fac, delta)
    assert np.all(u[:, c.input_nodes] == 0) and np.all(u[:, c.ground] == 0)
    np.testing.assert_allclose(u, adjoint_potentials(fac, delta), atol=1e-12)
    B = c.network.incidence().toarray()
    i_adj = g * (u @ B)  # sources shorted: w = drop
    injected = delta @ c.readout.toarray()
    np.testing.assert_allclose((i_adj @ B.T)[:, c.free_nodes], injected[:, c.free_nodes], atol=1e-10)
    np.testing.assert_allclose(rule.adjoint_currents(fac, delta), i_adj, atol=1e-12)


def _zscores(rule, c, g, x, y, ref, n_draws):
    fac = c.factorize(g)
    draws = np.stack([rule.estimate(c, g, x, y, factorization=fac).estimate for _ in range(n_draws)])
    mean = draws.mean(axis=0)
    se = draws.std(axis=0, ddof=1) / np.sqrt(n_draws)
    noisy = se > 0
    # edges whose two currents are exactly zero (between clamped nodes) are measured exactly
    np.testing.assert_allclose(mean[~noisy], ref[~noisy], atol=1e-12)
    return draws, mean, se, noisy


@pytest.mark.parametrize("mode", ["sequential", "superposed"])
def test_noisy_protocol_is_unbiased(mode):
    c, g, x, y = _problem(8, seed=2)
    fac = c.factorize(g)
    ref = Analytical().estimate(c, g, x, y, factorization=fac).estimate
    i_scale = np.median(np.abs(fac.solve(x).currents))
    if mode == "sequential":
        rule = InSitu(current_noise=0.3, current_noise_abs=0.1 * i_scale, output_noise=0.1,
                      output_noise_abs=0.05, seed=11)
    else:  # relative noise would correlate the two demodulated currents (documented bias)
        rule = InSitu(current_noise_abs=0.6 * i_scale, output_noise_abs=0.05, mode="superposed",
                      n_samples=8, seed=12)
    n = 1500
    draws, mean, se, noisy = _zscores(rule, c, g, x, y, ref, n)
    # the noise is real: a single draw is far from the exact gradient
    assert _rel(draws[0], ref) > 0.05
    z = (mean[noisy] - ref[noisy]) / se[noisy]
    # ~60 edges; Gaussian tails would give P(max |z| >= 5.5) < 1e-5 (the products of noisy
    # currents have heavier tails, hence the margin)
    assert np.abs(z).max() < 5.5
    # power: a 10 % bias fails this tolerance by far
    z_biased = (mean[noisy] - 1.1 * ref[noisy]) / se[noisy]
    assert np.abs(z_biased).max() > 8.0


def test_seeded_noise_is_reproducible_and_fresh_per_call():
    c, g, x, y = _problem(4)
    a, b = InSitu(current_noise=0.1, seed=3), InSitu(current_noise=0.1, seed=3)
    e1, e2 = a.estimate(c, g, x, y).estimate, b.estimate(c, g, x, y).estimate
    np.testing.assert_array_equal(e1, e2)
    assert not np.array_equal(a.estimate(c, g, x, y).estimate, e1)


def test_adc_quantization_grid_and_convergence():
    c, g, x, y = _problem(16)
    fs, bits = 2.0, 6
    res = InSitu(adc_bits=bits, output_range=fs).estimate(c, g, x, y)
    q = fs / 2 ** (bits - 1)
    o = res.info["measured_outputs"]
    np.testing.assert_allclose(o / q, np.round(o / q), atol=1e-9)
    assert np.abs(o).max() <= fs
    ref = Analytical().estimate(c, g, x, y).estimate
    errs = [_rel(InSitu(adc_bits=b).estimate(c, g, x, y).estimate, ref) for b in (4, 8, 12, 16)]
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[3] < 1e-3
    # superposed runs quantize the summed signal; still converges with bits
    sup = [_rel(InSitu(adc_bits=b, mode="superposed").estimate(c, g, x, y).estimate, ref) for b in (6, 14)]
    assert sup[1] < sup[0] and sup[1] < 1e-2


def test_superposition_averages_absolute_noise():
    """Demodulating N samples reduces absolute noise by ~sqrt(N/2) relative to one reading."""
    c, g, x, y = _problem(4, seed=5)
    fac = c.factorize(g)
    ref = Analytical().estimate(c, g, x, y, factorization=fac).estimate
    s = 0.2 * np.median(np.abs(fac.solve(x).currents))
    seq = InSitu(current_noise_abs=s, seed=1)
    sup = InSitu(current_noise_abs=s, mode="superposed", n_samples=32, seed=1)
    err_seq = np.mean([_rel(seq.estimate(c, g, x, y, factorization=fac).estimate, ref) for _ in range(40)])
    err_sup = np.mean([_rel(sup.estimate(c, g, x, y, factorization=fac).estimate, ref) for _ in range(40)])
    assert err_sup < err_seq / 2.5  # sqrt(16) = 4 expected


def test_parameter_errors():
    with pytest.raises(ParameterError, match="current_noise"):
        InSitu(current_noise=-0.1)
    with pytest.raises(ParameterError, match="adc_bits"):
        InSitu(adc_bits=1)
    with pytest.raises(ParameterError, match="mode"):
        InSitu(mode="parallel")
    with pytest.raises(ParameterError, match="frequencies"):
        InSitu(mode="superposed", frequencies=(2, 2))
    with pytest.raises(ParameterError, match="frequencies"):
        InSitu(mode="superposed", frequencies=(1, 8), n_samples=16)
    with pytest.raises(ParameterError, match="wrt"):
        InSitu(wrt="voltage")
