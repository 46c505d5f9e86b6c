"""A Ctrl-C that numba's dispatcher turned into a SystemError reaches callers as the
KeyboardInterrupt it is (kirchnet._interrupt)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from kirchnet import Circuit, Trainer
from kirchnet._interrupt import caused_by_ctrl_c, reraises_ctrl_c
from kirchnet.cli import EXIT_INTERRUPTED, app
from kirchnet.topologies import lattice


def numba_like_error() -> SystemError:
    """What CPython raises where numba's dispatcher returns with the Ctrl-C's exception set."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise SystemError("CPUDispatcher(<function step>) returned a result with an "
                              "exception set") from ki
    except SystemError as exc:
        return exc


def test_caused_by_ctrl_c():
    assert caused_by_ctrl_c(numba_like_error())
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
            raise numba_like_error()
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


def _ctrl_c_in_a_step(monkeypatch):
    def step(self, *args, **kwargs):
        raise numba_like_error()

    monkeypatch.setattr(Trainer, "_step", step)


def test_trainer_fit_raises_keyboard_interrupt(monkeypatch):
    net = lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[8])
    x, y = np.ones((4, 2)), np.zeros((4, 1))
    _ctrl_c_in_a_step(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(epochs=2, batch_size=2).fit(c, np.ones(net.n_edges), x, y)


def test_cli_train_exits_130_on_it(tmp_path, monkeypatch):
    """``kirchnet train``: exit 130 and the resume line, as for any Ctrl-C (was: exit 1 with
    numba's SystemError and a traceback, seen in a Ctrl-C stress of ``reproduce``)."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("""
name = "tiny"
seed = 1
epochs = 3
batch_size = 8

[network]
kind = "lattice"
rows = 4
cols = 4

[task]
name = "teacher_student"
n_inputs = 2
n_outputs = 1
n_train = 16
n_test = 8

[optimizer]
name = "adam"
lr = 0.05
""")
    _ctrl_c_in_a_step(monkeypatch)
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["train", str(cfg), "--out", str(out), "--no-progress"])
    assert r.exit_code == EXIT_INTERRUPTED, r.output
    assert "--resume" in r.stderr and "Traceback" not in r.stderr
