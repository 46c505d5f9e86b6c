"""Tests of kirchnet.sweep: grid expansion, validation, Dask execution, fault tolerance.

The cluster tests use a tiny, slow, deterministic runner defined here (pickled by value
so that the Dask worker processes need not import this file) whose metrics are known in
closed form, so tables and aggregates are checked against independently computed numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")  # the 'dist' extra: dask, pandas, pyarrow
pd = pytest.importorskip("pandas")
cloudpickle = pytest.importorskip("cloudpickle")

import dask  # noqa: E402

from kirchnet.sweep.execute import LOCAL_DASK_CONFIG  # noqa: E402
from kirchnet.sweep import (  # noqa: E402
    RunFailed,
    SweepSpec,
    SweepSpecError,
    expand,
    load_sweep,
    run_id_of,
    run_sweep,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------------- helpers


def toy_runner(config: dict, out_dir=None) -> dict:
    """loss = 10 * x + seed (+ 100 for rule 'b'); optional sleep, failure, start log."""
    if config.get("log"):
        with open(config["log"], "a") as fh:
            fh.write(f"start {config['x']} {config['seed']} {config.get('rule', '')} {os.getpid()}\n")
    time.sleep(config.get("sleep", 0.0))
    if config["x"] == config.get("fail_at"):
        raise ValueError(f"bad x={config['x']}")
    if config["x"] == config.get("crash_at") and config["seed"] == 0:  # kill its own worker
        os.kill(os.getpid(), signal.SIGKILL)
    if config.get("flaky_marker"):  # fail on the first attempt only
        marker = Path(config["flaky_marker"]) / f"{config['x']}-{config['seed']}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure")
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "artifact.txt").write_text("ok")
    offset = 100.0 if config.get("rule") == "b" else 0.0
    return {"loss": 10.0 * config["x"] + config["seed"] + offset,
            "nested": {"acc": np.float64(0.5)}, "worker_pid": os.getpid()}


def spec_dict(tmp_path: Path, **base) -> dict:
    return {
        "sweep": {"name": "toy", "seeds": [0, 1, 2]},
        "base": {"x": 0.0, "seed": 0, **base},
        "grid": {"x": [1.0, 2.0]},
    }


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with dask.config.set(LOCAL_DASK_CONFIG):  # as run_sweep's own local cluster
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=50)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def run_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "runs").iterdir())


# --------------------------------------------------------------------------- expansion


def test_expand_grid_variants_seeds(tmp_path):
    write_toml(tmp_path / "train.toml", 'x = 5.0\nrule = "a"\n[opt]\nlr = 0.1\nmom = 0.9\n')
    spec = SweepSpec.from_toml(write_toml(tmp_path / "s.toml", """
