"""Shared fixtures and the hypothesis profiles of the kirchnet test suite.

Profiles: ``ci`` (default; derandomized, so CI runs are reproducible) and ``explore``
(fresh random examples each run). Select one with ``KIRCHNET_HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from kirchnet import solvers

settings.register_profile(
    "ci", deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore", deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("KIRCHNET_HYPOTHESIS_PROFILE", "ci"))

#: every concrete solver backend; optional ones skip where their package is missing
ALL_BACKENDS = ("dense", "cholmod", "splu", "pcg", "pcg-amg")

#: skip marks for the optional backends (CHOLMOD: scikit-sparse, AMG: pyamg)
needs_cholmod = pytest.mark.skipif(not solvers.cholmod_available(),
                                   reason="scikit-sparse (CHOLMOD) not installed: pip install scikit-sparse")
needs_pyamg = pytest.mark.skipif(not solvers.pyamg_available(),
                                 reason="pyamg (backend 'pcg-amg') not installed: pip install pyamg")
OPTIONAL_BACKEND_MARKS = {"cholmod": needs_cholmod, "pcg-amg": needs_pyamg}


def _backend_param(name):
    marks = [OPTIONAL_BACKEND_MARKS[name]] if name in OPTIONAL_BACKEND_MARKS else []
    return pytest.param(name, marks=marks, id=name)


def backend_params(names):
    """``pytest.param`` per backend name with the skip mark of optional backends."""
    return [_backend_param(b) for b in names]


BACKEND_PARAMS = [_backend_param(b) for b in ALL_BACKENDS]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request) -> str:
    """Each concrete solver backend in turn."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(owner, name)`` wraps ``owner.name`` (for the test's duration) so that its
    calls are counted; returns a dict whose ``"n"`` is the count so far."""
    def wrap(owner, name):
        calls = {"n": 0}
        real = getattr(owner, name)

        def counting(*a, **k):
            calls["n"] += 1
            return real(*a, **k)

        monkeypatch.setattr(owner, name, counting)
        return calls

    return wrap


@pytest.fixture
def no_lanes(monkeypatch):
    """Batches take the limited iteration's other paths (Woodbury, envelope, sparse numpy),
    not the lane iteration (:func:`kirchnet.nonlinear._lanes_newton`), for tests of those."""
    import kirchnet.nonlinear as nl

    monkeypatch.setattr(nl, "LANES_MIN_BATCH", 10 ** 9)


def numba_like_ctrl_c() -> SystemError:
    """What CPython raises where numba's dispatcher returns with a Ctrl-C's KeyboardInterrupt
    set (kirchnet._interrupt): a SystemError caused by the KeyboardInterrupt."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise SystemError("CPUDispatcher(<function step>) returned a result with an "
                              "exception set") from ki
    except SystemError as exc:
        return exc


@pytest.fixture
def ctrl_c_in_a_training_step(monkeypatch):
    """Every ``Trainer._step`` raises :func:`numba_like_ctrl_c`'s error."""
    from kirchnet import Trainer

    def step(self, *args, **kwargs):
        raise numba_like_ctrl_c()

    monkeypatch.setattr(Trainer, "_step", step)
