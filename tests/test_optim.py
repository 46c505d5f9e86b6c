"""Optimizers and schedules: update formulas, exact state round trips, argument checks and
the non-finite guards."""

from __future__ import annotations

import numpy as np
import pytest

from kirchnet.errors import ParameterError
from kirchnet.optim import (
    SGD, Adam, Constant, Cosine, ExponentialDecay, Momentum, StepDecay, get_optimizer, get_schedule,
)


# ----------------------------------------------------------------------------- formulas and state
def test_sgd_and_momentum_formulas():
    p, d = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    np.testing.assert_allclose(SGD(0.1).step(p, d), p - 0.1 * d)
    mo = Momentum(0.1, beta=0.5)
    p1 = mo.step(p, d)                      # v = d
    p2 = mo.step(p1, d)                     # v = 0.5 d + d
    np.testing.assert_allclose(p1, p - 0.1 * d)
    np.testing.assert_allclose(p2, p1 - 0.1 * 1.5 * d)
    ne = Momentum(0.1, beta=0.5, nesterov=True)
    np.testing.assert_allclose(ne.step(p, d), p - 0.1 * (d + 0.5 * d))


def test_adam_first_step_and_quadratic():
    a = Adam(0.01)
    d = np.array([3.0, -1e-3, 0.0])
    step = np.array([1.0, 1.0, 1.0]) - a.step(np.ones(3), d)
    np.testing.assert_allclose(step, 0.01 * d / (np.abs(d) + 1e-8))  # bias-corrected: lr * sign
    # minimizes an ill-conditioned quadratic 1/2 sum h p^2
    h = np.array([1.0, 100.0])
    p, opt = np.array([1.0, 1.0]), Adam(0.05)
    for _ in range(600):
        p = opt.step(p, h * p)
    assert np.all(np.abs(p) < 1e-2)


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Momentum(0.1, 0.9), lambda: Adam(0.1)])
def test_optimizer_state_roundtrip(make):
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(6, 4))
    a = make()
    p = np.ones(4)
    for gr in grads[:3]:
        p = a.step(p, gr)
    b = make()
    b.load_state_dict({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.state_dict().items()})
    pa, pb = p.copy(), p.copy()
    for gr in grads[3:]:
        pa, pb = a.step(pa, gr), b.step(pb, gr)
    np.testing.assert_array_equal(pa, pb)