[sweep]
name = "t"
n_seeds = 2
base_config = "train.toml"
[base]
opt = { lr = 0.5 }
seed = 7
[grid]
x = [1.0, 2.0, 3.0]
[variants.rule.a]
set = { rule = "a" }
[variants.rule.b]
set = { rule = "b", "opt.beta" = 0.3 }
grid = { "opt.eta" = [0.1, 0.2] }
"""))
    runs = expand(spec, validate=False)
    # (1 + 2 variants) x 3 x values x 2 seeds
    assert len(runs) == 3 * 3 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert spec.axis_names() == ["rule", "opt.eta", "x", "seed"]
    first = runs[0]
    assert first.labels == {"rule": "a", "x": 1.0, "seed": 0}
    # base_config merged with [base] (deep merge keeps opt.mom), seed axis overrides base seed
    assert first.config == {"x": 1.0, "rule": "a", "opt": {"lr": 0.5, "mom": 0.9}, "seed": 0}
    assert [r.labels["seed"] for r in runs[:4]] == [0, 1, 0, 1]  # seeds innermost
    b = [r for r in runs if r.labels["rule"] == "b"]
    assert len(b) == 12
    assert {r.config["opt"]["eta"] for r in b} == {0.1, 0.2}
    assert all(r.config["opt"]["beta"] == 0.3 and r.config["opt"]["mom"] == 0.9 for r in b)
    assert all("eta" not in r.config["opt"] for r in runs if r.labels["rule"] == "a")
    # expansion is deterministic: same ids in the same order
    assert [r.run_id for r in expand(spec, validate=False)] == [r.run_id for r in runs]


def test_run_id_is_hash_of_canonical_config():
    a = {"rule": {"name": "ep", "beta": 0.1}, "seed": 1}
    b = {"seed": 1, "rule": {"beta": 0.1, "name": "ep"}}
    assert run_id_of(a) == run_id_of(b)
    assert len(run_id_of(a)) == 16 and int(run_id_of(a), 16) >= 0
    assert run_id_of(a) != run_id_of({**a, "seed": 2})
    assert run_id_of(a) != run_id_of({"rule": {"name": "ep", "beta": 0.1000001}, "seed": 1})


def test_validator_normalizes_and_dedupes():
    spec = SweepSpec.from_dict({"base": {"x": 1}, "grid": {"y": [1, 2, 3]}})
    # a validator that drops y: every run normalizes to the same config -> one run
    runs = expand(spec, validate=lambda cfg: {"x": cfg["x"]})
    assert len(runs) == 1 and runs[0].run_id == run_id_of({"x": 1})


INVALID = {
    "unknown_key": ("[sweep]\nname = 't'\nseedz = [1]\n", "sweep.seedz: unknown key"),
    "wrong_type": ("[sweep]\nseeds = 'abc'\n", "sweep.seeds"),
    "both_seeds": ("[sweep]\nseeds = [1]\nn_seeds = 2\n", "either 'seeds'"),
    "empty_axis": ("[grid]\nx = []\n", "axis 'x' has no values"),
    "not_a_list": ("[grid]\nx = 3\n", "grid.x"),
    "overlap": ("[grid]\n'rule.beta' = [1, 2]\n[variants.rule.ep]\nset = { rule = { beta = 3 } }\n",
                "both set 'rule.beta'"),
    "seed_on_axis": ("[sweep]\nseeds = [1, 2]\n[grid]\nseed = [3]\n", "both set 'seed'"),
    "bad_toml": ("[sweep\nname = 1\n", "not valid TOML"),
    "variant_key": ("[variants.rule.ep]\nsett = { a = 1 }\n", "variants.rule.ep.sett: unknown key"),
    "missing_base": ("[sweep]\nbase_config = 'nope.toml'\n", "file not found"),
    "report_x": ("[grid]\nx = [1, 2]\n[report]\nx = 'y'\n", "[report] x: ['y'] is not an axis"),
    "report_facet": ("[sweep]\nn_seeds = 2\n[grid]\nx = [1]\n[report]\nfacet = 'seed'\n",
                     "[report] facet: ['seed'] is not an axis"),
    "bad_runner": ("[sweep]\nrunner = 'nocolon'\n", "'runner' must look like"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_sweep_file_gives_clear_error(tmp_path, case):
    text, expected = INVALID[case]
    path = write_toml(tmp_path / "bad.toml", text)
    with pytest.raises(SweepSpecError) as info:
        spec = load_sweep(path)
        expand(spec, validate=False)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_invalid_run_config_names_the_run(tmp_path):
    spec = SweepSpec.from_dict({"sweep": {"seeds": [0, 1]}, "base": {"x": 1}, "grid": {"lr": [0.1, -1.0]}})

    def validate(cfg):
        if cfg["lr"] <= 0:
            raise ValueError("lr must be > 0")
        return cfg

    with pytest.raises(SweepSpecError) as info:
        expand(spec, validate=validate)
    msg = str(info.value)
    assert "2 run config(s)" in msg and "lr=-1.0, seed=0" in msg and "lr must be > 0" in msg
    # nothing is executed for an invalid sweep, not even the valid runs
    with pytest.raises(SweepSpecError):
        run_sweep(spec, tmp_path / "out", runner=toy_runner, validate=validate, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_file_and_cli_error(tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from kirchnet.sweep import register

    with pytest.raises(SweepSpecError, match="not found"):
        load_sweep(tmp_path / "absent.toml")
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop():  # a second command so that typer keeps "sweep" as a sub-command name
        pass

    bad = write_toml(tmp_path / "bad.toml", "[sweep]\nname = 't'\nworkerz = 2\n")
    res = CliRunner().invoke(app, ["sweep", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "sweep.workerz: unknown key" in res.output
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- execution


def test_sweep_results_table_summary_and_failures(tmp_path, client):
    spec = SweepSpec.from_dict({
        "sweep": {"name": "toy", "seeds": [0, 1, 2], "save_artifacts": True},
        "base": {"x": 0.0, "seed": 0, "fail_at": 3.0},
        "grid": {"x": [1.0, 2.0, 3.0]},
        "variants": {"rule": {"a": {"set": {"rule": "a"}}, "b": {"set": {"rule": "b"}}}},
        "report": {"metrics": ["loss"], "facet": "rule"},
    })
    out = tmp_path / "out"
    res = run_sweep(spec, out, client=client, runner=toy_runner, progress=False)
    assert res.n_runs == 18 and res.n_submitted == 18 and res.n_skipped == 0
    assert res.n_ok == 12 and res.n_failed == 6 and not res.interrupted
    # every run persisted once; failures carry their error and traceback
    files = [f for f in run_files(out) if f.endswith(".json")]
    assert len(files) == 18 and not [f for f in run_files(out) if f.startswith(".")]
    for rid, rec in res.records.items():
        on_disk = json.loads((out / "runs" / f"{rid}.json").read_text())
        assert on_disk == rec
        if rec["labels"]["x"] == 3.0:
            assert rec["status"] == "failed"
            assert rec["error"] == "ValueError: bad x=3.0" and "raise ValueError" in rec["traceback"]
            assert not (out / "runs" / rid).exists()
        else:
            assert rec["status"] == "ok"
            assert rec["metrics"]["nested.acc"] == 0.5
            assert (out / "runs" / rid / "artifact.txt").read_text() == "ok"
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["run_id"]) == sorted(res.records) and table["run_id"].is_unique
    assert list(table.columns[:5]) == ["run_id", "status", "rule", "x", "seed"]
    parquet = pd.read_parquet(out / "results.parquet")
    assert len(parquet) == 18
    ok = table[table.status == "ok"]
    expected = 10 * ok["x"] + ok["seed"] + np.where(ok["rule"] == "b", 100.0, 0.0)
    np.testing.assert_allclose(ok["loss"], expected)
    # summary: mean and sample std over seeds 0, 1, 2 -> mean 10 x + 1 (+100), std 1
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and (summary["n"] == 3).all()
    for _, row in summary.iterrows():
        assert row["loss_mean"] == pytest.approx(10 * row["x"] + 1 + (100 if row["rule"] == "b" else 0))
        assert row["loss_std"] == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "12 ok, 6 failed" in report and "## Failed runs" in report and "bad x=3.0" in report
    assert "| a | 1 | 3 | 11 ± 1 |" in report
    assert (out / "figures" / "loss.png").stat().st_size > 1000
    assert "![loss](figures/loss.png)" in report


def test_stop_and_resume_runs_only_the_rest(tmp_path, client):
    log = tmp_path / "log.txt"
    spec = SweepSpec.from_dict({
        "sweep": {"name": "toy", "seeds": [0, 1, 2, 3]},
        "base": {"x": 0.0, "seed": 0, "sleep": 0.2, "log": str(log)},
        "grid": {"x": [1.0, 2.0]},
        "report": {"metrics": ["loss"]},
    })
    out = tmp_path / "out"
    seen = []

    def stop_after_3(rec):
        seen.append(rec["run_id"])
        return len(seen) < 3

    first = run_sweep(spec, out, client=client, runner=toy_runner, progress=False,
                      on_result=stop_after_3)
    assert first.interrupted and first.n_ok == 3
    done = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert sorted(done) == sorted(f"{r}.json" for r in seen)
    assert "interrupted" in (out / "report.md").read_text()
    # let cancelled tasks that were already running finish on the workers
    time.sleep(0.5)
    started_before = log.read_text().count("start")

    second = run_sweep(spec, out, client=client, runner=toy_runner, progress=False, report=False)
    assert second.n_skipped == 3 and second.n_submitted == 5 and second.n_ok == 5
    assert log.read_text().count("start") - started_before == 5
    for name, content in done.items():  # the first results are untouched
        assert (out / "runs" / name).read_bytes() == content
    assert len(list((out / "runs").glob("*.json"))) == 8
    assert pd.read_csv(out / "results.csv")["status"].eq("ok").sum() == 8

    third = run_sweep(spec, out, client=client, runner=toy_runner, progress=False, report=False)
    assert third.n_submitted == 0 and third.n_skipped == 8
    # a damaged result file (e.g. written by hand) does not count as done: that run reruns
    damaged = sorted((out / "runs").glob("*.json"))[0]
    damaged.write_text('{"run_id": ')
    repair = run_sweep(spec, out, client=client, runner=toy_runner, progress=False, report=False)
    assert repair.n_submitted == 1 and repair.n_ok == 1
    assert json.loads(damaged.read_text())["status"] == "ok"
    # extending the sweep with a seed executes only the new runs
    spec2 = SweepSpec.from_dict({**spec.model_dump(),
                                 "sweep": {"name": "toy", "seeds": [0, 1, 2, 3, 4]}})
    fourth = run_sweep(spec2, out, client=client, runner=toy_runner, progress=False, max_runs=1,
                       report=False)
    assert fourth.n_skipped == 8 and fourth.n_submitted == 1 and fourth.n_missing == 1


def test_retries_rerun_a_failed_run(tmp_path, client):
    (tmp_path / "m").mkdir()
    spec = SweepSpec.from_dict({
        "sweep": {"name": "flaky", "seeds": [0], "retries": 1},
        "base": {"x": 1.0, "seed": 0, "flaky_marker": str(tmp_path / "m")},
        "grid": {"x": [1.0, 2.0]},
    })
    # through the scheduler address, as with --scheduler tcp://HOST:PORT
    res = run_sweep(spec, tmp_path / "a", scheduler=client.scheduler.address, runner=toy_runner,
                    progress=False)
    assert res.n_ok == 2 and res.n_failed == 0
    assert client.scheduler.address in (tmp_path / "a" / "report.md").read_text()
    # without retries the transient failure is recorded, and a rerun re-executes it
    for p in (tmp_path / "m").iterdir():
        p.unlink()
    res = run_sweep(spec, tmp_path / "b", client=client, runner=toy_runner, progress=False, retries=0)
    assert res.n_failed == 2
    assert {r["error"] for r in res.records.values()} == {"RuntimeError: transient failure"}
    skip = run_sweep(spec, tmp_path / "b", client=client, runner=toy_runner, progress=False,
                     rerun_failed=False)
    assert skip.n_submitted == 0
    again = run_sweep(spec, tmp_path / "b", client=client, runner=toy_runner, progress=False)
    assert again.n_submitted == 2 and again.n_ok == 2
    assert all(r["status"] == "ok" for r in again.records.values())


def test_run_failed_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(RunFailed("KeyError", "'a'", "tb")))
    assert str(err) == "KeyError: 'a'" and err.traceback == "tb"


def test_killed_worker_run_is_retried_and_nothing_lost(tmp_path, client):
    log = tmp_path / "log.txt"
    log.touch()
    spec = SweepSpec.from_dict({
        "sweep": {"name": "kill", "seeds": [0, 1, 2]},
        "base": {"x": 0.0, "seed": 0, "sleep": 1.0, "log": str(log)},
        "grid": {"x": [1.0, 2.0]},
    })
    out = tmp_path / "out"
    killed: list[tuple[str, int]] = []

    def killer():
        deadline = time.time() + 30
        while time.time() < deadline and not killed:
            lines = log.read_text().splitlines()
            if len(lines) >= 3:  # the third run has just started: kill its worker mid-run
                parts = lines[2].split()
                x, seed, pid = parts[1], parts[2], parts[-1]
                os.kill(int(pid), signal.SIGKILL)  # its run sleeps 1 s: caught mid-run
                killed.append((f"{x} {seed}", int(pid)))
            time.sleep(0.02)

    client.wait_for_workers(2, timeout=60)
    pids = set(client.run(os.getpid).values())
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    res = run_sweep(spec, out, client=client, runner=toy_runner, progress=False)
    thread.join(5)
    assert killed, "the killer thread did not fire"
    (key, pid), = killed
    assert pid in pids  # a real worker process was killed
    assert res.n_ok == 6 and res.n_failed == 0 and res.n_missing == 0
    files = run_files(out)
    assert files == sorted(f"{r}.json" for r in res.records)  # exactly one file per run
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6 and table["run_id"].is_unique and (table.status == "ok").all()
    # the run caught by the kill was restarted and finished elsewhere
    rec = next(r for r in res.records.values()
               if f"{r['labels']['x']} {r['labels']['seed']}" == key)
    assert rec["metrics"]["worker_pid"] != pid
    starts = [" ".join(line.split()[1:3]) for line in log.read_text().splitlines()]
    assert starts.count(key) == 2
    assert set(starts) == {f"{x} {s}" for x in (1.0, 2.0) for s in (0, 1, 2)}


# --------------------------------------------------------------------------- real training runs

REAL = """
[sweep]
name = "real"
seeds = [0, 1]

