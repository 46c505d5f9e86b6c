"""The kirchnet command line, through the real entry point (``python -m kirchnet``) and CliRunner."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kirchnet.cli import EXIT_CONFIG, EXIT_EXISTS, EXIT_INTERRUPTED, app

TINY = """
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
"""


def kirchnet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kirchnet", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_entry_point_help_and_info():
    r = kirchnet("--help")
    assert r.returncode == 0
    for cmd in ("train", "reproduce", "info", "experiment"):
        assert cmd in r.stdout
    r = kirchnet("info", "--no-sizes")
    assert r.returncode == 0, r.stderr
    assert "CHOLMOD" in r.stdout and "numpy" in r.stdout


def test_train_writes_results_and_refuses_to_overwrite(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    r = kirchnet("train", str(cfg), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    for f in ("history.csv", "history.json", "conductances.csv", "metrics.json", "config.json",
              "learning_curve.png", "network.png"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert metrics["epochs"] == 3 and len(history) == 4
    assert metrics["train_loss"] == pytest.approx(history[-1]["train_loss"])
    lines = (out / "conductances.csv").read_text().splitlines()
    assert lines[0].startswith("edge,tail,head,conductance") and len(lines) == 1 + 24
    # a second run into the same directory is refused (exit 3) unless --force
    runner = CliRunner()
    r2 = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--no-progress"])
    assert r2.exit_code == EXIT_EXISTS and "already exists" in " ".join(r2.stderr.split())
    r3 = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--no-progress", "--force", "--seed", "2"])
    assert r3.exit_code == 0, r3.output
    assert json.loads((out / "metrics.json").read_text())["seed"] == 2


@pytest.mark.parametrize("text, expect, entry_point", [
    (TINY + "\nlearning_rate = 0.1\n", "learning_rate: unknown key", True),
    ("epochs = [", "invalid TOML", True),
    (TINY.replace("epochs = 3", 'epochs = "many"'), "epochs: Input should be a valid integer", False),
    (TINY.replace("rows = 4", "rows = -4"), "network.rows", False),
    (TINY.replace('name = "teacher_student"', 'name = "cifar10"'), "task.name", False),
    (TINY.replace("[optimizer]", "[optimiser]"), "optimiser: unknown key", False),
])
def test_malformed_config_gives_clear_error_and_exit_code(tmp_path, text, expect, entry_point):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    args = ["train", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]
    if entry_point:  # the real entry point, in a subprocess
        r = kirchnet(*args)
        code, err = r.returncode, r.stderr
    else:
        r = CliRunner().invoke(app, args)
        code, err = r.exit_code, r.stderr
    assert code == EXIT_CONFIG
    assert expect in " ".join(err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_train_ctrl_c_reported_by_numba_exits_130(tmp_path, ctrl_c_in_a_training_step):
    """A Ctrl-C that numba's dispatcher reports as a SystemError (kirchnet._interrupt): exit
    130 and the resume line, as for any Ctrl-C (was: exit 1 with a traceback, seen in a
    Ctrl-C stress of ``kirchnet reproduce``)."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    r = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == EXIT_INTERRUPTED, r.output
    assert "--resume" in r.stderr and "Traceback" not in r.stderr


def test_missing_config_file(tmp_path):
    r = CliRunner().invoke(app, ["train", str(tmp_path / "nope.toml")])
    assert r.exit_code == EXIT_CONFIG


def test_reproduce_via_clirunner_writes_report(tmp_path, monkeypatch):
    import numpy as np

    from kirchnet import topologies
    from kirchnet.experiments import reproduce as rep
    from kirchnet.experiments.e1_gradient import e1_gradient
    from kirchnet.experiments.e4_partial import e4_partial

    tiny = {
        "e1": lambda out, quick, seed, progress: e1_gradient(
            out, quick, seed, progress, networks={"lattice": topologies.lattice(4, 4)},
            betas=np.geomspace(1e-3, 1e-1, 3), batch=4),
        "e4": lambda out, quick, seed, progress: e4_partial(
            out, True, seed, n_seeds=1, progress=progress, fractions=(1.0, 0.5), tasks=("regression",),
            overrides={"epochs": 2}),
    }
    monkeypatch.setattr(rep, "EXPERIMENTS", tiny)
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text()
    assert "## E1 gradient fidelity" in report and "## E4 partial updates" in report
    for png in ("e1_gradient_bias.png", "e1_cosine.png", "e4_partial.png"):
        assert f"]({png})" in report and (out / png).is_file()
    assert json.loads((out / "summary.json").read_text())["headline"]
    r2 = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out), "--no-progress"])
    assert r2.exit_code == EXIT_EXISTS
    r3 = CliRunner().invoke(app, ["reproduce", "--only", "e9", "--out", str(tmp_path / "x")])
    assert r3.exit_code == EXIT_CONFIG
    r4 = CliRunner().invoke(app, ["experiment", "e7"])
    assert r4.exit_code == EXIT_CONFIG


