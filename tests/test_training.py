"""Optimizers, schedules and the Trainer: teacher-student training, partial updates,
resistance parametrization, callbacks, history files and exact resume from checkpoints."""

import json
import math
import os

import numpy as np
import pytest

from kirchnet import Circuit, CrossEntropy, ParameterError, ShapeError, topologies
from kirchnet.constraints import UpdateNoise
from kirchnet.optim import SGD, Adam
from kirchnet.partial import random_mask
from kirchnet.rules import Analytical
from kirchnet.training import Callback, EarlyStopping, History, LambdaCallback, Trainer, evaluate


# ----------------------------------------------------------------------------- tasks
def teacher_student(seed=0, n=40, n_in=3, n_out=2, samples=96):
    """Targets from a hidden random network of the same topology (a realizable task)."""
    net = topologies.random_connected(n, mean_degree=4, seed=seed)
    c = Circuit(net, ground=0, inputs=list(range(1, 1 + n_in)),
                outputs=list(range(n - n_out, n)))
    rng = np.random.default_rng(seed + 100)
    g_teacher = np.exp(rng.uniform(np.log(0.2), np.log(5.0), net.n_edges))
    x = rng.uniform(-1, 1, (samples, n_in))
    return c, g_teacher, x, c.solve(g_teacher, x).outputs


@pytest.fixture(scope="module")
def task():
    return teacher_student()


def test_teacher_student_analytical_100x(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    res = Trainer(Analytical(), Adam(0.05), epochs=30, batch_size=16, cosine=True).fit(c, g0, x, y)
    L = res.history["loss"]
    assert L[0] / L[-1] > 100
    assert L[0] == pytest.approx(evaluate(c, g0, x, y, Analytical().loss)["loss"])
    assert L[-1] == pytest.approx(evaluate(c, res.conductances, x, y, Analytical().loss)["loss"])
    np.testing.assert_allclose(res.history["cosine"][1:], 1.0)  # exact rule vs exact gradient
    assert res.epochs_run == 30 and len(res.history) == 31


def test_teacher_student_half_tunable(task):
    c, gt, x, y = task
    m = c.network.n_edges
    mask = random_mask(m, 0.5, seed=1)
    g0 = np.ones(m)
    res = Trainer(Analytical(), Adam(0.05), epochs=30, batch_size=16, tunable=mask).fit(c, g0, x, y)
    L = res.history["loss"]
    assert L[0] / L[-1] > 30  # measured: > 1e4 on this task
    assert np.all(res.conductances[~mask] == 1.0)
    assert np.any(res.conductances[mask] != 1.0)


def test_resistance_parametrization(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    steps = []
    cb = LambdaCallback(on_step_end=lambda tr, info: steps.append(info["conductances"].copy()))
    tr = Trainer(Analytical(), SGD(0.5), epochs=1, batch_size=len(x), shuffle=False,
                 parametrization="resistance", callbacks=[cb])
    res = tr.fit(c, g0, x, y)
    # one full-batch SGD step in r: r1 = r0 - lr * dC/dr, dC/dr = -g^2 dC/dg
    from kirchnet import loss_and_grad
    _, grad_g = loss_and_grad(c, g0, x, y)
    np.testing.assert_allclose(1.0 / steps[0], 1.0 / g0 - 0.5 * (-(g0 ** 2) * grad_g), rtol=1e-12)
    res = Trainer(Analytical(), Adam(0.05), epochs=30, batch_size=16,
                  parametrization="resistance").fit(c, g0, x, y)
    L = res.history["loss"]
    assert L[0] / L[-1] > 100


def test_ep_training_100x(task):
    from kirchnet.rules import EquilibriumPropagation

    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    rule = EquilibriumPropagation(beta=1e-3, variant="centered", nudge="current")
    res = Trainer(rule, Adam(0.05), epochs=30, batch_size=16, cosine=True).fit(c, g0, x, y)
    L = res.history["loss"]
    assert L[0] / L[-1] > 100
    # centered EP with a fixed-current nudge is exact in a linear network
    assert np.nanmin(res.history["cosine"][1:]) > 1 - 1e-6


def test_classification_accuracy():
    net = topologies.random_connected(30, mean_degree=4, seed=3)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[20, 21])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (80, 2))
    labels = (x[:, 0] > x[:, 1]).astype(int)
    res = Trainer(Analytical(CrossEntropy(temperature=0.05)), Adam(0.05), epochs=25,
                  batch_size=16).fit(c, np.ones(net.n_edges), x, labels, x_val=x[:20], y_val=labels[:20])
    acc = res.history["accuracy"]
    assert "val_accuracy" in res.history.keys and "val_loss" in res.history.keys
    out = c.solve(res.conductances, x).outputs
    assert acc[-1] == pytest.approx(np.mean(out.argmax(1) == labels))
    assert acc[-1] >= 0.9 and res.history["loss"][-1] < res.history["loss"][0]