[base]
epochs = 4
network = { kind = "lattice", rows = 4, cols = 4 }
task = { name = "teacher_student", n_train = 16, n_test = 16 }
optimizer = { name = "adam", lr = 0.05 }

[variants.rule.analytical]
set = { "rule.name" = "analytical" }
[variants.rule.ep]
set = { "rule.name" = "ep", "rule.variant" = "centered" }
grid = { "rule.beta" = [0.2] }

[report]
metrics = ["train_loss"]
"""


def test_real_training_runs(tmp_path, client):
    from kirchnet.config import ConfigError

    spec = load_sweep(write_toml(tmp_path / "real.toml", REAL))
    runs = expand(spec)  # validated and normalized by TrainConfig
    assert len(runs) == 4 and all(r.config["epochs"] == 4 for r in runs)
    # normalized: values equal to the schema defaults are left out (rule "analytical")
    ep = {"name": "ep", "beta": 0.2, "variant": "centered"}
    assert [r.config.get("rule") for r in runs] == [None, None, ep, ep]
    assert all(r.config["task"] == {"name": "teacher_student", "n_train": 16, "n_test": 16}
               for r in runs)
    res = run_sweep(spec, tmp_path / "out", client=client, progress=False)
    assert res.n_ok == 4, [r.get("error") for r in res.records.values()]
    for rec in res.records.values():
        m = rec["metrics"]
        assert m["epochs"] == 4 and m["metric.seed" if "metric.seed" in m else "seed"] == rec["labels"]["seed"]
        assert m["train_loss"] < m["initial_train_loss"]
    # a centered current nudge is exact in a linear network: EP == analytical per seed
    by = {(r["labels"]["rule"], r["labels"]["seed"]): r["metrics"]["train_loss"] for r in res.records.values()}
    for seed in (0, 1):
        assert by[("ep", seed)] == pytest.approx(by[("analytical", seed)], rel=1e-6)
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert {"train_loss", "test_loss", "metric.seed", "metric.rule"} <= set(table.columns)
    # an impossible value in the base config is reported with the run and the key
    bad = REAL.replace("epochs = 4", "epochs = 0")
    with pytest.raises(SweepSpecError) as info:
        expand(load_sweep(write_toml(tmp_path / "bad.toml", bad)))
    assert "epochs" in str(info.value) and "rule=analytical" in str(info.value)
    assert isinstance(info.value, ConfigError)


@pytest.mark.slow
def test_cli_entry_point_runs_and_resumes(tmp_path):
    import subprocess

    sweep_file = write_toml(tmp_path / "real.toml", REAL.replace("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kirchnet", "sweep", str(sweep_file), "--out", str(out),
           "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    assert "2 runs, 0 already done, 2 ok, 0 failed" in first.stderr
    assert len(list((out / "runs").glob("*.json"))) == 2 and (out / "report.md").exists()
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 3 and "--resume" in refused.stderr  # never overwritten silently
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "2 runs, 2 already done, 0 ok" in again.stderr
    from typer.testing import CliRunner

    from kirchnet.cli import app

    dry = CliRunner().invoke(app, ["sweep", str(sweep_file), "--out", str(out), "--dry-run"])
    assert dry.exit_code == 0 and dry.output.count(" ok ") == 2
    bad = write_toml(tmp_path / "bad.toml", REAL.replace("[report]", "[reportt]"))
    res = CliRunner().invoke(app, ["sweep", str(bad)])
    assert res.exit_code == 2 and "reportt: unknown key" in res.output


def _swallowed_ctrl_c():
    """SIGINT to this process, its KeyboardInterrupt caught and dropped (as Python drops one
    raised inside a garbage-collector callback)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)  # (delivered here)
    except KeyboardInterrupt:
        pass