# ------------------------------------------------------------------ config schema
def test_config_round_trip_and_defaults():
    from kirchnet.config import TrainConfig

    cfg = TrainConfig.from_dict({"task": {"name": "iris"}, "rule": {"name": "ep", "beta": 0.2}})
    assert cfg.rule.variant is None and cfg.optimizer.name == "adam"  # kirchnet.defaults.OPTIMIZER
    from kirchnet.experiments.run import build_rule

    assert build_rule(cfg.rule).variant == "centered"  # EP default; CL/ACL default to positive
    cl = TrainConfig.from_dict({"task": {"name": "iris"}, "rule": {"name": "cl"}})
    assert build_rule(cl.rule).variant == "positive"
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("data, expect", [
    ({"task": {"name": "iris"}, "network": {"kind": "delaunay"}}, "needs n"),
    ({"task": {"name": "iris"}, "network": {"kind": "regular", "n": 10}}, "needs degree"),
    ({"task": {"name": "iris"}, "network": {"kind": "layered", "sizes": [3]}}, "sizes"),
    ({"task": {"name": "iris"}, "network": {"g_init": [2.0, 1.0]}}, "g_init"),
    ({"task": {"name": "iris"}, "constraints": {"g_min": 1.0, "g_max": 0.5}}, "g_max"),
    ({"task": {"name": "iris"}, "constraints": {"g_min": None, "levels": 8}}, "levels need"),
    ({"task": {"name": "teacher_student", "loss": "cross_entropy"}}, "regression task"),
    ({"task": {"name": "iris"}, "rule": {"name": "ep", "beta": 0}}, "rule.beta"),
    ({"task": {"name": "iris"}, "rule": {"name": "ep", "variant": "sideways"}}, "rule.variant"),
    ({"task": {"name": "iris", "colour": "red"}}, "task.colour: unknown key"),
    ({}, "task: required key is missing"),
])
def test_config_rejects_impossible_values(data, expect):
    from kirchnet.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=expect.replace(".", r"\.")):
        TrainConfig.from_dict(data)


def test_example_configs_are_valid():
    from kirchnet.config import TrainConfig

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
    configs = [p for p in examples if "sweep" not in p.name]
    assert len(configs) >= 3
    for p in configs:
        TrainConfig.from_toml(p)


