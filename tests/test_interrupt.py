"""A Ctrl-C that numba's dispatcher turned into a SystemError reaches callers as the
KeyboardInterrupt it is (kirchnet._interrupt)."""

from __future__ import annotations

import numpy as np
import pytest

from kirchnet import Circuit, Trainer
from kirchnet._interrupt import caused_by_ctrl_c, reraises_ctrl_c
from kirchnet.topologies import lattice

from conftest import numba_like_ctrl_c


def test_caused_by_ctrl_c():
    assert caused_by_ctrl_c(numba_like_ctrl_c())
    assert not caused_by_ctrl_c(SystemError("another system error"))
    assert not caused_by_ctrl_c(KeyboardInterrupt())  # already what it is
    wrapped = ValueError("not a SystemError")
    wrapped.__cause__ = KeyboardInterrupt()
    assert not caused_by_ctrl_c(wrapped)
    deep = SystemError("outer")  # the Ctrl-C further down the chain
    deep.__context__ = RuntimeError("middle")
    deep.__context__.__cause__ = KeyboardInterrupt()
    assert caused_by_ctrl_c(deep)
    loop = SystemError("a chain that loops")
    middle = RuntimeError("middle")
    loop.__cause__, middle.__cause__ = middle, loop
    assert not caused_by_ctrl_c(loop)


def test_reraises_ctrl_c_keeps_everything_else():
    @reraises_ctrl_c
    def work(kind):
        """Work."""
        if kind == "ctrl-c":
            raise numba_like_ctrl_c()
        if kind == "system":
            raise SystemError("a real one")
        return kind

    assert work.__name__ == "work" and work.__doc__ == "Work."
    assert work("ok") == "ok"
    with pytest.raises(KeyboardInterrupt) as info:
        work("ctrl-c")
    assert isinstance(info.value.__cause__, SystemError)
    with pytest.raises(SystemError, match="a real one"):
        work("system")


def test_trainer_fit_raises_keyboard_interrupt(ctrl_c_in_a_training_step):
    net = lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[8])
    x, y = np.ones((4, 2)), np.zeros((4, 1))
    with pytest.raises(KeyboardInterrupt):
        Trainer(epochs=2, batch_size=2).fit(c, np.ones(net.n_edges), x, y)


def test_trainer_fit_ensemble_raises_keyboard_interrupt(monkeypatch):
    """The ensemble's compiled steps (kirchnet.ensemble) too; its saturation warning still
    points at the caller."""
    import warnings

    from kirchnet import ensemble
    from kirchnet.errors import SaturationWarning

    net = lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[8])
    x, y = np.ones((4, 2)), 5.0 * np.ones((4, 1))  # out of reach: conductances saturate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(epochs=20, batch_size=2, lr=1.0).fit_ensemble(c, np.ones((2, net.n_edges)), x, y)
    sat = [w for w in caught if issubclass(w.category, SaturationWarning)]
    assert sat and all(w.filename == __file__ for w in sat)

    def stopped(*args, **kwargs):
        raise numba_like_ctrl_c()

    monkeypatch.setattr(ensemble, "fit_ensemble", stopped)
    with pytest.raises(KeyboardInterrupt):
        Trainer(epochs=2, batch_size=2).fit_ensemble(c, np.ones((2, net.n_edges)), x, y)

