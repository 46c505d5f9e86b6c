"""Memristive network dynamics: one memristor against its closed form, the projector
equation of Caravelli et al. against the nodal simulation, integrators, low-rank
factorization updates below threshold, and the pinched hysteresis loop."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from kirchnet import BoundaryConditionError, Circuit, Edge, Network, ParameterError, ShapeError, topologies
from kirchnet.devices import LinearIonDrift, ThresholdMemristor
from kirchnet.memristive import MemristiveNetwork, plot_hysteresis
from kirchnet.memristive_projector import (
    projector_currents, projector_rate, simulate_projector, sources_from_circuit,
)

V, W = 1.0, 2 * np.pi  # sinusoid amplitude (V) and angular frequency (1/s)


def one_memristor():
    """A voltage source across one HP memristor (edge 1 -> 0, node 1 driven, node 0 ground)."""
    net = Network(2, [(1, 0)])
    return Circuit(net, ground=0, inputs=[1], outputs=[Edge(0)])


# ----------------------------------------------------------------------------- one memristor
@pytest.mark.parametrize("drive", ["constant", "sine"])
def test_single_memristor_matches_its_closed_form(drive):
    model = LinearIonDrift()  # HP device: k = 1e4 / (A s), xi = 159
    if drive == "constant":
        src, flux = (lambda t: np.array([0.5])), (lambda t: 0.5 * t)
    else:
        src, flux = (lambda t: np.array([V * np.sin(W * t)])), (lambda t: V * (1 - np.cos(W * t)) / W)
    tr = MemristiveNetwork(one_memristor(), model, 0.1).simulate(
        src, (0, 1.0), method="RK45", t_eval=np.linspace(0, 1, 201), rtol=1e-10, atol=1e-12)
    exact = model.closed_form_state(0.1, flux(tr.times))
    np.testing.assert_allclose(tr.states[:, 0], exact, rtol=0, atol=1e-8)
    assert 0.1 < exact.max() < 1.0  # the drive moves the state well inside [0, 1]
    # the state is the charge: x = x0 + k q (q by the trapezoidal rule on the recorded currents)
    np.testing.assert_allclose(tr.states[:, 0], 0.1 + model.k * tr.charge()[:, 0], atol=3e-4)
    # outputs are the drop across the element: the source voltage
    np.testing.assert_allclose(tr.outputs[:, 0], [src(t)[0] for t in tr.times], atol=1e-12)


@pytest.mark.parametrize("method", ["BDF", "LSODA"])
def test_stiff_integrators(method):
    model = LinearIonDrift()
    tr = MemristiveNetwork(one_memristor(), model, 0.1).simulate(
        lambda t: np.array([V * np.sin(W * t)]), (0, 1.0), method=method, rtol=1e-8, atol=1e-10)
    exact = model.closed_form_state(0.1, V * (1 - np.cos(W * tr.times)) / W)
    np.testing.assert_allclose(tr.states[:, 0], exact, atol=1e-5)
    assert tr.info["method"] == method and tr.info["nfev"] > 0


def test_fixed_and_adaptive_steps_converge_to_the_closed_form():
    model = LinearIonDrift()
    src = lambda t: np.array([V * np.sin(W * t)])
    flux = lambda t: V * (1 - np.cos(W * t)) / W
    net = MemristiveNetwork(one_memristor(), model, 0.1)
    errs = []
    for dt in (2e-3, 1e-3):
        tr = net.simulate(src, (0, 1.0), method="euler", dt=dt, record_currents=False)
        errs.append(np.abs(tr.states[:, 0] - model.closed_form_state(0.1, flux(tr.times))).max())
        assert tr.info["n_equilibria"] == round(1.0 / dt) + 1 and tr.currents is None
    assert errs[1] < errs[0] and errs[0] / errs[1] == pytest.approx(2.0, rel=0.15)  # first order
    tr = net.simulate(src, (0, 1.0), method="heun", rtol=1e-4, atol=1e-6)
    assert tr.times[-1] == 1.0 and tr.info["n_rejected"] >= 0
    assert np.abs(tr.states[:, 0] - model.closed_form_state(0.1, flux(tr.times))).max() < 1e-3


def test_pinched_hysteresis_loop_shrinks_with_frequency(tmp_path):
    model = LinearIonDrift(window="biolek")
    areas = []
    for w in (2 * np.pi * 2, 2 * np.pi * 32):  # 2 Hz and 32 Hz
        tr = MemristiveNetwork(one_memristor(), model, 0.2).simulate(
            lambda t: np.array([V * np.sin(w * t)]), (0, 2 * np.pi / w), method="euler", dt=4e-3 * np.pi / w)
        v, i = tr.voltages[:, 0], tr.currents[:, 0]
        np.testing.assert_allclose(i, v * model.conductance(tr.states[:, 0]), rtol=1e-12, atol=1e-15)  # pinched
        di = 0.5 * (i[1:] + i[:-1]) * np.diff(v)
        half = di.size // 2  # each half period traces one lobe, from the origin back to it
        areas.append(abs(di[:half].sum()) + abs(di[half:].sum()))
    assert areas[0] > 1e-6 and areas[1] < 0.5 * areas[0]
    path = tmp_path / "loop.png"
    fig = plot_hysteresis(tr, edge=0, path=str(path))
    assert isinstance(fig, Figure) and path.stat().st_size > 1000
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), tr.voltages[:, 0])  # the i-v loop


# ----------------------------------------------------------------------------- projector form
def test_projector_conventions_on_one_loop():
    """Two memristors in a loop (edges 0 -> 1 and 1 -> 0) with kirchnet sources s: the loop
    current is (s0 + s1) / (R0 + R1) and dx/dt = alpha x + (R_on / beta) i."""
    net = Network(2, [(0, 1), (1, 0)])
    c = Circuit(net, ground=0, inputs=[Edge(0), Edge(1)])
    r_on, r_off, alpha, beta = 2.0, 20.0, -0.3, 0.5
    model = LinearIonDrift.from_projector(r_on, r_off, alpha, beta)
    x, s = np.array([0.2, 0.7]), np.array([1.5, -0.4])
    S = sources_from_circuit(c, s)
    np.testing.assert_array_equal(S, -s)
    i_loop = s.sum() / model.resistance(x).sum()
    np.testing.assert_allclose(projector_currents(net, x, S, r_on, r_off), [i_loop, i_loop], rtol=1e-13)
    expect = alpha * x + r_on / beta * i_loop
    np.testing.assert_allclose(projector_rate(net, x, S, r_on, r_off, alpha, beta), expect, rtol=1e-13)
    np.testing.assert_allclose(MemristiveNetwork(c, model, x).rate(0.0, x, s), expect, rtol=1e-13)


def _series_source_circuit(net, n_sources, seed):
    rng = np.random.default_rng(seed)
    edges = rng.choice(net.n_edges, n_sources, replace=False)
    return Circuit(net, ground=0, inputs=[Edge(int(e)) for e in edges], outputs=[net.n_nodes - 1])


@pytest.mark.parametrize("kind", ["lattice", "random"])
def test_projector_equation_agrees_with_nodal_simulation(kind):
    net = topologies.lattice(3, 4) if kind == "lattice" else topologies.random_connected(9, 18, seed=2)
    c = _series_source_circuit(net, 3, seed=1)
    r_on, r_off, alpha, beta = 1.0, 8.0, -0.2, 3.0
    model = LinearIonDrift.from_projector(r_on, r_off, alpha, beta)
    rng = np.random.default_rng(4)
    x0 = rng.uniform(0.3, 0.7, net.n_edges)
    amp = rng.uniform(0.5, 1.0, 3)
    src = lambda t: amp * np.array([np.sin(t), np.cos(2 * t), 1.0])
    # the right-hand sides agree to rounding
    for t in (0.0, 0.4):
        xr = rng.uniform(0, 1, net.n_edges)
        nodal = MemristiveNetwork(c, model, x0).rate(t, xr, src)
        proj = projector_rate(net, xr, sources_from_circuit(c, src(t)), r_on, r_off, alpha, beta)
        np.testing.assert_allclose(nodal, proj, rtol=0, atol=1e-12 * np.abs(proj).max())
    # and so do the trajectories
    T = np.linspace(0, 2.0, 11)
    tr = MemristiveNetwork(c, model, x0).simulate(src, (0, 2.0), method="DOP853", t_eval=T,
                                                  rtol=1e-11, atol=1e-13)
    ts, X = simulate_projector(net, x0, lambda t: sources_from_circuit(c, src(t)), (0, 2.0),
                               r_on, r_off, alpha, beta, t_eval=T)
    assert np.all((X > 0) & (X < 1)) and np.abs(X[-1] - x0).max() > 0.05  # it moved, inside [0, 1]
    np.testing.assert_allclose(tr.states, X, rtol=0, atol=1e-8)
    # an independent integrator (adaptive Heun, nodal) lands on the same trajectory
    heun = MemristiveNetwork(c, model, x0).simulate(src, (0, 2.0), method="heun", rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(heun.states[-1], X[-1], atol=1e-3)


def test_projector_needs_series_sources():
    net = topologies.lattice(2, 3)
    with pytest.raises(BoundaryConditionError, match="series sources"):
        sources_from_circuit(Circuit(net, ground=0, inputs=[5]), [1.0])
    with pytest.raises(ShapeError):
        projector_rate(net, np.zeros(3), np.zeros(net.n_edges), 1, 2, 0, 1)


# ----------------------------------------------------------------------------- threshold devices
class _AlwaysRefactor(MemristiveNetwork):
    def factorization(self, g):
        self._fac = self.circuit.factorize(g)
        return self._fac


def test_threshold_network_uses_low_rank_updates_and_matches_refactorization():
    net = topologies.lattice(4, 4)
    c = Circuit(net, ground=0, inputs=[15], outputs=[10])
    model = ThresholdMemristor(r_on=1.0, r_off=10.0, v_on=-0.45, v_off=0.45, k_on=50.0, k_off=50.0)
    src = lambda t: np.array([2.0 * np.sin(2 * np.pi * t)])
    kw = dict(method="euler", dt=5e-3)
    tr = MemristiveNetwork(c, model, 0.5, low_rank=True).simulate(src, (0, 1.0), **kw)
    ref = _AlwaysRefactor(c, model, 0.5).simulate(src, (0, 1.0), **kw)
    info = tr.info
    assert info["n_low_rank_updates"] > 10 and info["n_reused"] > 10  # few / no devices above threshold
    moved = np.abs(tr.states[-1] - 0.5) > 1e-6
    assert 0 < moved.sum() < net.n_edges  # only the edges that saw the threshold switched
    np.testing.assert_allclose(tr.states, ref.states, rtol=0, atol=1e-10)
    np.testing.assert_allclose(tr.currents, ref.currents, rtol=1e-9, atol=1e-12)
    # below threshold nothing moves and nothing is refactorized
    quiet = MemristiveNetwork(c, model, 0.5).simulate(lambda t: np.array([0.3]), (0, 0.2), **kw)
    np.testing.assert_array_equal(quiet.states, 0.5)
    assert quiet.info["n_factorizations"] == 1 and quiet.info["n_low_rank_updates"] == 0


def test_memristive_network_validates_its_arguments():
    c = one_memristor()
    model = LinearIonDrift()
    with pytest.raises(ParameterError, match=r"x0 must lie in \[0, 1\]"):
        MemristiveNetwork(c, model, 1.5)
    with pytest.raises(ShapeError, match="x0"):
        MemristiveNetwork(c, model, np.zeros(3))
    net = MemristiveNetwork(c, model, 0.5)
    with pytest.raises(ParameterError, match="needs dt"):
        net.simulate([1.0], (0, 1))
    with pytest.raises(ShapeError, match="source must give 1"):
        net.simulate([1.0, 2.0], (0, 1), dt=0.1)
    with pytest.raises(ParameterError, match="method"):
        net.simulate([1.0], (0, 1), method="leapfrog")
    with pytest.raises(ParameterError, match="increasing"):
        net.simulate([1.0], (1, 0), dt=0.1)
    with pytest.raises(TypeError, match="MemristorModel"):
        MemristiveNetwork(c, "hp")