# ------------------------------------------------------------------ output safety, resume, exit codes
def _invoke(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, " ".join((r.stderr or "").split()), r


LONG = TINY.replace("epochs = 3", "epochs = 60\ncheckpoint_every = 1").replace(
    "rows = 4\ncols = 4", "rows = 7\ncols = 7").replace("n_train = 16", "n_train = 48").replace(
    "batch_size = 8", "batch_size = 4")


def _comparable(out: Path) -> dict:
    """Everything a run wrote that must not depend on interruptions: bytes of the arrays and
    tables, the history and metrics without their wall-clock columns."""
    hist = [{k: v for k, v in r.items() if k != "time"} for r in json.loads((out / "history.json").read_text())]
    metrics = {k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k != "wall_time"}
    csv_rows = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    t = csv_rows[0].index("time")
    return {"conductances.csv": (out / "conductances.csv").read_bytes(), "history.json": hist,
            "history.csv": [r[:t] + r[t + 1:] for r in csv_rows], "metrics": metrics,
            "network.graphml": (out / "network.graphml").read_bytes()}


@pytest.mark.slow
def test_train_survives_sigkill_at_any_moment_and_resumes_bit_identically(tmp_path):
    """kill -9 the real command after its first checkpoint, in mid-run and while it writes
    its outputs; --resume each time; the result equals an uninterrupted run's, byte for byte."""
    import os
    import signal
    import time

    cfg = tmp_path / "long.toml"
    cfg.write_text(LONG)
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = kirchnet("train", str(cfg), "--out", str(full), "--no-progress")
    assert r.returncode == 0, r.stderr
    index = cut / "checkpoint" / "checkpoint.json"

    def epoch():
        try:
            return json.loads(index.read_text())["epoch"]
        except (OSError, ValueError):
            return -1

    moments = [("first checkpoint", lambda: index.exists()), ("mid-run", lambda: epoch() >= 30),
               ("writing outputs", lambda: (cut / "config.json").exists())]
    killed = []
    for label, moment in moments:
        args = [sys.executable, "-m", "kirchnet", "train", str(cfg), "--out", str(cut), "--no-progress"]
        proc = subprocess.Popen(args + (["--resume"] if killed else []), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.time() + 40
        while proc.poll() is None and not moment() and time.time() < deadline:
            time.sleep(0.001)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed.append((label, epoch()))
        proc.communicate(timeout=30)
        assert not (cut / "complete.json").exists()  # a killed run never looks finished
    assert [k[0] for k in killed] == [m[0] for m in moments], killed
    assert 1 <= killed[0][1] < killed[1][1] <= 60
    again = kirchnet("train", str(cfg), "--out", str(cut), "--no-progress", "--resume")
    assert again.returncode == 0, again.stderr
    assert "took over the lock" in again.stderr  # the killed run's lock file was stale
    assert (cut / "complete.json").is_file() and not list(cut.glob(".*.tmp"))
    assert _comparable(cut) == _comparable(full)


def test_train_resume_rules_and_completion_marker(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    code, err, _ = _invoke("train", cfg, "--out", out, "--no-progress")
    assert code == 0 and json.loads((out / "complete.json").read_text())["status"] == "complete"
    assert (out / "checkpoint" / "checkpoint.json").is_file()  # checkpoints are on by default
    first = _comparable(out)
    code, err, _ = _invoke("train", cfg, "--out", out, "--no-progress")
    assert code == EXIT_EXISTS and "--resume" in err and "--force" in err
    # resuming a finished run changes nothing
    code, err, _ = _invoke("train", cfg, "--out", out, "--no-progress", "--resume")
    assert code == 0 and _comparable(out) == first
    # resuming with another config is refused and names what differs
    other = tmp_path / "t2.toml"
    other.write_text(TINY.replace("lr = 0.05", "lr = 0.02"))
    code, err, _ = _invoke("train", other, "--out", out, "--no-progress", "--resume")
    assert code == EXIT_CONFIG and "config" in err and "differ" in err and "Traceback" not in err
    code, err, _ = _invoke("train", cfg, "--no-progress", "--resume")
    assert code == EXIT_CONFIG and "--resume needs --out" in err
    code, err, _ = _invoke("train", cfg, "--out", out, "--resume", "--force")
    assert code == EXIT_CONFIG and "exclude" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, err, _ = _invoke("train", cfg, "--out", tmp_path / "other", "--resume", "--no-progress")
    assert code == EXIT_CONFIG and "no checkpoint" in err
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    code, err, _ = _invoke("train", cfg.with_name("off.toml"), "--out", tmp_path / "x", "--resume")
    assert code == EXIT_CONFIG  # missing file
    off = tmp_path / "off.toml"
    off.write_text(TINY.replace("epochs = 3", "epochs = 3\ncheckpoint_every = 0"))
    code, err, _ = _invoke("train", off, "--out", tmp_path / "x", "--resume", "--no-progress")
    assert code == EXIT_CONFIG and "checkpoint_every = 0" in err


def test_train_locked_output_fails_at_once_naming_the_holder(tmp_path):
    import os

    from kirchnet.experiments import io

    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    with io.open_output_dir(out, command="kirchnet train other.toml"):
        code, err, _ = _invoke("train", cfg, "--out", out, "--no-progress", "--force")
        assert code == EXIT_EXISTS and f"pid {os.getpid()}" in err and "kirchnet train other.toml" in err
        code, err, _ = _invoke("train", cfg, "--out", out, "--no-progress", "--resume")
        assert code == EXIT_EXISTS and "in use" in err
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("text, args, key", [
    (TINY.replace('kind = "lattice"\nrows = 4\ncols = 4', 'kind = "random"\nn = 5\nm = 50'), [], "network.m"),
    (TINY.replace('rows = 4\ncols = 4', 'rows = 1\ncols = 3'), [], "network.rows"),
    (TINY.replace('name = "teacher_student"', 'name = "iris"').replace("rows = 4", "rows = 3"), [], "network.rows"),
    (TINY.replace("lr = 0.05", "lr = inf"), [], "optimizer.lr"),
    (TINY.replace("lr = 0.05", "lr = nan"), [], "optimizer.lr"),
    (TINY, ["--seed", "-1"], "seed"),
])
def test_configs_that_cannot_be_built_exit_2_naming_the_key(tmp_path, text, args, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    code, err, r = _invoke("train", cfg, "--out", tmp_path / "o", "--no-progress", *args)
    assert code == EXIT_CONFIG, r.output
    assert key in err and "Traceback" not in err and r.exception is None or isinstance(r.exception, SystemExit)


def test_file_errors_are_kirchnet_errors_with_exit_codes(tmp_path, monkeypatch):
    import errno
    import os

    from kirchnet.cli import EXIT_ENV
    from kirchnet.experiments import io

    bad = tmp_path / "latin1.toml"
    bad.write_bytes(TINY.replace('"tiny"', '"caf\xe9"').encode("latin-1"))
    code, err, _ = _invoke("train", bad, "--out", tmp_path / "o")
    assert code == EXIT_CONFIG and "not UTF-8" in err
    code, err, _ = _invoke("train", tmp_path, "--out", tmp_path / "o")
    assert code == EXIT_CONFIG and "is a directory" in err
    code, err, _ = _invoke("sweep", tmp_path, "--out", tmp_path / "o")
    assert code == EXIT_CONFIG and "is a directory" in err
    code, err, _ = _invoke("sweep", bad, "--out", tmp_path / "o")
    assert code == EXIT_CONFIG and "not UTF-8" in err
    assert not (tmp_path / "o").exists()
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    # a read-only output directory (root ignores mode bits: os.access answers as for a user)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    real = os.access
    monkeypatch.setattr(io.os, "access", lambda p, m, *a, **k: False if str(p) == str(ro) and m & os.W_OK
                        else real(p, m, *a, **k))
    code, err, _ = _invoke("train", cfg, "--out", ro, "--no-progress")
    os.chmod(ro, 0o755)
    assert code == EXIT_ENV and "read-only" in err and "Traceback" not in err, err
    monkeypatch.undo()

    # the disk fills up while the outputs are written: exit 4, the run is not marked complete
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_fd", full)
    out = tmp_path / "full"
    code, err, r = _invoke("train", cfg, "--out", out, "--no-progress")
    assert code == EXIT_ENV and "disk is full" in err, r.output
    assert not (out / "complete.json").exists() and not list(out.rglob("*.tmp"))


def test_reproduce_only_without_names_is_a_clean_error(tmp_path):
    for only in (",", " , ,"):
        code, err, _ = _invoke("reproduce", "--only", only, "--out", tmp_path / "o")
        assert code == EXIT_CONFIG and "names no experiment" in err
    assert not (tmp_path / "o").exists()


def test_config_name_and_file_name_never_escape_the_output_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "..evil.toml"
    cfg.write_text(TINY.replace('name = "tiny"', 'name = "../../../escaped"'))
    code, err, r = _invoke("train", cfg, "--no-progress")
    assert code == 0, r.output
    (made,) = list((tmp_path / "runs").iterdir())
    assert made.parent == tmp_path / "runs" and (made / "complete.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["..evil.toml", "runs"]


# ----------------------------------------------------------------------- info: optional backends (issue 9)
def _patch_backends(monkeypatch, present: bool):
    import importlib.util as iu

    from kirchnet import solvers, spice

    monkeypatch.setattr(solvers, "cholmod_available", lambda: present)
    monkeypatch.setattr(solvers, "pyamg_available", lambda: present)
    monkeypatch.setattr(spice, "find_ngspice", lambda: "/usr/bin/ngspice" if present else None)
    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: (real(name, *a) if present else None)
                        if name in ("dask", "distributed") else real(name, *a))


def test_optional_backends_report_the_install_command_of_each_missing_one(monkeypatch):
    import shlex

    from kirchnet.cli import optional_backends

    _patch_backends(monkeypatch, present=False)
    rows = {r["name"]: r for r in optional_backends()}
    assert set(rows) == {"CHOLMOD (scikit-sparse)", "pyamg", "ngspice", "dask"}
    assert not any(r["present"] for r in rows.values())
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    assert rows["CHOLMOD (scikit-sparse)"]["install"].startswith(
        f"apt-get install libsuitesparse-dev && {pip} 'scikit-sparse")
    assert "make clean venv" in rows["CHOLMOD (scikit-sparse)"]["install"]
    assert rows["pyamg"]["install"] == f"{pip} 'pyamg>=5.0'"
    assert rows["ngspice"]["install"].startswith("apt-get install ngspice")
    assert rows["dask"]["install"].startswith(f"{pip} 'dask[distributed]")
    assert "SuperLU" in rows["CHOLMOD (scikit-sparse)"]["provides"]


def test_optional_backends_present_need_no_command(monkeypatch):
    from kirchnet.cli import optional_backends

    _patch_backends(monkeypatch, present=True)
    rows = optional_backends()
    assert all(r["present"] and r["install"] == "" for r in rows)
    assert {r["name"]: r["detail"] for r in rows}["ngspice"] == "/usr/bin/ngspice"


def test_info_prints_how_to_install_missing_backends(monkeypatch):
    _patch_backends(monkeypatch, present=False)
    r = CliRunner().invoke(app, ["info", "--no-sizes"], terminal_width=400)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "optional backends" in text and "missing" in text
    assert "to install pyamg: " in text and "-m pip install 'pyamg>=5.0'" in text
    assert "to install CHOLMOD (scikit-sparse): apt-get install libsuitesparse-dev" in text
    assert "to install ngspice: apt-get install ngspice" in text
    monkeypatch.undo()
    _patch_backends(monkeypatch, present=True)
    r = CliRunner().invoke(app, ["info", "--no-sizes"], terminal_width=400)
    assert r.exit_code == 0 and "to install" not in r.output


# ------------------------------------------------------------ CLI error text
def test_cli_error_messages_keep_square_brackets(tmp_path):
    """rich markup used to swallow '[...]' in error messages ('needs sizes = ' lost its hint)."""
    from typer.testing import CliRunner

    from kirchnet.cli import app

    cfg = tmp_path / "bad.toml"
    cfg.write_text('name = "x"\n[network]\nkind = "layered"\nsizes = [20]\n[task]\nname = "iris"\n')
    r = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2
    assert "[at least two positive ints]" in r.output


@pytest.mark.slow
def test_two_concurrent_train_commands_never_mix_one_directory(tmp_path):
    """Two real `kirchnet train` processes on one --out: one writes it, the other exits 3."""
    cfg = tmp_path / "long.toml"
    cfg.write_text(LONG.replace("epochs = 60", "epochs = 20"))
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "kirchnet", "train", str(cfg), "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(args + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in ([], ["--seed", "2"])]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, EXIT_EXISTS], results
    loser = next(err for code, err in results if code == EXIT_EXISTS)
    assert "in use by pid" in " ".join(loser.split()) or "already exists" in " ".join(loser.split())
    winner_seed = 1 if results[0][0] == 0 else 2
    assert json.loads((out / "metrics.json").read_text())["seed"] == winner_seed
    assert json.loads((out / "config.json").read_text())["seed"] == winner_seed
    assert (out / "complete.json").is_file() and not (out / ".kirchnet.lock").exists()


def test_experiment_command_locks_and_marks_complete(tmp_path, monkeypatch):
    from kirchnet.experiments import io
    from kirchnet.experiments import reproduce as rep
    from kirchnet.experiments.e4_partial import e4_partial

    tiny = {"e4": lambda out, quick, seed, progress: e4_partial(
        out, True, seed, n_seeds=1, progress=progress, fractions=(1.0,), tasks=("regression",),
        overrides={"epochs": 1})}
    monkeypatch.setattr(rep, "EXPERIMENTS", tiny)
    out = tmp_path / "e4"
    with io.open_output_dir(out, command="kirchnet reproduce"):
        code, err, _ = _invoke("experiment", "e4", "--out", out, "--no-progress")
        assert code == EXIT_EXISTS and "in use" in err and "kirchnet reproduce" in err
    code, err, r = _invoke("experiment", "e4", "--out", out, "--no-progress")
    assert code == 0, r.output
    assert io.read_complete(out)["experiments"] == ["e4"] and (out / "report.md").is_file()
    assert not (out / io.LOCK_NAME).exists()


# ------------------------------------------------------------------ training on devices
DEVICE = TINY.replace("[network]", "[network]\ng_init = [20e-6, 80e-6]").replace(
    "lr = 0.05", "lr = 2e-6\n\n[constraints]\ng_min = 1e-6\n\n[device]\npreset = \"rram\"\ndt = 1.0\n"
                 "params = {c2c = 0.2, drift_nu = 0.01}").replace("epochs = 3", "epochs = 4\ncheckpoint_every = 1")


@pytest.mark.parametrize("data, expect", [
    ({"device": {"preset": "memristor"}}, "device.preset"),
    ({"device": {"params": {"colour": 1.0}}}, "device: params: preset 'rram' has no parameter"),
    ({"device": {"params": {"c2c": -1.0}}}, "c2c"),
    ({"device": {"mode": "magic"}}, "device.mode"),
    ({"device": {}}, "network.g_init .* must lie in the device window"),
    ({"device": {}, "network": {"g_init": [2e-5, 8e-5]}}, "constraints.g_min .* is above the device"),
])
def test_device_config_errors_name_the_key(data, expect):
    from kirchnet.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=expect):
        TrainConfig.from_dict({"task": {"name": "teacher_student"}, **data})


def test_device_config_builds_the_programmer():
    import tomllib

    from kirchnet.config import TrainConfig
    from kirchnet.devices import PulseProgrammer

    cfg = TrainConfig.from_dict(tomllib.loads(DEVICE))
    prog = cfg.device.build(cfg.seed)
    assert isinstance(prog, PulseProgrammer) and prog.protocol == "pulses" and prog.mode == "stochastic"
    assert prog.device.c2c == 0.2 and prog.device.name == "rram" and prog.dt == 1.0 and prog.seed == cfg.seed + 13
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    situ = TrainConfig.from_dict({**tomllib.loads(DEVICE), "device": {"mode": "in_situ", "gain": 1e8}})
    assert situ.device.build().protocol == "in_situ" and situ.device.build().gain == 1e8


def test_train_on_devices_resumes_bit_identically(tmp_path, monkeypatch):
    """kirchnet train with a [device] table, interrupted after a checkpoint, --resume: the
    same bytes as an uninterrupted run (device states and generators restored)."""
    from kirchnet import training

    cfg = tmp_path / "dev.toml"
    cfg.write_text(DEVICE)
    full, cut = tmp_path / "full", tmp_path / "cut"
    code, err, _ = _invoke("train", cfg, "--out", full, "--no-progress")
    assert code == 0, err
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["train_loss"] < metrics["initial_train_loss"]
    save = training.Trainer.save_checkpoint

    def save_then_stop(self, epoch, g, history):
        path = save(self, epoch, g, history)
        if epoch == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(training.Trainer, "save_checkpoint", save_then_stop)
    code, _, _ = _invoke("train", cfg, "--out", cut, "--no-progress")
    assert code != 0 and not (cut / "complete.json").exists()
    index = json.loads((cut / "checkpoint" / "checkpoint.json").read_text())
    assert index["epoch"] == 2 and "__npz__" in json.dumps(index["constraints"])
    monkeypatch.setattr(training.Trainer, "save_checkpoint", save)
    code, err, _ = _invoke("train", cfg, "--out", cut, "--no-progress", "--resume")
    assert code == 0, err
    assert _comparable(cut) == _comparable(full)
