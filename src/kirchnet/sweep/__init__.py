"""Experiment sweeps on Dask: expand a grid of training runs, execute, persist, resume.

A sweep file (TOML) holds a base training config and grid axes; :func:`expand` turns
it into independent runs, each identified by a stable ``run_id`` (the first 16 hex
digits of the SHA-256 of the canonical JSON of its validated config, values equal to
the schema defaults left out). :func:`run_sweep` executes the runs that have no result
yet on a Dask cluster (by default a local cluster of single-threaded processes; or an
existing scheduler), each as one call ``runner(config, out_dir) -> dict of metrics``
(default: :func:`kirchnet.experiments.run.run_training`); the client persists every
finished run at once,
atomically, as ``OUT/runs/<run_id>.json`` (temp file + ``os.replace``). The results
table (``results.csv`` / ``results.parquet``), the aggregated ``summary.csv`` (mean and
sample std across seeds) and ``report.md`` with figures are rebuilt from those files.

Fault tolerance:

- resume: a run whose ``runs/<run_id>.json`` is trusted (valid against the record schema:
  status ``"ok"`` with metrics, or ``"failed"`` with an error; its config hashes to its run
  id) and says ``"ok"`` is never executed again (``"failed"`` ones are, unless
  ``rerun_failed=False``; untrusted ones always are);
- output directory: locked for the whole sweep (a second sweep on it fails at once);
  ``complete.json`` is written when every run has a result;
- a run still running after ``run_timeout`` seconds is recorded as failed with reason
  ``"timeout"``; its worker process is killed (the nanny restarts it) and the sweep goes on;
- a worker killed mid-run: the scheduler re-runs the lost run on another worker, and
  results the dead worker held are recomputed; a run whose workers keep dying (more than
  ``distributed.scheduler.allowed-failures`` times, on two fresh submissions) is
  recorded as failed with ``KilledWorker``; nothing else is lost because every other
  finished run is already on disk;
- a run that raises is retried ``retries`` times (Dask ``retries=``), then recorded as
  ``"failed"`` with its error and traceback; the sweep goes on.

Sweep file schema (unknown keys are errors)::

    [sweep]
    name = "rules-vs-tunable"      # used for the default output directory
    seeds = [0, 1, 2]              # or n_seeds = 3 (seeds 0..2); the seed axis
    seed_key = "seed"              # dotted path of the seed in the run config
    retries = 0                    # re-executions of a run that raised
    base_config = "train.toml"     # optional, relative to the sweep file
    runner = "pkg.module:function" # optional; default: kirchnet's run_training
    save_artifacts = false         # pass OUT/runs/<run_id>/ as the run's out_dir

    [base]                         # the base TrainConfig (merged over base_config)
    ...

    [grid]                         # cartesian axes: dotted config path -> values
    "tunable.fraction" = [1.0, 0.5]

    [variants.rule.ep]             # a labelled axis of coupled settings: axis "rule",
    set = { "rule.name" = "ep" }   #   value "ep"; ``set`` patches the config,
    grid = { "rule.beta" = [0.01, 0.1] }   # ``grid`` adds axes inside this variant only
    [variants.rule.analytical]
    set = { "rule.name" = "analytical" }

    [report]
    metrics = ["test_loss"]        # default: every numeric metric that varies
    x = "tunable.fraction"         # x axis of the plots (default: first numeric axis)
    facet = ["task.name"]          # one panel per value of these axes
    logx = false                   # default: log scale when x spans >= 20x

Run order: variants axes, then grid axes, then seeds (the innermost).
"""

from .cli import register
from .execute import DEFAULT_RUNNER, RunFailed, SweepResult, default_run_timeout, run_sweep, train_runner
from .report import summarize, write_report
from .spec import (
    RunSpec,
    SweepError,
    SweepSpec,
    SweepSpecError,
    expand,
    load_sweep,
    run_id_of,
)
from .store import build_table, load_records, record_problem

__all__ = [
    "SweepError", "SweepSpecError", "RunFailed", "SweepSpec", "RunSpec", "SweepResult",
    "load_sweep", "expand", "run_sweep", "load_records", "build_table", "summarize",
    "write_report", "train_runner", "run_id_of", "register", "DEFAULT_RUNNER", "default_run_timeout",
    "record_problem",
]
