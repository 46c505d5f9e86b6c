"""Device models: windows, linear drift and threshold memristors against closed forms; pulse
devices (soft bounds, asymmetry, noise, device variation, drift, presets); the pulse
programmer (seeded reproducibility, exact state restore, training through devices)."""

import json

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from kirchnet import ParameterError, ShapeError, topologies
from kirchnet.devices import (
    DigitalPotentiometer, LinearIonDrift, PulseDevice, PulseProgrammer, ThresholdMemristor,
    biolek_window, joglekar_window, local_currents, preset,
)
from kirchnet.optim import Adam
from kirchnet.rules import Analytical
from kirchnet.tasks import teacher_student
from kirchnet.training import LambdaCallback, Trainer, _join_arrays, _split_arrays


def _checkpointed(state):
    """``state`` through a checkpoint's encoding: arrays to the npz, the rest to JSON."""
    arrays = {}
    text = json.dumps(_split_arrays(state, "cons", arrays))
    assert arrays and all(isinstance(v, np.ndarray) for v in arrays.values())
    return _join_arrays(json.loads(text), arrays)


def soft(**kw):
    base = dict(g_min=0.2, g_max=3.0, step_up=0.02, step_down=0.02)
    base.update(kw)
    return PulseDevice(**base)


# ----------------------------------------------------------------------------- windows
@pytest.mark.parametrize("p", [1, 2, 5])
def test_windows_bounded_and_vanish_at_the_pushed_bound(p):
    x = np.linspace(0, 1, 101)
    j = joglekar_window(x, p)
    assert j.min() >= 0 and j.max() <= 1 and j[0] == 0 and j[-1] == 0 and j[50] == 1
    up, down = biolek_window(x, 1.0, p), biolek_window(x, -1.0, p)
    for f in (up, down):
        assert f.min() >= 0 and f.max() <= 1
    assert up[-1] == 0 and up[0] == 1      # pushed towards x = 1: stops there, leaves x = 0
    assert down[0] == 0 and down[-1] == 1


@pytest.mark.parametrize("window", ["joglekar", "biolek"])
def test_windowed_drift_keeps_the_state_in_range(window):
    m = LinearIonDrift(window=window, p=2)
    x = np.array([0.5, 0.5])
    i = np.array([5e-4, -5e-4])  # 5 x k^-1 per second: saturates quickly
    for _ in range(20000):
        x = x + 1e-4 * m.rate(x, i)
    assert np.all((x > 0) & (x < 1)) and x[0] > 0.95 and x[1] < 0.05


