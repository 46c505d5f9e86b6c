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

#: every concrete solver backend; CHOLMOD is skipped where scikit-sparse is missing
ALL_BACKENDS = ("dense", "cholmod", "splu", "pcg", "pcg-amg")


def _backend_param(name):
    marks = []
    if name == "cholmod" and not solvers.cholmod_available():
        marks.append(pytest.mark.skip(reason="scikit-sparse (CHOLMOD) not installed"))
    return pytest.param(name, marks=marks, id=name)


BACKEND_PARAMS = [_backend_param(b) for b in ALL_BACKENDS]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request) -> str:
    """Each concrete solver backend in turn."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
