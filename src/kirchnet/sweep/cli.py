"""The ``kirchnet sweep`` command: :func:`register` adds it to a typer app."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .execute import DEFAULT_RUNNER, run_sweep
from .spec import SweepSpec, _label_text, expand, load_sweep
from .store import trusted_records

__all__ = ["register", "quiet_dask_logs"]

#: loggers whose messages (tracebacks of failed tasks, worker restarts, shutdown noise)
#: would otherwise reach the console; every failure is in its run record instead
_NOISY_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")


@contextlib.contextmanager
def quiet_dask_logs():
    """Silence distributed's (and tornado's, asyncio's) console logging for the block."""
    saved = {}
    for name in _NOISY_LOGGERS:
        log = logging.getLogger(name)
        saved[name] = log.level
        log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- CLI


def register(app) -> None:
    """Add the ``sweep`` command to a typer app: ``kirchnet sweep SWEEP.toml [options]``."""
    import typer

    @app.command("sweep")
    def sweep(
        sweep_file: Path = typer.Argument(..., help="sweep TOML file (grid of training runs)"),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler, tcp://HOST:PORT; "
                                             "default: a local cluster of processes"),
        workers: int | None = typer.Option(None, "--workers", min=1, help="local worker processes "
                                           "(default: one per core)"),
        out: Path | None = typer.Option(None, "--out", help="output directory (default: "
                                        "results/sweep-<file name>-<timestamp>)"),
        resume: bool = typer.Option(False, "--resume", help="continue the sweep in --out: skip runs "
                                    "with a trusted result"),
        force: bool = typer.Option(False, "--force", help="write into an existing non-empty --out "
                                   "that is not this sweep's"),
        run_timeout: float | None = typer.Option(None, "--run-timeout", min=0, help="seconds a run may "
                                                 "take before it is stopped and recorded as failed "
                                                 "(default: max(60, 20 x the slowest finished run), "
                                                 "600 before any finished; 0: no limit)"),
        max_runs: int | None = typer.Option(None, "--max-runs", min=0, help="execute at most N pending runs"),
        retries: int | None = typer.Option(None, "--retries", min=0, help="re-executions of a run that "
                                           "raised (default: the file's, 0)"),
        skip_failed: bool = typer.Option(False, "--skip-failed", help="do not re-execute runs recorded "
                                         "as failed"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and what is done; run nothing"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Run a sweep of training runs on Dask, resumable, with a results table and report.

        Exit codes: 0 every run ok, 1 some run failed, 2 invalid sweep file or option,
        3 --out exists (use --resume or --force) or is in use, 4 output not writable,
        130 interrupted (rerun with --out DIR --resume)."""
        from rich.console import Console
        from rich.markup import escape

        from ..cli import exit_code_of
        from ..errors import KirchnetError

        console = Console(stderr=True)

        def say(line: str) -> None:
            console.print(escape(line), highlight=False, soft_wrap=True)

        target = out
        try:
            spec = load_sweep(sweep_file)
            if dry_run:
                _dry_run(spec, out, say, skip_failed)
                return
            with quiet_dask_logs():
                res = run_sweep(spec, out, scheduler=scheduler, workers=workers, max_runs=max_runs,
                                retries=retries, rerun_failed=not skip_failed, progress=progress,
                                run_timeout=run_timeout, resume=resume, force=force, on_failure=say)
        except KirchnetError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exit_code_of(exc)) from None
        except KeyboardInterrupt:
            where = f"--out {target} " if target is not None else "--out DIR "
            say(f"interrupted; finished runs are saved: rerun with {where}--resume to continue")
            raise typer.Exit(130) from None
        say(f"sweep '{spec.sweep.name}': {res.n_runs} runs, {res.n_skipped} already done, "
            f"{res.n_ok} ok, {res.n_failed} failed in {res.wall_s:.1f} s -> {res.out_dir}")
        if res.report is not None:
            say(f"report: {res.report}")
        if res.n_failed:
            raise typer.Exit(1)


def _dry_run(spec: SweepSpec, out, say, skip_failed: bool) -> None:
    runner = spec.sweep.runner or DEFAULT_RUNNER
    runs = expand(spec, validate=runner == DEFAULT_RUNNER)
    records, rejected = trusted_records(out, runs) if out is not None and Path(out).is_dir() else ({}, {})
    for r in runs:
        status = records.get(r.run_id, {}).get("status", "damaged" if r.run_id in rejected else "pending")
        say(f"{r.run_id}  {status:8s} {_label_text(r.labels)}")
    done = sum(records.get(r.run_id, {}).get("status") == "ok" for r in runs)
    where = out if out is not None else "a new results/" + spec.default_out_prefix() + "-<timestamp>"
    say(f"{len(runs)} runs, {done} done, output {where}")