def test_schedules():
    assert Constant()(7) == 1.0
    s = StepDecay(3, 0.5)
    assert [s(e) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert ExponentialDecay(0.9)(2) == pytest.approx(0.81)
    c = Cosine(10, min_factor=0.1)
    assert c(0) == pytest.approx(1.0) and c(10) == pytest.approx(0.1) and c(20) == pytest.approx(0.1)
    assert c(5) == pytest.approx(0.55)
    vals = [c(e) for e in range(11)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    with pytest.raises(ParameterError):
        StepDecay(0)
    with pytest.raises(ValueError):
        get_optimizer("rmsprop")


# ----------------------------------------------------------------------------- argument checks

@pytest.mark.parametrize("call, match", [
    (lambda: SGD(np.nan), r"lr must be finite, got nan"),
    (lambda: SGD(np.inf), r"lr must be finite, got inf"),
    (lambda: SGD(-0.1), r"lr must be > 0\.0, got -0\.1"),
    (lambda: SGD(0.0), r"lr must be > 0\.0, got 0\.0"),
    (lambda: SGD("0.1"), r"lr must be a real number, got '0\.1'"),
    (lambda: Adam(lr=None), r"lr must be a real number, got None"),
    (lambda: Momentum(0.1, beta=1.0), r"momentum beta must lie in \[0\.0, 1\.0\), got 1\.0"),
    (lambda: Momentum(0.1, beta=np.nan), r"momentum beta must be finite, got nan"),
    (lambda: Momentum(0.1, beta="0.9"), r"momentum beta must be a real number, got '0\.9'"),
    (lambda: Adam(beta1=-0.1), r"Adam beta1 must lie in \[0\.0, 1\.0\), got -0\.1"),
    (lambda: Adam(beta2=np.nan), r"Adam beta2 must be finite, got nan"),
    (lambda: Adam(eps=0.0), r"eps must be > 0\.0, got 0\.0"),
    (lambda: get_optimizer("rmsprop"), r"unknown optimizer 'rmsprop'; choose one of \['adam', 'momentum', 'sgd'\]"),
    (lambda: StepDecay(2.5), r"step_size must be an integer, got 2\.5"),
    (lambda: StepDecay(0), r"step_size must be >= 1, got 0"),
    (lambda: StepDecay(2, gamma=np.nan), r"gamma must be finite, got nan"),
    (lambda: ExponentialDecay(-0.5), r"gamma must be > 0\.0, got -0\.5"),
    (lambda: Cosine(2.7), r"total must be an integer, got 2\.7"),
    (lambda: Cosine(10, min_factor=np.nan), r"min_factor must be finite, got nan"),
    (lambda: Cosine(10, min_factor=1.5), r"min_factor must lie in \[0\.0, 1\.0\], got 1\.5"),
    (lambda: get_schedule("linear"), r"unknown schedule 'linear'"),
])
def test_optimizer_and_schedule_arguments(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Momentum(0.1), lambda: Adam(0.1)])
def test_non_finite_gradient_is_refused_and_state_kept(make):
    opt = make()
    p = np.ones(3)
    p1 = opt.step(p, np.array([0.1, 0.2, 0.3]))
    state = opt.state_dict()
    with pytest.raises(ParameterError, match=r"gradient is not finite on 1 parameter\(s\) \(e\.g\. index 1: nan\)") as info:
        opt.step(p1, np.array([0.1, np.nan, 0.3]))
    assert info.value.edges == (1,)
    after = opt.state_dict()
    assert after["t"] == state["t"] == 1
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(after[k], v)


@pytest.mark.parametrize("lr, match", [(np.nan, "finite, got nan"), (-1.0, r">= 0\.0, got -1\.0")])
def test_per_step_learning_rate_is_checked(lr, match):
    """A schedule (any callable) that returns NaN or a negative factor is refused at the step."""
    with pytest.raises(ParameterError, match=r"lr \(this step's learning rate\) must (be )?" + match):
        SGD(0.1).step(np.ones(2), np.ones(2), lr)
    # lr = 0 (e.g. the end of a cosine schedule with min_factor 0) is a legal no-op step
    np.testing.assert_array_equal(SGD(0.1).step(np.ones(2), np.ones(2), 0.0), np.ones(2))


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_update_for_a_checked_learning_rate_equals_step(name):
    """Optimizer._update (the Trainer's per-step call after validating lr once per epoch)
    gives step's parameters and state, and still refuses a non-finite gradient."""
    from kirchnet.optim import get_optimizer

    a, b = get_optimizer(name, 0.1), get_optimizer(name, 0.1)
    p = np.array([1.0, 2.0, 3.0])
    for grad in (np.array([0.1, -0.2, 0.3]), np.array([0.3, 0.1, -0.1])):
        np.testing.assert_array_equal(a.step(p, grad, 0.05), b._update(p, grad, 0.05))
    assert a.t == b.t == 2
    with pytest.raises(ParameterError, match="gradient is not finite"):
        b._update(p, np.array([0.1, np.inf, 0.0]), 0.05)
    assert b.t == 2


def test_trainer_refuses_a_bad_scheduled_learning_rate_once_per_epoch():
    """The Trainer validates the epoch's learning rate before its steps (not inside each)."""
    from kirchnet import Circuit, topologies
    from kirchnet.training import Trainer

    c = Circuit(topologies.lattice(3, 3), ground=0, inputs=[2], outputs=[8])
    x, y = np.ones((2, 1)), np.full((2, 1), 0.3)
    tr = Trainer(optimizer="sgd", lr=0.1, epochs=3, schedule=lambda epoch: -1.0 if epoch == 1 else 1.0)
    with pytest.raises(ParameterError, match=r"epoch 2, step 0: .*lr \(this step's learning rate\)"):
        tr.fit(c, np.ones(c.network.n_edges), x, y)