def test_sigint_is_recorded_even_where_its_exception_is_swallowed():
    import gc

    from kirchnet.sweep.execute import _CtrlC

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    before, callbacks = signal.getsignal(signal.SIGINT), list(gc.callbacks)
    with _CtrlC() as ctrl_c:
        assert not ctrl_c.is_set()
        _swallowed_ctrl_c()
        assert ctrl_c.is_set()
    assert signal.getsignal(signal.SIGINT) is before and gc.callbacks == callbacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored SIGINT stays ignored
    try:
        with _CtrlC() as ctrl_c:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            assert not ctrl_c.is_set()
    finally:
        signal.signal(signal.SIGINT, before)


class _FakeCluster:
    """A LocalCluster stand-in that takes a Ctrl-C at start (``at_start`` of them) or close."""

    def __init__(self, log, at_start=0, at_close=0, fail_start=False):
        self.log, self.at_close = log, at_close
        for _ in range(at_start):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a signal interrupts the sleep: its handler has run after it
        if fail_start:  # a worker took the same Ctrl-C in the middle of its start
            raise RuntimeError("Nanny failed to start.")
        log.append("started")

    def close(self):
        for _ in range(self.at_close):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        self.log.append("cluster closed")


class _FakeClient:
    def __init__(self, cluster):
        self.log = cluster.log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.log.append("client closed")