# ----------------------------------------------------------------------------- callbacks, files, resume
def test_callbacks_stop_and_early_stopping(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)

    class StopAt(Callback):
        def on_epoch_end(self, trainer, epoch, record):
            if epoch == 2:
                trainer.stop_training = True

    res = Trainer(epochs=10, batch_size=32, callbacks=[StopAt()]).fit(c, g0, x, y)
    assert res.stopped and res.epochs_run == 2
    es = EarlyStopping("loss", patience=2, min_delta=1e9)  # nothing counts as an improvement
    res = Trainer(epochs=10, batch_size=32, callbacks=[es]).fit(c, g0, x, y)
    assert res.stopped and res.epochs_run == 3  # best at epoch 1, two epochs without improvement


def test_history_files(task, tmp_path):
    c, gt, x, y = task
    res = Trainer(epochs=3, batch_size=32, history_dir=str(tmp_path), progress=True).fit(
        c, np.ones(c.network.n_edges), x, y)
    h = History.from_json(str(tmp_path / "history.json"))
    assert h == res.history and len(h) == 4
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["epoch", "lr", "batch_loss"] and len(lines) == 5
    loss_col = lines[0].split(",").index("loss")
    np.testing.assert_array_equal([float(r.split(",")[loss_col]) for r in lines[1:]], res.history["loss"])
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def _resumable(ckpt, epochs, callbacks=(), rule=None):
    return Trainer(rule or Analytical(), Adam(0.03), epochs=epochs, batch_size=16, seed=5,
                   constraints=[UpdateNoise(0.2, seed=3)], tunable=0.7, cosine=True,
                   checkpoint_dir=ckpt, checkpoint_every=2, callbacks=callbacks)


def _noisy_insitu():
    from kirchnet.rules import InSitu

    return InSitu(current_noise=0.05, output_noise=0.05, seed=4)


