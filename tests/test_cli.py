"""The kirchnet command line, through the real entry point (``python -m kirchnet``) and CliRunner."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kirchnet.cli import EXIT_CONFIG, EXIT_EXISTS, app

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
    (TINY.replace('name = "teacher_student"', 'name = "mnist"'), "task.name", False),
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
    assert cfg.rule.variant is None and cfg.optimizer.name == "sgd"
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
