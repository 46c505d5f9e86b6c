"""The ``kirchnet sweep`` command: :func:`register` adds it to a typer app."""

from __future__ import annotations

from pathlib import Path

from .execute import DEFAULT_RUNNER, run_sweep
from .spec import SweepError, SweepSpec, SweepSpecError, _label_text, expand, load_sweep
from .store import load_records

__all__ = ["register"]


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
                                        "results/sweep-<name>); rerun with the same one to resume"),
        max_runs: int | None = typer.Option(None, "--max-runs", min=0, help="execute at most N pending runs"),
        retries: int | None = typer.Option(None, "--retries", min=0, help="re-executions of a run that "
                                           "raised (default: the file's, 0)"),
        skip_failed: bool = typer.Option(False, "--skip-failed", help="do not re-execute runs recorded "
                                         "as failed"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and what is done; run nothing"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ) -> None:
        """Run a sweep of training runs on Dask, resumable, with a results table and report."""
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=True)
        try:
            spec = load_sweep(sweep_file)
            if dry_run:
                _dry_run(spec, out, console, skip_failed)
                return
            res = run_sweep(spec, out, scheduler=scheduler, workers=workers, max_runs=max_runs,
                            retries=retries, rerun_failed=not skip_failed, progress=progress)
        except SweepError as exc:  # exit status 2: invalid sweep file, 1: anything else
            console.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, SweepSpecError) else 1) from None
        except KeyboardInterrupt:
            console.print("interrupted; finished runs are saved: rerun the same command to resume")
            raise typer.Exit(130) from None
        console.print(f"sweep '{spec.sweep.name}': {res.n_runs} runs, {res.n_skipped} already done, "
                      f"{res.n_ok} ok, {res.n_failed} failed in {res.wall_s:.1f} s -> {res.out_dir}",
                      highlight=False, soft_wrap=True)
        if res.report is not None:
            console.print(f"report: {res.report}", highlight=False, soft_wrap=True)
        if res.n_failed:
            raise typer.Exit(1)


def _dry_run(spec: SweepSpec, out, console, skip_failed: bool) -> None:
    runner = spec.sweep.runner or DEFAULT_RUNNER
    runs = expand(spec, validate=runner == DEFAULT_RUNNER)
    out = Path(out) if out is not None else Path("results") / f"sweep-{spec.sweep.name}"
    records = load_records(out, [r.run_id for r in runs]) if out.exists() else {}
    for r in runs:
        status = records.get(r.run_id, {}).get("status", "pending")
        console.print(f"{r.run_id}  {status:8s} {_label_text(r.labels)}", highlight=False, soft_wrap=True)
    done = sum(records.get(r.run_id, {}).get("status") == "ok" for r in runs)
    console.print(f"{len(runs)} runs, {done} done, output {out}", highlight=False, soft_wrap=True)