@pytest.mark.parametrize("at_start,at_close,body_raises,fail_start", [
    (1, 0, False, False), (0, 1, False, False), (2, 0, False, False), (0, 1, True, False),
    (1, 0, False, True), (0, 0, False, True)])
def test_ctrl_c_while_the_local_cluster_starts_or_closes(monkeypatch, at_start, at_close, body_raises,
                                                         fail_start):
    """A Ctrl-C in the middle of LocalCluster's start or close left workers that
    distributed's exit handler could not close (a traceback after "interrupted"): one Ctrl-C
    there is held until the cluster is up (then closed) or closed, and raised after; a
    second one raises at once."""
    import distributed

    from kirchnet.sweep.execute import _client

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    before = signal.getsignal(signal.SIGINT)
    log: list[str] = []
    monkeypatch.setattr(distributed, "LocalCluster",
                        lambda **kw: _FakeCluster(log, at_start, at_close, fail_start))
    monkeypatch.setattr(distributed, "Client", _FakeClient)
    body = []
    if fail_start and not at_start:  # a failed start without a Ctrl-C is the error it is
        with pytest.raises(RuntimeError, match="Nanny failed to start"):
            with _client(None, 1, None, 1):
                pass
        return
    with pytest.raises(ValueError if body_raises else KeyboardInterrupt):  # an error in flight wins
        with _client(None, 1, None, 1) as (c, where):
            body.append(where)
            if body_raises:
                raise ValueError("the body's error")
    assert signal.getsignal(signal.SIGINT) is before
    if at_start == 2 or fail_start:  # insisted, or the start failed: nothing to close
        assert log == [] and body == []
    elif at_start == 1:  # the start completed, the body never ran, all closed
        assert log == ["started", "client closed", "cluster closed"] and body == []
    else:  # the close completed, then the Ctrl-C
        assert log == ["started", "client closed", "cluster closed"] and len(body) == 1


def test_ctrl_c_while_the_local_cluster_closes_inside_a_callers_except_block(monkeypatch):
    """A Ctrl-C held during the close is raised after it also where the sweep runs inside a
    caller's ``except`` block (the exception it handles is not one on its way out)."""
    import distributed

    from kirchnet.sweep.execute import _client

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    log: list[str] = []
    monkeypatch.setattr(distributed, "LocalCluster", lambda **kw: _FakeCluster(log, at_close=1))
    monkeypatch.setattr(distributed, "Client", _FakeClient)
    try:
        raise LookupError("handled by the caller")
    except LookupError:
        with pytest.raises(KeyboardInterrupt):
            with _client(None, 1, None, 1):
                pass
    assert log == ["started", "client closed", "cluster closed"]


def test_ctrl_c_during_the_imports_before_the_loop_is_held_then_raised(monkeypatch, tmp_path):
    """The imports before the loop (distributed, pandas, pyplot) are not interrupted half-way
    (a half-imported distributed or C extension crashed the interpreter at exit): a Ctrl-C
    there is raised once they are done, before any cluster starts."""
    import kirchnet.sweep.execute as ex

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    log: list[str] = []

    def preload_with_ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        log.append("imported")

    def no_cluster(*args):
        log.append("cluster started")
        raise AssertionError("no cluster after a Ctrl-C")

    monkeypatch.setattr(ex, "preload_report_libraries", preload_with_ctrl_c)
    monkeypatch.setattr(ex, "_client", no_cluster)
    spec = SweepSpec.from_dict({"sweep": {"name": "toy"}, "base": {"x": 0.0, "seed": 0},
                                "grid": {"x": [1.0]}})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "out", runner=toy_runner, progress=False)
    assert log == ["imported"]


def test_local_cluster_workers_ignore_ctrl_c():
    """A terminal's Ctrl-C reaches the whole process group: the sweep's own workers ignore it
    (worker_setup, Dask's preload), the command stops the sweep. Before, each worker died
    with a KeyboardInterrupt traceback on the console."""
    from kirchnet.sweep.execute import _client
    from kirchnet.sweep.worker_setup import ignore_ctrl_c

    with _client(None, 1, None, 1) as (c, where):
        ignored = c.run(lambda: signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
    assert list(ignored.values()) == [True], ignored
    done = []  # outside the main thread nothing changes
    t = threading.Thread(target=lambda: done.append(ignore_ctrl_c()))
    before = signal.getsignal(signal.SIGINT)
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGINT) is before and done == [before is signal.SIG_IGN]


