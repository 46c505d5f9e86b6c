"""Optimizers and schedules: argument checks and the non-finite guards (formulas and state
round trips are in test_training.py)."""

from __future__ import annotations

import numpy as np
import pytest

from kirchnet.errors import ParameterError
from kirchnet.optim import SGD, Adam, Cosine, ExponentialDecay, Momentum, StepDecay, get_optimizer, get_schedule


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
