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