def test_held_ctrl_c_leaves_an_ignored_sigint_ignored():
    from kirchnet.sweep.execute import _HeldCtrlC

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _HeldCtrlC() as held:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert not held.seen and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("where", ["gc callback", "weakref callback"])
def test_ctrl_c_inside_the_garbage_collector_is_raised_after_it(capfd, where):
    """A Ctrl-C that lands where the garbage collector runs code (a gc callback as
    distributed's GC diagnosis, a weakref callback of a collected object) is raised again
    outside it, not printed and dropped."""
    import gc
    import weakref

    from kirchnet.sweep.execute import _CtrlC

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    fired = []

    def interrupt(*args):
        if not fired:
            fired.append(where)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # (delivered here, inside the collector's call)

    class Node:
        pass

    def on_gc(phase, info):
        if phase == "start":
            interrupt()

    with _CtrlC() as ctrl_c:
        if where == "gc callback":
            gc.callbacks.append(on_gc)
        try:
            with pytest.raises(KeyboardInterrupt):
                if where == "weakref callback":
                    cycle = Node()
                    cycle.self = cycle  # freed only by a collection
                    ref = weakref.ref(cycle, interrupt)  # noqa: F841
                    del cycle
                gc.collect()
                time.sleep(5.0)  # the interrupt comes again here
        finally:
            if on_gc in gc.callbacks:
                gc.callbacks.remove(on_gc)
    assert fired and ctrl_c.is_set()
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_ctrl_c_pending_when_the_loop_stops_does_not_interrupt_the_cleanup():
    """A Ctrl-C that landed in the collector is delivered again 50 ms later; where the loop
    has stopped meanwhile (disarm: its cleanup writes the report) it is not, and stays
    recorded (the sweep raises KeyboardInterrupt after its outputs)."""
    import gc

    from kirchnet.sweep.execute import _CtrlC

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")

    def on_gc(phase, info):
        if phase == "start" and on_gc in gc.callbacks:
            gc.callbacks.remove(on_gc)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # (delivered here, inside the collector's call)

    with _CtrlC() as ctrl_c:
        gc.callbacks.append(on_gc)
        gc.collect()
        ctrl_c.disarm()  # within the 50 ms
        time.sleep(0.3)  # no KeyboardInterrupt
        assert ctrl_c.is_set()

def test_a_dropped_ctrl_c_is_delivered_again():
    """(the sweep's watchdog) A recorded Ctrl-C whose KeyboardInterrupt was dropped where
    _CtrlC cannot see it comes again after a second, but not once the loop has stopped."""
    from kirchnet.sweep.execute import _CtrlC

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    with _CtrlC() as ctrl_c:
        _swallowed_ctrl_c()
        ctrl_c.redeliver(after=10.0)  # too early: nothing
        time.sleep(0.1)
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.redeliver(after=0.0)
            time.sleep(5.0)
        ctrl_c.disarm()  # the loop has stopped: its cleanup is not interrupted
        ctrl_c.redeliver(after=0.0)
        time.sleep(0.2)


PRELOAD_PROBE = """
import sys
from distributed import Client
from kirchnet.sweep import SweepSpec, run_sweep

LIBS = ("pandas", "pandas.io.parquet", "pyarrow", "matplotlib.pyplot")


def runner(config, out_dir=None):
    return {"loss": float(config["x"])}


def first_result(rec, seen=[]):
    if not seen:
        seen.append(1)
        print("at the first result:", sorted(m for m in LIBS if m in sys.modules))
    return True


spec = SweepSpec.from_dict({"sweep": {"name": "p"}, "base": {"x": 0.0, "seed": 0},
                            "grid": {"x": [1.0, 2.0]}})
print("before:", sorted(m for m in LIBS if m in sys.modules))
with Client(processes=False, dashboard_address=":0") as c:
    run_sweep(spec, sys.argv[1], client=c, runner=runner, progress=False,
              report=sys.argv[2] == "report", on_result=first_result)
"""


@pytest.mark.parametrize("report", ["report", "tables"])
def test_output_libraries_are_imported_before_the_loop(tmp_path, report):
    """A Ctrl-C in the middle of a first ``import pandas`` (the loop's periodic table write)
    left a half-initialized pandas, and the report after it failed with a traceback (seen in
    CI): the libraries the outputs need are imported before the first run is collected."""
    import subprocess

    pytest.importorskip("matplotlib")
    script = tmp_path / "probe.py"
    script.write_text(PRELOAD_PROBE)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), report],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "before: []" in done.stdout
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("at the first result:"))
    expected = ["pandas"]
    try:
        import pyarrow  # noqa: F401

        expected += ["pandas.io.parquet", "pyarrow"]
    except ImportError:
        pass
    if report == "report":
        expected.append("matplotlib.pyplot")
    assert line == f"at the first result: {sorted(expected)}"


def test_a_swallowed_ctrl_c_still_stops_the_sweep(tmp_path, client):
    """A Ctrl-C whose KeyboardInterrupt is lost (distributed's gc callback) stops the sweep
    at the next finished run: interrupted, the finished runs kept, KeyboardInterrupt raised."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    spec = SweepSpec.from_dict({"sweep": {"name": "toy", "seeds": [0, 1, 2, 3]},
                                "base": {"x": 0.0, "seed": 0, "sleep": 0.3}, "grid": {"x": [1.0, 2.0, 3.0]}})
    out = tmp_path / "out"
    seen = []

    def ctrl_c_after_2(rec):
        seen.append(rec["run_id"])
        if len(seen) == 2:
            _swallowed_ctrl_c()
        return True

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, client=client, runner=toy_runner, progress=False, on_result=ctrl_c_after_2)
    assert 2 <= len(seen) < 12
    assert len(list((out / "runs").glob("*.json"))) == len(seen)
    assert "interrupted" in (out / "report.md").read_text()


SLOW_RUNNER = """
import os, time
def run(config, out_dir=None):
    time.sleep(config["sleep"])
    return {"loss": config["x"] + config["seed"], "worker_pid": os.getpid()}