@pytest.mark.parametrize("make_rule", [Analytical, _noisy_insitu], ids=["analytical", "insitu-noisy"])
def test_resume_after_interrupt_gives_identical_history(task, tmp_path, make_rule):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    full = _resumable(str(tmp_path / "full"), 7, rule=make_rule()).fit(c, g0, x, y, x_val=x[:10], y_val=y[:10])

    def boom(trainer, info):
        if info["epoch"] == 5 and info["step"] == 2:
            raise KeyboardInterrupt

    ck = str(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        _resumable(ck, 7, [LambdaCallback(on_step_end=boom)], rule=make_rule()).fit(
            c, g0, x, y, x_val=x[:10], y_val=y[:10])
    idx = json.loads(open(os.path.join(ck, "checkpoint.json")).read())
    assert idx["epoch"] == 4 and len(os.listdir(ck)) == 2  # index + one npz, no temp files
    resumed = _resumable(ck, 7, rule=make_rule()).fit(c, g0, x, y, x_val=x[:10], y_val=y[:10], resume=True)
    assert resumed.history == full.history  # exact equality of every recorded number
    np.testing.assert_array_equal(resumed.conductances, full.conductances)


def test_resume_with_more_epochs(task, tmp_path):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    full = _resumable(None, 5).fit(c, g0, x, y)
    ck = str(tmp_path / "ck")
    _resumable(ck, 3).fit(c, g0, x, y)
    resumed = _resumable(ck, 5).fit(c, g0, x, y, resume=True)
    np.testing.assert_array_equal(resumed.history["loss"], full.history["loss"])
    assert resumed.history == full.history
    # resume with nothing to do returns the stored state
    again = _resumable(ck, 5).fit(c, g0, x, y, resume=True)
    assert again.history == full.history and again.timings == []


def test_input_errors(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    with pytest.raises(ShapeError):
        Trainer(epochs=1).fit(c, g0, x[:, :2], y)
    with pytest.raises(ShapeError):
        Trainer(epochs=1).fit(c, g0, x, y[:5])
    with pytest.raises(ValueError):
        Trainer(parametrization="log")
    with pytest.raises(ParameterError):
        Trainer(clip=(1.0, 0.5))
    with pytest.raises(ParameterError):
        Trainer(epochs=1).fit(c, g0, x, y, resume=True)  # resume needs a checkpoint_dir
    assert math.isnan(Trainer(epochs=0).fit(c, g0, x, y).history["lr"][0])


def test_early_stop_writes_final_checkpoint(task, tmp_path):
    c, gt, x, y = task
    ck = str(tmp_path / "ck")
    es = EarlyStopping("loss", patience=1, min_delta=1e9)
    res = Trainer(epochs=10, batch_size=32, checkpoint_dir=ck, checkpoint_every=5, callbacks=[es]).fit(
        c, np.ones(c.network.n_edges), x, y)
    assert res.stopped and res.epochs_run == 2
    assert json.loads(open(os.path.join(ck, "checkpoint.json")).read())["epoch"] == 2


# ----------------------------------------------------------------------------- argument and data checks (issue 9)
@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=2.7), r"epochs must be an integer, got 2\.7; e\.g\. epochs=2 or 3"),
    (dict(epochs="3"), r"epochs must be an integer, got '3'"),
    (dict(epochs=-1), r"epochs must be >= 0, got -1"),
    (dict(batch_size=0), r"batch_size must be >= 1, got 0"),
    (dict(batch_size=8.5), r"batch_size must be an integer, got 8\.5"),
    (dict(seed=-1), r"seed must be a non-negative integer, got -1"),
    (dict(checkpoint_every=1.5), r"checkpoint_every must be an integer, got 1\.5"),
    (dict(lr=np.nan), r"lr must be finite, got nan"),
    (dict(optimizer="sgd", lr=-0.1), r"lr must be > 0\.0, got -0\.1"),
])
def test_trainer_arguments_are_never_coerced(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        Trainer(**kwargs)


def test_batch_size_none_is_the_full_batch(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    steps = []
    cb = LambdaCallback(on_step_end=lambda tr, info: steps.append(info["step"]))
    full = Trainer(optimizer="sgd", lr=0.5, epochs=2, batch_size=None, shuffle=False, callbacks=[cb]).fit(c, g0, x, y)
    assert steps == [0, 0]  # one step per epoch
    ref = Trainer(optimizer="sgd", lr=0.5, epochs=2, batch_size=len(x), shuffle=False).fit(c, g0, x, y)
    np.testing.assert_array_equal(full.conductances, ref.conductances)


def test_validation_data_come_in_pairs(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    with pytest.raises(ParameterError, match="x_val and y_val must be given together; got x_val only"):
        Trainer(epochs=1).fit(c, g0, x, y, x_val=x[:4])
    with pytest.raises(ParameterError, match="got y_val only"):
        Trainer(epochs=1).fit(c, g0, x, y, y_val=y[:4])
    with pytest.raises(ShapeError, match=r"x_val has 4 samples but y_val has 3"):
        Trainer(epochs=1).fit(c, g0, x, y, x_val=x[:4], y_val=y[:3])


@pytest.mark.parametrize("which, bad, match", [
    ("x", np.nan, r"x must be finite; 1 NaN or inf value\(s\), e\.g\. at index \(3, 1\); remove or impute"),
    ("x", np.inf, r"x must be finite"),
    ("y", np.nan, r"y must be finite; 1 NaN or inf value\(s\), e\.g\. at index \(3, 1\)"),
    ("x", "ragged", r"x must be an array of numbers \(a rectangular list or numpy array\)"),
    ("y", "strings", r"y must hold numbers"),
])
def test_non_finite_or_malformed_data_are_refused(task, which, bad, match):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    x, y = x.copy(), y.copy()
    if bad == "ragged":
        x = [list(r) for r in x[:4]] + [[1.0]]
        y = y[:5]
    elif bad == "strings":
        y = np.array([["a", "b"]] * len(x))
    else:
        (x if which == "x" else y)[3, 1] = bad
    with pytest.raises(ShapeError, match=match):
        Trainer(epochs=1).fit(c, g0, x, y)


def test_cross_entropy_rule_refuses_target_voltages(task):
    """Float pattern targets (target voltages) given to a cross-entropy rule used to train
    silently as unnormalized probabilities."""
    c, gt, x, _ = task
    g0 = np.ones(c.network.n_edges)
    labels = np.arange(len(x)) % 2
    patterns = 0.5 * np.eye(2)[labels]
    rule = Analytical(CrossEntropy(0.1))
    with pytest.raises(ShapeError, match=r"cross-entropy rule needs class labels \(integers 0\.\.1\) or probability "
                                         r"rows summing to 1; row 0 sums to 0\.5 .*loss='mse'"):
        Trainer(rule, epochs=1).fit(c, g0, x, patterns)
    with pytest.raises(ShapeError, match="class labels must be integers"):
        Trainer(rule, epochs=1).fit(c, g0, x, labels + 0.5)
    with pytest.raises(ShapeError, match=r"class labels must lie in 0\.\.1"):
        Trainer(rule, epochs=1).fit(c, g0, x, labels + 1)
    # labels and probability rows train
    for y in (labels, np.eye(2)[labels], labels.astype(float)):
        Trainer(rule, epochs=1).fit(c, g0, x, y)


def test_nan_estimate_stops_training_with_epoch_and_step(task):
    """A NaN estimate used to become the minimum conductance (nan_to_num) and training went on."""
    from kirchnet.errors import SolverError
    from kirchnet.rules.base import Rule, RuleResult

    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)

    class NaNOnThirdCall(Rule):
        calls = 0

        def estimate(self, circuit, conductances, x, y, factorization=None):
            NaNOnThirdCall.calls += 1
            est = np.full(circuit.network.n_edges, 1e-3)
            if NaNOnThirdCall.calls == 3:
                est[7] = np.nan
            return RuleResult(est, 0.0, lambda: None)

    with pytest.raises(SolverError, match=r"^epoch 2, step 0: rule NaNOnThirdCall returned a non-finite estimate "
                                          r"on 1 of \d+ edge\(s\) \(e\.g\. edge 7: nan\)"):
        Trainer(NaNOnThirdCall(), "sgd", lr=0.1, epochs=3, batch_size=48).fit(c, g0, x, y)


# ----------------------------------------------------------------------------- checkpoint safety
def _checkpointed(task, tmp_path, **kw):
    c, gt, x, y = task
    ck = str(tmp_path / "ck")
    Trainer(Analytical(), Adam(0.03), epochs=2, batch_size=32, checkpoint_dir=ck, **kw).fit(
        c, np.ones(c.network.n_edges), x, y)
    return ck


@pytest.mark.parametrize("change, differs", [
    (lambda t, c, x, y: (Trainer(__import__("kirchnet").rules.EquilibriumPropagation(0.1), Adam(0.03), epochs=4,
                                 batch_size=32, checkpoint_dir=t), x, y), "rule"),
    (lambda t, c, x, y: (Trainer(Analytical(), Adam(0.03), epochs=4, batch_size=32, checkpoint_dir=t,
                                 parametrization="resistance"), x, y), "parametrization"),
    (lambda t, c, x, y: (Trainer(Analytical(), Adam(0.03), epochs=4, batch_size=32, checkpoint_dir=t),
                         x[::-1].copy(), y[::-1].copy()), "data"),
    (lambda t, c, x, y: (Trainer(Analytical(), Adam(0.03), epochs=4, batch_size=32, checkpoint_dir=t,
                                 fingerprint={"config": "other"}), x, y), "config"),
], ids=["rule", "parametrization", "data", "config"])
def test_resume_from_another_run_is_refused(task, tmp_path, change, differs):
    from kirchnet.training import CheckpointMismatchError

    c, gt, x, y = task
    ck = _checkpointed(task, tmp_path)
    trainer, x2, y2 = change(ck, c, x, y)
    with pytest.raises(CheckpointMismatchError, match=differs) as info:
        trainer.fit(c, np.ones(c.network.n_edges), x2, y2, resume=True)
    assert ck in str(info.value) and "delete" in str(info.value)
    # the same settings resume fine
    res = Trainer(Analytical(), Adam(0.03), epochs=4, batch_size=32, checkpoint_dir=ck).fit(
        c, np.ones(c.network.n_edges), x, y, resume=True)
    assert res.epochs_run == 4 and res.timings and len(res.timings) == 2


@pytest.mark.parametrize("damage", ["index-garbage", "index-not-utf8", "index-missing-key", "index-list",
                                    "npz-truncated", "npz-missing", "npz-no-conductances"])
def test_damaged_checkpoint_is_a_kirchnet_error_naming_the_file(task, tmp_path, damage):
    from kirchnet import KirchnetError
    from kirchnet.training import CheckpointError

    c, gt, x, y = task
    ck = _checkpointed(task, tmp_path)
    index_path = os.path.join(ck, "checkpoint.json")
    index = json.loads(open(index_path).read())
    npz = os.path.join(ck, index["arrays"])
    if damage == "index-garbage":
        open(index_path, "w").write('{"epoch": 2, "arr')
    elif damage == "index-not-utf8":
        open(index_path, "wb").write(b"\xff\xfe{}")
    elif damage == "index-missing-key":
        del index["optimizer_scalars"]
        open(index_path, "w").write(json.dumps(index))
    elif damage == "index-list":
        open(index_path, "w").write("[1, 2]")
    elif damage == "npz-truncated":
        data = open(npz, "rb").read()
        open(npz, "wb").write(data[: len(data) // 2])
    elif damage == "npz-missing":
        os.remove(npz)
    else:
        np.savez(npz.removesuffix(".npz"), other=np.ones(3))
    with pytest.raises(CheckpointError) as info:
        Trainer(Analytical(), Adam(0.03), epochs=4, batch_size=32, checkpoint_dir=ck).fit(
            c, np.ones(c.network.n_edges), x, y, resume=True)
    assert isinstance(info.value, KirchnetError)
    named = npz if damage.startswith("npz") else index_path
    assert named in str(info.value) and "damaged" in str(info.value) and "delete" in str(info.value)


def test_callback_state_is_checkpointed(task, tmp_path):
    """A callback with state_dict()/load_state_dict() gets its state back on resume."""
    c, gt, x, y = task

    class Count(Callback):
        def __init__(self):
            self.n = 0

        def on_epoch_end(self, trainer, epoch, record):
            self.n += 1

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    ck = str(tmp_path / "ck")
    Trainer(epochs=3, batch_size=32, checkpoint_dir=ck, callbacks=[Count()]).fit(c, np.ones(c.network.n_edges), x, y)
    again = Count()
    Trainer(epochs=5, batch_size=32, checkpoint_dir=ck, callbacks=[again]).fit(
        c, np.ones(c.network.n_edges), x, y, resume=True)
    assert again.n == 5  # 3 restored + 2 run now


def test_saturation_counts_in_history_and_one_warning():
    """Edges at a bound are counted every epoch (clip floor and Bounds, resistance bounds
    inverted) and one SaturationWarning is issued above the threshold."""
    import warnings

    from kirchnet import SaturationWarning
    from kirchnet.constraints import Bounds, Levels
    from kirchnet.training import conductance_bounds, saturation_counts

    net = topologies.random_connected(40, m=120, seed=0)
    c = Circuit(net, ground=0, inputs=[1, 2], outputs=[30, 31])
    x = np.random.default_rng(0).uniform(-1, 1, (64, 2))
    y = 3.0 * x[:, ::-1]  # unreachable: outputs of a passive network stay within the inputs' range
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = Trainer(epochs=15).fit(c, np.ones(net.n_edges), x, y)
    h = res.history
    assert h["n_at_lower"][0] == 0 and h["n_at_upper"][-1] == 0
    at_floor = int(np.count_nonzero(res.conductances <= 1e-6 * (1 + 1e-9)))
    assert h["n_at_lower"][-1] == at_floor and at_floor > 0.25 * net.n_edges
    sat = [w for w in caught if issubclass(w.category, SaturationWarning)]
    assert len(sat) == 1 and "sit at a conductance bound" in str(sat[0].message)
    assert sat[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        Trainer(epochs=3, saturation_warning=None).fit(c, np.ones(net.n_edges), x, y)
    # bounds from constraints in either space; counts only tunable edges
    cons = [Bounds(0.5, 2.0), Bounds(0.1, 1.0 / 1.5, space="resistance"), Levels([0.2, 1.0, 4.0], space="conductance")]
    assert conductance_bounds(cons, (1e-6, 1e6)) == (1.5, 2.0)
    assert conductance_bounds(None, (1e-6, 1e6)) == (1e-6, 1e6)
    g = np.array([1e-6, 1.5, 2.0, 1.7])
    assert saturation_counts(g, np.array([True, True, True, False]), (1.5, 2.0)) == {"n_at_lower": 2,
                                                                                     "n_at_upper": 1}
    with pytest.raises(ParameterError, match="saturation_warning"):
        Trainer(saturation_warning=2.0)


# ------------------------------------------------------------ resistance-space estimates and the safety clip
@pytest.mark.parametrize("parametrization", ["conductance", "resistance"])
def test_trainer_reads_resistance_space_insitu_estimates(parametrization):
    """InSitu(wrt="resistance") returns dC/dr; the Trainer used to apply it as dC/dg
    (opposite sign), so training *raised* the loss. Now it trains exactly like Analytical."""
    from kirchnet import topologies
    from kirchnet.tasks import make_task
    from kirchnet.rules import Analytical, InSitu
    from kirchnet.training import Trainer

    net = topologies.lattice(4, 4)
    task = make_task("teacher_student", network=net, n_train=16, n_test=4, seed=2)
    c = task.circuit()
    g0 = np.ones(net.n_edges)
    runs = {}
    for name, rule in (("analytical", Analytical()), ("insitu_r", InSitu(wrt="resistance"))):
        tr = Trainer(rule, "sgd", lr=0.5, epochs=5, batch_size=8, parametrization=parametrization)
        runs[name] = tr.fit(c, g0, task.x_train, task.y_train)
    losses = [h["loss"] for h in runs["insitu_r"].history.to_dicts()]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(runs["insitu_r"].conductances, runs["analytical"].conductances, rtol=1e-9)


def test_trainer_safety_clip_does_not_move_conductances_in_other_units():
    """The default safety clip (1e-6, 1e6) silently moved 10 Mohm resistors (g = 1e-7 S, as
    a SPICE import gives) to 1 Mohm on the first step, whatever the learning rate. (Each
    circuit is uniform: mixing 1e-7 S and 3e7 S in one circuit is refused as ill-conditioned.)"""
    from kirchnet import topologies
    from kirchnet.training import Trainer

    net = topologies.lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[8], outputs=[4])
    X = np.ones((4, 1))
    for g in (1e-7, 3e7):  # below and above the default clip
        g0 = np.full(net.n_edges, g) * np.linspace(1.0, 1.5, net.n_edges)
        Y = c.solve(g0, X).outputs * 1.001
        res = Trainer(optimizer="sgd", lr=1e-30 * g * g, epochs=2, batch_size=4).fit(c, g0, X, Y)
        np.testing.assert_allclose(res.conductances, g0, rtol=1e-12)
    # the clip still guards against leaving the (widened) range
    g0 = np.linspace(1.0, 1.5, net.n_edges)
    Y = c.solve(g0, X).outputs * 1.2
    res = Trainer(optimizer="sgd", lr=1e30, epochs=1, batch_size=4, clip=(0.5, 1.2)).fit(c, g0, X, Y)
    assert np.all(res.conductances >= 0.5 * (1 - 1e-12)) and np.all(res.conductances <= 1.5 * (1 + 1e-12))
    assert np.any(np.abs(res.conductances - g0) > 0.1)  # the huge step did move them, to the clip


@pytest.mark.parametrize("kwargs, match", [
    (dict(patience=2.5), r"patience must be an integer, got 2\.5"),
    (dict(patience=-1), r"patience must be >= 0, got -1"),
    (dict(min_delta=np.nan), r"min_delta must be finite, got nan"),
    (dict(min_delta=-0.1), r"min_delta must be >= 0\.0, got -0\.1"),
    (dict(mode="up"), r"mode must be one of 'min', 'max'; got 'up'"),
])
def test_early_stopping_arguments(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        EarlyStopping(**kwargs)


@pytest.mark.parametrize("clip", [("a", "b"), (np.nan, 1.0), 5.0, (1e-6,)])
def test_clip_must_be_a_pair_of_numbers(clip):
    with pytest.raises(ParameterError, match=r"clip must "):
        Trainer(clip=clip)


def test_evaluate_every_skips_metrics_but_not_training(task):
    c, gt, x, y = task
    g0 = np.ones(c.network.n_edges)
    kw = dict(optimizer="adam", lr=0.05, epochs=7, batch_size=16)
    every = Trainer(**kw).fit(c, g0, x, y, x_val=x[:8], y_val=y[:8])
    sparse = Trainer(evaluate_every=3, **kw).fit(c, g0, x, y, x_val=x[:8], y_val=y[:8])
    np.testing.assert_array_equal(sparse.conductances, every.conductances)  # the same steps
    np.testing.assert_array_equal(sparse.history["batch_loss"], every.history["batch_loss"])
    kept = [0, 3, 6, 7]  # every 3rd epoch, the last one and the initial evaluation
    for key in ("loss", "val_loss", "n_at_lower"):
        col = sparse.history[key]
        np.testing.assert_array_equal(col[kept], every.history[key][kept])
        assert np.isnan(np.delete(col, kept)).all()
    assert "evaluate_every" in Trainer(evaluate_every=3).fingerprint_of(c, g0, np.ones(g0.size, bool), x, y)
    assert "evaluate_every" not in Trainer().fingerprint_of(c, g0, np.ones(g0.size, bool), x, y)
    with pytest.raises(ParameterError, match="evaluate_every must be >= 1"):
        Trainer(evaluate_every=0)
    ens = Trainer(evaluate_every=3, **kw).fit(c, np.stack([g0, 2 * g0]), x, y)
    np.testing.assert_allclose(ens[0].history["loss"], Trainer(evaluate_every=3, **kw).fit(c, g0, x, y).history["loss"],
                               rtol=1e-12)