def test_linear_drift_closed_form_solves_the_state_equation():
    m = LinearIonDrift()
    assert m.k == pytest.approx(1e4) and m.xi == pytest.approx(159.0)
    phi = np.linspace(0, 0.4, 41)
    x = m.closed_form_state(0.1, phi)
    # under a voltage source i = v / R(x), so dx/dphi = k / R(x) with the flux dphi = v dt
    sol = solve_ivp(lambda f, y: m.k / m.resistance(y), (0, 0.4), [0.1], t_eval=phi, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(x, sol.y[0], rtol=1e-9)
    assert x[0] == pytest.approx(0.1)
    with pytest.raises(ParameterError, match="window"):
        LinearIonDrift(window="joglekar").closed_form_state(0.1, phi)


def test_threshold_memristor_is_quiet_below_threshold_and_power_law_above():
    m = ThresholdMemristor(v_on=-0.5, v_off=0.3, k_on=2.0, k_off=3.0, a_on=2.0, a_off=3.0, p=None)
    w = np.array([-0.49, 0.0, 0.29, 0.6, -1.5])
    r = m.rate(np.full(5, 0.5), None, w)
    np.testing.assert_array_equal(r[:3], 0.0)
    assert r[3] == pytest.approx(3.0 * (0.6 / 0.3 - 1) ** 3)
    assert r[4] == pytest.approx(-2.0 * (1.5 / 0.5 - 1) ** 2)
    windowed = ThresholdMemristor(v_on=-0.5, v_off=0.3)
    assert windowed.rate(np.array([1.0]), None, np.array([1.0]))[0] == 0.0  # at the bound it pushes to
    assert windowed.rate(np.array([1.0]), None, np.array([-1.0]))[0] < 0.0  # can leave it


def test_memristor_parameters_are_validated():
    with pytest.raises(ParameterError, match="r_off must exceed r_on"):
        LinearIonDrift(r_on=10.0, r_off=5.0)
    with pytest.raises(ParameterError, match="window"):
        LinearIonDrift(window="hann")
    with pytest.raises(ParameterError, match="v_on < 0 < v_off"):
        ThresholdMemristor(v_on=0.1)
    m = LinearIonDrift(r_on=100, r_off=1e4)
    np.testing.assert_allclose(m.state_from_resistance(m.resistance([0.0, 0.3, 1.0])), [0.0, 0.3, 1.0])


# ----------------------------------------------------------------------------- pulse devices
def test_soft_bounds_closed_form_for_gamma_one():
    dev = soft().build(1)
    a = 0.02 / (3.0 - 0.2)
    g = np.array([0.2])
    out = []
    for _ in range(50):
        g = dev.pulse(g, np.array([1]))
        out.append(g[0])
    n = np.arange(1, 51)
    np.testing.assert_allclose(out, 0.2 + 2.8 * (1 - (1 - a) ** n), rtol=1e-12)
    # n pulses at once equal n single pulses
    np.testing.assert_allclose(soft().build(1).pulse(np.array([0.2]), np.array([50])), out[-1], rtol=1e-14)


def test_soft_bounds_steps_shrink_towards_the_bounds():
    dev = soft(gamma_up=2.0, gamma_down=0.5).build(5)
    g = np.linspace(0.2, 3.0, 5)
    up, down = dev.step(g, np.ones(5)), dev.step(g, -np.ones(5))
    assert np.all(np.diff(up) < 0) and up[-1] == 0 and up[0] == pytest.approx(0.02)
    assert np.all(np.diff(down) < 0) and down[0] == 0 and down[-1] == pytest.approx(-0.02)
    g = dev.pulse(np.full(5, 2.9), np.full(5, 100))  # many SET pulses never cross g_max
    assert np.all(g <= 3.0) and np.all(g > 2.9)


def test_asymmetric_steps():
    dev = soft(step_up=0.03, step_down=0.01, gamma_up=0.0, gamma_down=0.0).build(1)
    g0 = np.array([1.0])
    assert dev.pulse(g0, np.array([1]))[0] - 1.0 == pytest.approx(0.03)
    assert dev.pulse(g0, np.array([-1]))[0] - 1.0 == pytest.approx(-0.01)
    # one up, one down does not return: the asymmetry a training loop must absorb
    assert dev.pulse(dev.pulse(g0, np.array([1])), np.array([-1]))[0] == pytest.approx(1.02)


def test_cycle_to_cycle_noise_statistics():
    dev = soft(gamma_up=0.0, c2c=0.3).build(20000, seed=1)
    g = dev.pulse(np.full(20000, 1.0), np.ones(20000, dtype=int)) - 1.0
    assert g.mean() == pytest.approx(0.02, rel=0.02)
    assert g.std() == pytest.approx(0.3 * 0.02, rel=0.03)


def test_device_to_device_variation_is_drawn_once_and_seeded():
    a = soft(d2d=0.2).build(5000, seed=7)
    b = soft(d2d=0.2).build(5000, seed=7)
    c = soft(d2d=0.2).build(5000, seed=8)
    for k in ("g_min", "g_max", "step_up", "step_down", "gamma_up", "gamma_down"):
        np.testing.assert_array_equal(a.params[k], b.params[k])
        assert not np.array_equal(a.params[k], c.params[k])
    assert np.std(np.log(a.params["step_up"])) == pytest.approx(0.2, rel=0.05)
    assert np.all(a.params["g_max"] > a.params["g_min"])
    same = soft(d2d=0.0).build(10, seed=3).params["step_up"]
    np.testing.assert_array_equal(same, 0.02)


def test_retention_drift_power_law():
    dev = soft(drift_nu=0.05, drift_t0=2.0).build(3)
    g = dev.pulse(np.array([1.0, 1.5, 2.0]), np.array([1, 0, -1]))
    g_prog = g.copy()
    g1 = dev.drift(g, 98.0)  # age t0 + 98 = 100 s
    np.testing.assert_allclose(g1, g_prog * (100.0 / 2.0) ** -0.05, rtol=1e-13)
    g2 = dev.drift(g1, 100.0)
    np.testing.assert_allclose(g2, g_prog * (200.0 / 2.0) ** -0.05, rtol=1e-13)
    g3 = dev.pulse(g2, np.array([1, 0, 0]))  # reprogramming restarts the clock of that device
    g4 = dev.drift(g3, 2.0)
    assert g4[0] == pytest.approx(g3[0] * 2.0 ** -0.05)
    assert g4[1] == pytest.approx(g_prog[1] * 101.0 ** -0.05)


def test_digital_potentiometer_has_100_levels():
    pot = preset("digital_potentiometer")
    r = pot.resistance_levels()
    assert r.size == 100 and r[0] == 40.0 and r[-1] == 32e3
    np.testing.assert_allclose(np.diff(r), (32e3 - 40.0) / 99)
    arr = pot.build(1)
    g = np.array([pot.g_min])
    seen = {float(g[0])}
    for _ in range(120):  # walk the whole ladder and beyond
        g = arr.pulse(g, np.array([1]))
        seen.add(float(g[0]))
    assert len(seen) == 100 and g[0] == pytest.approx(1 / 40.0)
    assert arr.pulse(np.array([1 / 40.0]), np.array([-99]))[0] == pytest.approx(1 / 32e3)
    # the programmer turns a conductance change into the exact number of taps
    lv = pot.conductance_levels()
    assert PulseProgrammer(pot).pulses(np.array([lv[10]]), np.array([lv[17] - lv[10]]))[0] == 7
    with pytest.raises(ParameterError, match="n_steps"):
        DigitalPotentiometer(n_steps=1)


def test_potentiometer_tolerance_is_seeded_and_restored():
    pot = DigitalPotentiometer(d2d=0.2)
    a, b = PulseProgrammer(pot, seed=1), PulseProgrammer(pot, seed=1)
    g = np.full(50, 1 / 5000.0)
    ga = a.apply(g * 1.5, g)
    b.load_state_dict(_checkpointed(a.state_dict()))
    np.testing.assert_array_equal(b.devices.scale, a.devices.scale)
    assert np.std(np.log(a.devices.scale)) == pytest.approx(0.2, rel=0.3)
    np.testing.assert_array_equal(b.apply(ga * 0.7, ga), a.apply(ga * 0.7, ga))
    r = 1 / ga  # every part sits on one of its own taps
    np.testing.assert_allclose(r, a.devices.levels()[np.arange(50), a.devices.taps(ga)], rtol=1e-12)


def test_presets_are_documented_and_overridable():
    for name in ("pcm", "rram", "ideal", "digital_potentiometer"):
        assert preset(name).source
    assert preset("pcm", c2c=0.0).c2c == 0.0 and preset("pcm").c2c > 0
    assert preset("hp").k == pytest.approx(1e4)
    with pytest.raises(ParameterError, match="no parameter"):
        preset("pcm", c2d=0.1)
    with pytest.raises(ParameterError, match="preset name"):
        preset("flash")
    with pytest.raises(ParameterError, match="g_max must exceed g_min"):
        PulseDevice(g_min=1.0, g_max=0.5, step_up=0.1, step_down=0.1)


# ----------------------------------------------------------------------------- programmer
def test_programmer_modes():
    dev = soft(gamma_up=0.0, gamma_down=0.0)
    g = np.ones(4)
    dg = np.array([0.046, -0.031, 0.004, 0.0])  # 2.3, -1.55, 0.2, 0 steps
    np.testing.assert_array_equal(PulseProgrammer(dev, "round").pulses(g, dg), [2, -2, 0, 0])
    np.testing.assert_array_equal(PulseProgrammer(dev, "sign").pulses(g, dg), [1, -1, 0, 0])
    np.testing.assert_array_equal(PulseProgrammer(dev, "round", max_pulses=1).pulses(g, dg), [1, -1, 0, 0])
    st = PulseProgrammer(dev, "stochastic", seed=2)
    n = np.array([st.pulses(g, dg) for _ in range(4000)])
    np.testing.assert_allclose(n.mean(axis=0), [2.3, -1.55, 0.2, 0.0], atol=0.03)  # unbiased
    res = PulseProgrammer(dev).program(g, -dg / 0.1, lr=0.1)  # g - lr * estimate = g + dg
    np.testing.assert_allclose(res.conductances, 1 + 0.02 * np.array([2, -2, 0, 0]))
    with pytest.raises(ShapeError):
        PulseProgrammer(dev).program(g, np.ones(3), lr=0.1)
    with pytest.raises(ParameterError, match="mode"):
        PulseProgrammer(dev, "nearest")


def test_programmer_state_restores_exactly():
    dev = soft(c2c=0.2, d2d=0.1, drift_nu=0.02)
    rng = np.random.default_rng(0)
    g = np.full(30, 1.0)
    steps = [rng.normal(0, 0.05, 30) for _ in range(6)]
    a = PulseProgrammer(dev, "stochastic", dt=1.0, seed=4)
    for s in steps[:3]:
        g = a.apply(g + s, g)
    saved = _checkpointed(a.state_dict())  # what a checkpoint stores
    g_mid = g.copy()
    for s in steps[3:]:
        g = a.apply(g + s, g)
    b = PulseProgrammer(dev, "stochastic", dt=1.0, seed=99)
    b.load_state_dict(saved)
    h = g_mid
    for s in steps[3:]:
        h = b.apply(h + s, h)
    np.testing.assert_array_equal(h, g)
    assert b.total_pulses == a.total_pulses
    # seeded: a second programmer with the same seed gives the same run
    c = PulseProgrammer(dev, "stochastic", dt=1.0, seed=4)
    k = np.full(30, 1.0)
    for s in steps:
        k = c.apply(k + s, k)
    np.testing.assert_array_equal(k, g)


def _ts_task():
    net = topologies.lattice(4, 4)
    task = teacher_student(net, n_inputs=2, n_outputs=2, n_train=32, n_test=16, seed=1)
    return task.circuit(), task


def test_pulse_programmed_teacher_student_reduces_the_loss():
    circuit, task = _ts_task()
    prog = PulseProgrammer(soft(c2c=0.1, d2d=0.1), "stochastic", seed=0)
    g = np.full(circuit.network.n_edges, 1.0)
    first = None
    for _ in range(150):
        loss, grad = circuit.loss_and_grad(g, task.x_train, task.y_train)
        first = loss if first is None else first
        g = prog.program(g, grad, lr=20.0).conductances
    final, _ = circuit.loss_and_grad(g, task.x_train, task.y_train)
    assert final < 0.2 * first
    assert prog.total_pulses > 0 and np.all(prog.satisfied(g))


def test_local_currents_give_the_resistance_gradient_and_in_situ_training_works():
    circuit, task = _ts_task()
    g = np.random.default_rng(3).uniform(0.5, 2.0, circuit.network.n_edges)
    i, i_adj, loss = local_currents(circuit, g, task.x_train, task.y_train)
    _, grad_r = circuit.loss_and_grad(g, task.x_train, task.y_train, wrt="resistance")
    np.testing.assert_allclose(np.mean(i * i_adj, axis=0), grad_r, rtol=1e-9, atol=1e-15)
    prog = PulseProgrammer(soft(v_threshold=0.1), seed=0)
    g = np.full(circuit.network.n_edges, 1.0)
    first, _ = circuit.loss_and_grad(g, task.x_train, task.y_train)
    for _ in range(150):
        i, i_adj, _ = local_currents(circuit, g, task.x_train, task.y_train)
        g = prog.in_situ(g, i, i_adj, gain=1e4).conductances
    final, _ = circuit.loss_and_grad(g, task.x_train, task.y_train)
    assert final < 0.01 * first
    # the InSitu rule's measured products (wrt resistance) drive the same pulses
    from kirchnet.rules import InSitu

    est = InSitu(wrt="resistance").estimate(circuit, g, task.x_train, task.y_train).estimate
    a, b = PulseProgrammer(soft(v_threshold=0.1), seed=5), PulseProgrammer(soft(v_threshold=0.1), seed=5)
    np.testing.assert_allclose(a.in_situ_products(g, est, gain=1e4).conductances,
                               b.in_situ(g, i, i_adj, gain=1e4).conductances, rtol=1e-6)  # sums differ in rounding
    # below threshold nothing moves
    res = prog.in_situ(g, i, i_adj, gain=1e-12)
    np.testing.assert_array_equal(res.conductances, g)
    assert not res.pulses.any()


def _trainer(ckpt, callbacks=(), protocol="pulses"):
    from kirchnet.rules import InSitu

    prog = PulseProgrammer(soft(c2c=0.2, d2d=0.1, drift_nu=0.01, v_threshold=0.1), "stochastic", dt=1.0,
                           seed=6, protocol=protocol, gain=1e4)
    rule = Analytical() if protocol == "pulses" else InSitu(wrt="resistance", current_noise=0.05, seed=2)
    return Trainer(rule, Adam(0.03), epochs=5, batch_size=8, seed=5, constraints=[prog],
                   tunable=0.8, checkpoint_dir=ckpt, checkpoint_every=1, callbacks=callbacks), prog


@pytest.mark.parametrize("protocol", ["pulses", "in_situ"])
def test_trainer_with_pulse_programmer_trains_and_resumes_exactly(tmp_path, protocol):
    circuit, task = _ts_task()
    g0 = np.ones(circuit.network.n_edges)
    full_trainer, prog = _trainer(str(tmp_path / "full"), protocol=protocol)
    full = full_trainer.fit(circuit, g0, task.x_train, task.y_train)
    assert full.history["loss"][-1] < 0.5 * full.history["loss"][0]
    assert prog.total_pulses > 0

    def boom(trainer, info):
        if info["epoch"] == 4 and info["step"] == 1:
            raise KeyboardInterrupt

    cut, _ = _trainer(str(tmp_path / "cut"), [LambdaCallback(on_step_end=boom)], protocol=protocol)
    with pytest.raises(KeyboardInterrupt):
        cut.fit(circuit, g0, task.x_train, task.y_train)
    # the device arrays sit in the checkpoint's npz, not in its JSON index
    index = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    with np.load(tmp_path / "cut" / index["arrays"]) as data:
        keys = set(data.files)
    m = circuit.network.n_edges
    assert {"cons.0.devices.params.g_min", "cons.0.devices.g_prog", "cons.0.devices.age"} <= keys

    def longest_list(o):
        if isinstance(o, dict):
            return max([longest_list(v) for v in o.values()], default=0)
        return len(o) if isinstance(o, list) else 0

    assert longest_list(index["constraints"]) < m
    resumed_trainer, prog_r = _trainer(str(tmp_path / "cut"), protocol=protocol)
    resumed = resumed_trainer.fit(circuit, g0, task.x_train, task.y_train, resume=True)
    np.testing.assert_array_equal(resumed.conductances, full.conductances)
    assert resumed.history == full.history
    assert prog_r.total_pulses == prog.total_pulses
    np.testing.assert_array_equal(prog_r.devices.age, prog.devices.age)


def test_in_situ_protocol_in_the_trainer_skips_the_optimizer():
    circuit, task = _ts_task()
    g0 = np.ones(circuit.network.n_edges)

    def run(optimizer, epochs=1):
        prog = PulseProgrammer(soft(v_threshold=0.1), protocol="in_situ", gain=1e4, seed=0)
        t = Trainer(Analytical(), optimizer, epochs=epochs, batch_size=None, shuffle=False, constraints=[prog])
        return t.fit(circuit, g0, task.x_train, task.y_train), prog

    (one, _), (other, _) = run(Adam(0.5)), run("sgd")
    np.testing.assert_array_equal(one.conductances, other.conductances)  # no optimizer step
    # one full-batch step is one in-situ pulse per edge from p_e = dC/dr_e
    _, grad_r = circuit.loss_and_grad(g0, task.x_train, task.y_train, wrt="resistance")
    manual = PulseProgrammer(soft(v_threshold=0.1), seed=0).in_situ_products(g0, grad_r, gain=1e4)
    np.testing.assert_allclose(one.conductances, manual.conductances, rtol=1e-12)
    assert manual.pulses.any()
    trained, prog = run(Adam(0.5), epochs=60)
    assert trained.history["loss"][-1] < 0.05 * trained.history["loss"][0]
    assert prog.total_pulses > 0


@pytest.mark.parametrize("protocol", ["pulses", "in_situ"])
def test_frozen_devices_drift_but_receive_no_pulses(protocol):
    circuit, task = _ts_task()
    m = circuit.network.n_edges
    mask = np.zeros(m, dtype=bool)
    mask[::2] = True
    g0 = np.random.default_rng(0).uniform(0.8, 1.5, m)
    nu = 0.02
    prog = PulseProgrammer(soft(drift_nu=nu, v_threshold=0.1), "stochastic", dt=1.0, seed=1,
                           protocol=protocol, gain=1e4)
    epochs, batch = 4, 8
    res = Trainer(Analytical(), Adam(0.05), epochs=epochs, batch_size=batch, constraints=[prog],
                  tunable=mask).fit(circuit, g0, task.x_train, task.y_train)
    steps = epochs * (len(task.x_train) // batch)
    # frozen: never programmed, so g(t) = g0 (t / t0)^(-nu) with t = t0 + steps * dt
    np.testing.assert_allclose(res.conductances[~mask], g0[~mask] * (1.0 + steps) ** (-nu), rtol=1e-12)
    assert np.all(prog.devices.g_prog[~mask] == g0[~mask])  # no pulse reset their drift clock
    assert np.any(prog.devices.g_prog[mask] != g0[mask]) and prog.total_pulses > 0
    # without devices, frozen edges keep their conductances exactly
    plain = Trainer(Analytical(), Adam(0.05), epochs=2, batch_size=batch, tunable=mask).fit(
        circuit, g0, task.x_train, task.y_train)
    np.testing.assert_array_equal(plain.conductances[~mask], g0[~mask])


def test_estimator_trains_through_a_pulse_programmer():
    from kirchnet import Circuit
    from kirchnet.estimators import ResistiveRegressor

    net = topologies.random_connected(20, mean_degree=4, seed=2)
    c = Circuit(net, ground=0, inputs=[1, 2, 3], outputs=[18, 19])
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 3))
    Y = c.solve(rng.uniform(0.5, 2.0, net.n_edges), X).outputs
    prog = PulseProgrammer(soft(c2c=0.1, d2d=0.1), "stochastic", seed=3)
    fit = lambda: ResistiveRegressor(circuit=c, constraints=[prog], epochs=8, lr=0.05).fit(X, Y)  # noqa: E731
    a, b = fit(), fit()
    assert a.history_["loss"][-1] < 0.2 * a.history_["loss"][0]
    np.testing.assert_array_equal(a.predict(X), b.predict(X))  # each fit programs fresh copies
    assert prog.devices is None and prog.total_pulses == 0  # the parameter is not mutated
    # the in-situ protocol with a tunable subset, through the estimator
    situ = PulseProgrammer(soft(c2c=0.1, v_threshold=0.05), protocol="in_situ", gain=1e3, seed=3)
    make = lambda epochs: ResistiveRegressor(circuit=c, constraints=[situ], epochs=epochs,  # noqa: E731
                                             tunable="random:0.5").fit(X, Y)
    est, init = make(15), make(0)
    assert est.history_["loss"][-1] < 0.75 * est.history_["loss"][0]  # measured 0.62
    frozen = ~np.asarray(est.tunable_)
    assert frozen.any() and np.any(est.conductances_[~frozen] != init.conductances_[~frozen])
    np.testing.assert_array_equal(est.conductances_[frozen], init.conductances_[frozen])  # no pulses, no drift