"""


@pytest.mark.slow
def test_cli_ctrl_c_then_resume(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) mid-sweep: exit 130, no
    traceback (the workers ignore it), finished runs kept, the rerun does the rest."""
    import subprocess

    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "slowrun.py").write_text(SLOW_RUNNER)
    sweep_file = write_toml(tmp_path / "slow.toml", """
[sweep]
name = "slow"
seeds = [0, 1, 2, 3]
runner = "slowrun:run"
[base]
x = 0
seed = 0
sleep = 0.5
[grid]
x = [1, 2, 3]
""")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "mod"), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "kirchnet", "sweep", str(sweep_file), "--out", str(out),
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and len(list(out.glob("runs/*.json"))) < 3:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the command and its workers
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert f"rerun with --out {out} --resume" in err and "Traceback" not in err
    kept = {p.name: p.read_bytes() for p in out.glob("runs/*.json")}
    assert 3 <= len(kept) < 12
    again = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"12 runs, {len(kept)} already done, {12 - len(kept)} ok, 0 failed" in again.stderr
    for name, content in kept.items():
        assert (out / "runs" / name).read_bytes() == content
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 12 and table["run_id"].is_unique
    np.testing.assert_allclose(table["loss"], table["x"] + table["seed"])


def test_bad_run_sweep_arguments(tmp_path):
    spec = SweepSpec.from_dict({"base": {"x": 1.0, "seed": 0}, "grid": {"x": [1.0]}})
    for kwargs, msg in [({"scheduler": "tcp://127.0.0.1:1", "workers": 2}, "local cluster"),
                        ({"workers": 0}, "workers must be >= 1"),
                        ({"retries": -1}, "retries must be >= 0"),
                        ({"max_runs": -1}, "max_runs must be >= 0")]:
        with pytest.raises(SweepSpecError, match=msg):
            run_sweep(spec, tmp_path / "o", runner=toy_runner, progress=False, **kwargs)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_run_that_kills_its_worker_is_recorded_failed(tmp_path):
    """A run that crashes its worker every time ends as failed (KilledWorker); the
    others, including those whose results were lost with a dead worker, all finish."""
    from distributed import Client, LocalCluster

    spec = SweepSpec.from_dict({
        "sweep": {"name": "crash", "seeds": [0, 1]},
        "base": {"x": 0.0, "seed": 0, "crash_at": 2.0},
        "grid": {"x": [1.0, 2.0, 3.0]},
        "report": {"metrics": ["loss"]},
    })
    with dask.config.set({**LOCAL_DASK_CONFIG, "distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=50)
    with cluster, Client(cluster) as c:
        res = run_sweep(spec, tmp_path / "out", client=c, runner=toy_runner, progress=False)
    assert res.n_ok == 5 and res.n_failed == 1 and res.n_missing == 0, [(r["labels"], r.get("error", "")[:150]) for r in res.records.values()]
    for rec in res.records.values():
        if rec["labels"] == {"x": 2.0, "seed": 0}:
            assert rec["status"] == "failed" and rec["error"].startswith("KilledWorker")
        else:
            assert rec["status"] == "ok"
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 6
    assert "1 failed" in (tmp_path / "out" / "report.md").read_text()


# --------------------------------------------------------------------------- output safety


def test_untrusted_run_records_execute_again(tmp_path, client):
    spec = SweepSpec.from_dict(spec_dict(tmp_path))
    out = tmp_path / "out"
    first = run_sweep(spec, out, client=client, runner=toy_runner, progress=False, report=False)
    assert first.n_ok == 6 and (out / "complete.json").is_file()
    rids = sorted(first.records)
    keep = {rid: (out / "runs" / f"{rid}.json").read_bytes() for rid in rids[3:]}
    # a bare "ok" without metrics, a record whose config does not hash to its id, a
    # record of another run and an unknown status are not trusted: those runs execute again
    (out / "runs" / f"{rids[0]}.json").write_text(json.dumps({"run_id": rids[0], "status": "ok"}))
    forged = {**first.records[rids[1]], "config": {**first.records[rids[1]]["config"], "x": 99.0}}
    (out / "runs" / f"{rids[1]}.json").write_text(json.dumps(forged))
    (out / "runs" / f"{rids[2]}.json").write_text(json.dumps({**first.records[rids[3]]}))
    second = run_sweep(spec, out, client=client, runner=toy_runner, progress=False, report=False)
    assert second.n_submitted == 3 and second.n_ok == 3 and second.n_skipped == 3
    for rid in rids[:3]:
        rec = json.loads((out / "runs" / f"{rid}.json").read_text())
        assert rec["status"] == "ok" and rec["metrics"]["loss"] == 10 * rec["labels"]["x"] + rec["labels"]["seed"]
    for rid, content in keep.items():
        assert (out / "runs" / f"{rid}.json").read_bytes() == content
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6 and table["loss"].notna().all()


def test_sweep_output_directory_refusal_lock_and_defaults(tmp_path, client, monkeypatch):
    from kirchnet.experiments import io

    spec = SweepSpec.from_dict(spec_dict(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.md").write_text("someone else's report")
    # resume=False: an existing non-empty directory is refused, untouched
    with pytest.raises(io.OutputExistsError, match="--force"):
        run_sweep(spec, other, client=client, runner=toy_runner, progress=False, resume=False)
    # resume=True into a directory that holds no (or another) sweep: refused too
    with pytest.raises(io.OutputExistsError, match="not sweep 'toy'"):
        run_sweep(spec, other, client=client, runner=toy_runner, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["report.md"]
    assert (other / "report.md").read_text() == "someone else's report"
    # a second sweep on a directory in use fails at once, naming the holder
    out = tmp_path / "out"
    with io.open_output_dir(out, command="kirchnet sweep first.toml"):
        t = time.perf_counter()
        with pytest.raises(io.OutputLockedError, match="kirchnet sweep first.toml"):
            run_sweep(spec, out, client=client, runner=toy_runner, progress=False)
        assert time.perf_counter() - t < 5
    # default directories: results/sweep-<file name>-<timestamp>, never shared
    monkeypatch.chdir(tmp_path)
    path = write_toml(tmp_path / "grid.toml", "[sweep]\nseeds = [0]\n[base]\nx = 1.0\nseed = 0\n")
    a = run_sweep(load_sweep(path), client=client, runner=toy_runner, progress=False, report=False)
    b = run_sweep(load_sweep(path), client=client, runner=toy_runner, progress=False, report=False)
    assert a.out_dir != b.out_dir and a.out_dir.parent == b.out_dir.parent == Path("results")
    assert a.out_dir.name.startswith("sweep-grid-") and b.n_skipped == 0
    assert (a.out_dir / "complete.json").is_file() and (b.out_dir / "complete.json").is_file()


@pytest.mark.slow
def test_hung_run_times_out_and_the_sweep_goes_on(tmp_path):
    """A run that never returns is stopped after run_timeout: recorded failed with reason
    'timeout', its worker restarted; every other run finishes; bounded in time."""
    from distributed import Client, LocalCluster

    spec = SweepSpec.from_dict({
        "sweep": {"name": "hang", "seeds": [0, 1]},
        "base": {"x": 0.0, "seed": 0, "sleep": 0.1},
        "grid": {"x": [1.0, 2.0, 3.0]},
        "variants": {"hang": {"yes": {"set": {"hang_at": 2.0}}}},
    })
    lines = []
    with dask.config.set(LOCAL_DASK_CONFIG):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=50)
    t0 = time.perf_counter()
    with cluster, Client(cluster) as c:
        res = run_sweep(spec, tmp_path / "out", client=c, runner=hanging_runner, progress=False,
                        run_timeout=2.0, on_failure=lines.append)
    wall = time.perf_counter() - t0
    assert wall < 45, wall
    assert res.n_ok == 5 and res.n_failed == 1 and res.n_missing == 0
    for rec in res.records.values():
        if rec["labels"]["x"] == 2.0 and rec["labels"]["seed"] == 0:
            assert rec["status"] == "failed" and rec["reason"] == "timeout" and "2 s" in rec["error"]
        else:
            assert rec["status"] == "ok"
    assert len(lines) == 1 and "timeout" in lines[0] and "x=2.0, seed=0" in lines[0]
    assert (tmp_path / "out" / "complete.json").is_file()  # every run has a result


def hanging_runner(config: dict, out_dir=None) -> dict:
    if config["x"] == config.get("hang_at") and config["seed"] == 0:
        time.sleep(1000)  # a frozen run
    return toy_runner(config, out_dir)


def test_default_run_timeout_comes_from_the_finished_runs():
    from kirchnet.sweep import default_run_timeout

    assert default_run_timeout([]) == 600.0
    assert default_run_timeout([0.1, 0.5, None]) == 60.0
    assert default_run_timeout([4.0, 10.0]) == 200.0


HANG_RUNNER = """
import os, time
def run(config, out_dir=None):
    if config["x"] == 2:
        raise ValueError("x = 2 is not allowed")
    if config["x"] == 3:
        time.sleep(1000)
    return {"loss": config["x"] + config["seed"]}
"""


@pytest.mark.slow
def test_cli_failures_and_timeouts_give_one_clean_line_each(tmp_path):
    """The real command: a run that raises and a run that hangs end as failed (exit 1), one
    console line each, no Dask log lines or tracebacks; the details are in the run records."""
    import subprocess

    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "hangrun.py").write_text(HANG_RUNNER)
    sweep_file = write_toml(tmp_path / "hang.toml", """
[sweep]
name = "hang"
seeds = [0]
runner = "hangrun:run"
[base]
x = 0
seed = 0
[grid]
x = [1, 2, 3]
""")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "mod"), "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "kirchnet", "sweep", str(sweep_file), "--out", str(out),
                        "--workers", "1", "--no-progress", "--run-timeout", "3"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - t0 < 60
    assert r.returncode == 1, r.stderr
    failed = [line for line in r.stderr.splitlines() if " failed (" in line]
    assert len(failed) == 2, r.stderr
    assert any("ValueError: x = 2 is not allowed" in line for line in failed)
    assert any("timeout" in line for line in failed)
    assert "Traceback" not in r.stderr and "distributed." not in r.stderr, r.stderr
    assert "3 runs, 0 already done, 1 ok, 2 failed" in r.stderr
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    by_x = {rec["labels"]["x"]: rec for rec in records}
    assert "raise ValueError" in by_x[2]["traceback"] and by_x[3]["reason"] == "timeout"
