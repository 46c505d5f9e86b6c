"""Device constraints: bounds, levels, update noise, asymmetric steps, composition, and
constraints holding after every training step."""

import numpy as np
import pytest

from kirchnet import Circuit, ParameterError, topologies
from kirchnet.constraints import (AsymmetricSteps, Bounds, Compose, Levels, LogLevels, UpdateNoise,
                                  as_constraint)
from kirchnet.training import LambdaCallback, Trainer


def test_bounds_conductance_and_resistance():
    g_old = np.ones(4)
    g_new = np.array([0.01, 0.5, 2.0, 50.0])
    np.testing.assert_array_equal(Bounds(0.1, 10.0).apply(g_new, g_old), [0.1, 0.5, 2.0, 10.0])
    r = 1.0 / Bounds(1.0, 20.0, space="resistance").apply(g_new, g_old)  # r in [1, 20]
    np.testing.assert_allclose(r, [20.0, 2.0, 1.0, 1.0])
    assert Bounds(0.1, 10.0).satisfied(np.array([0.1, 10.0])).all()
    assert not Bounds(0.1, 10.0).satisfied(np.array([0.09])).any()
    with pytest.raises(ParameterError):
        Bounds(2.0, 1.0)


def test_log_levels_like_x9c303():
    lv = LogLevels(100, r_min=40, r_max=32e3)
    assert lv.levels.size == 100 and lv.levels[0] == 40 and np.isclose(lv.levels[-1], 32e3)
    ratio = lv.levels[1:] / lv.levels[:-1]
    np.testing.assert_allclose(ratio, ratio[0])  # geometric
    rng = np.random.default_rng(0)
    r = np.exp(rng.uniform(np.log(10), np.log(1e5), 500))
    out = 1.0 / lv.apply(1.0 / r, np.ones(500))
    # every value is a level, and the nearest one in log space
    idx = np.argmin(np.abs(np.log(out)[:, None] - np.log(lv.levels)[None, :]), axis=1)
    np.testing.assert_allclose(out, lv.levels[idx], rtol=1e-12)
    best = lv.levels[np.argmin(np.abs(np.log(np.clip(r, 40, 32e3))[:, None] - np.log(lv.levels)), axis=1)]
    np.testing.assert_allclose(out, best, rtol=1e-12)
    assert lv.satisfied(1.0 / out).all()
    assert not lv.satisfied(np.array([1.0 / 41.0])).any()


def test_linear_levels_and_stochastic_rounding_unbiased():
    lv = Levels([1.0, 2.0, 3.0], space="conductance")
    np.testing.assert_array_equal(lv.apply(np.array([1.2, 1.6, 2.5, 9.0, 0.1]), np.ones(5)),
                                  [1.0, 2.0, 3.0, 3.0, 1.0])
    st = Levels([1.0, 2.0], space="conductance", rounding="stochastic", seed=1)
    out = st.apply(np.full(20000, 1.3), np.ones(20000))
    assert set(np.unique(out)) <= {1.0, 2.0}
    assert abs(out.mean() - 1.3) < 0.02  # E[round] = value; std of mean ~ 0.0032


def test_update_noise_multiplicative_and_seeded():
    g_old = np.ones(50000)
    g_new = g_old + 0.1
    out = UpdateNoise(0.2, seed=3).apply(g_new, g_old)
    step = out - g_old
    assert abs(step.mean() - 0.1) < 0.002
    assert abs(step.std() - 0.02) < 0.001  # sigma * |dp|
    np.testing.assert_array_equal(out, UpdateNoise(0.2, seed=3).apply(g_new, g_old))
    np.testing.assert_array_equal(UpdateNoise(0.2).apply(g_old, g_old), g_old)  # no step, no noise
    # state save/restore continues the same stream
    a = UpdateNoise(0.5, seed=7)
    a.apply(g_new[:10], g_old[:10])
    st = a.state_dict()
    first = a.apply(g_new[:10], g_old[:10])
    b = UpdateNoise(0.5, seed=99)
    b.load_state_dict(st)
    np.testing.assert_array_equal(b.apply(g_new[:10], g_old[:10]), first)


def test_asymmetric_steps_in_resistance_space():
    g_old = np.array([1.0, 1.0])
    g_new = np.array([0.5, 2.0])  # r: 1 -> 2 (dr = +1), 1 -> 0.5 (dr = -0.5)
    r = 1.0 / AsymmetricSteps(up=0.5, down=0.5, space="resistance").apply(g_new, g_old)
    np.testing.assert_allclose(r, [1.5, 0.75])
    r = 1.0 / AsymmetricSteps(up=1.0, down=0.2, space="resistance").apply(g_new, g_old)
    np.testing.assert_allclose(r, [2.0, 0.9])
    g = AsymmetricSteps(up=1.0, down=0.25).apply(np.array([2.0, 0.0]), g_old)  # conductance space
    np.testing.assert_allclose(g, [2.0, 0.75])


def test_compose_order_and_parametrization_default():
    comp = as_constraint([AsymmetricSteps(up=2.0, down=1.0), Bounds(None, 1.5)])
    assert isinstance(comp, Compose)
    np.testing.assert_allclose(comp.apply(np.array([1.2, 0.8]), np.ones(2)), [1.4, 0.8])
    # the step is doubled before clipping at 1.5
    np.testing.assert_allclose(comp.apply(np.array([1.5]), np.ones(1)), [1.5])
    # space None follows the parametrization: r 1 -> 2 doubled to 3
    r = 1.0 / AsymmetricSteps(up=2.0).apply(np.array([0.5]), np.ones(1), "resistance")
    np.testing.assert_allclose(r, [3.0])


def _teacher_task(seed=0, n=30, samples=48):
    net = topologies.random_connected(n, mean_degree=4, seed=seed)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[5, 9])
    rng = np.random.default_rng(seed)
    gt = 1.0 / np.exp(rng.uniform(np.log(100), np.log(3000), net.n_edges))
    x = rng.uniform(-1, 1, (samples, 2))
    return c, gt, x, c.solve(gt, x).outputs


@pytest.mark.parametrize("parametrization", ["conductance", "resistance"])
def test_constraints_hold_after_every_step(parametrization):
    c, gt, x, y = _teacher_task()
    m = c.network.n_edges
    cons = [UpdateNoise(0.3, seed=1), AsymmetricSteps(1.0, 0.5),
            Bounds(40.0, 32e3, space="resistance"), LogLevels(100, 40, 32e3)]
    mask = np.arange(m) % 3 != 0
    checks = []

    def check(trainer, info):
        g = info["conductances"]
        checks.append(bool(Compose(cons).satisfied(g).all()))
        r = 1.0 / g
        checks.append(bool(np.all((r >= 40 - 1e-9) & (r <= 32e3 * (1 + 1e-12)))))
        checks.append(bool(np.all(g[~mask] == g0[~mask])))

    r0 = np.full(m, LogLevels(100, 40, 32e3).levels[60])  # start on a level
    g0 = 1.0 / r0
    lr = 300.0 if parametrization == "resistance" else 5e-5  # > half a level step
    res = Trainer(optimizer="adam", lr=lr, epochs=3, batch_size=8, tunable=mask, constraints=cons,
                  parametrization=parametrization,
                  callbacks=[LambdaCallback(on_step_end=check)]).fit(c, g0, x, y)
    assert len(checks) == 3 * 3 * 6 and all(checks)
    assert not np.array_equal(res.conductances[mask], g0[mask])  # it did train
