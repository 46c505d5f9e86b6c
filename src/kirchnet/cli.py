"""The ``kirchnet`` command line (typer + rich).

Commands::

    kirchnet info                                   versions, solver backends, what "auto" picks
    kirchnet train CONFIG.toml [--out DIR]          one training run from a TOML config
    kirchnet reproduce [--quick] [--out DIR]        E1-E7 and DIR/report.md
    kirchnet experiment e1|...|e7 [--quick]        one experiment (+ its report.md)
    kirchnet sweep SWEEP.toml ...                   (when kirchnet.sweep is installed)

Output directories are never overwritten silently: an existing non-empty ``--out``
is refused unless ``--force`` (or ``train --resume``); without ``--out`` a new
timestamped directory is made; a lock file held for the life of the command makes a
second writer fail at once; ``complete.json`` is written last.
Exit codes: 0 success, 1 runtime error (a run failed), 2 invalid input (config, sweep
file, checkpoint, option), 3 output directory exists or is in use, 4 environment
(output not writable, disk full), 130 interrupted.
"""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(name="kirchnet", add_completion=False, no_args_is_help=True,
                  help="Simulate and train resistive networks (resistors, diodes, deep resistive networks, "
                       "memristive devices): exact gradients, EP, CL, partial updates.")
console = Console()
err_console = Console(stderr=True)

EXIT_ERROR, EXIT_CONFIG, EXIT_EXISTS, EXIT_ENV, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def exit_code_of(exc: BaseException) -> int:
    """The exit code for a kirchnet error: 2 bad input, 3 output exists / in use,
    4 environment (cannot write), 1 anything else."""
    from .errors import ConfigError
    from .experiments.io import OutputError, OutputExistsError
    from .training import CheckpointError

    if isinstance(exc, OutputExistsError):
        return EXIT_EXISTS
    if isinstance(exc, OutputError):
        return EXIT_ENV
    if isinstance(exc, (ConfigError, CheckpointError)):
        return EXIT_CONFIG
    return EXIT_ERROR


def _note(message: str) -> None:
    err_console.print(escape(message), highlight=False, soft_wrap=True)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=False)


def _open_out(out: Optional[Path], force: bool, base: str, prefix: str, resume: bool = False,
              resume_hint: bool = False):
    """Take (create, check, lock) the output directory; exit 3 / 4 with a message if not possible."""
    from .errors import KirchnetError
    from .experiments.io import open_output_dir

    try:
        handle = open_output_dir(out, base=base, prefix=prefix, force=force, resume=resume,
                                 resume_hint=resume_hint)
    except KirchnetError as exc:
        _fail(str(exc), exit_code_of(exc))
    if handle.stale is not None:
        h = handle.stale
        _note(f"note: took over the lock of {handle.path} left by pid {h.get('pid', '?')} on "
              f"{h.get('host', '?')} (started {h.get('started_at', '?')}), which is no longer running")
    return handle


# ----------------------------------------------------------------------- info
def backend_report() -> list[dict]:
    """What ``backend="auto"`` picks for a few network sizes (one input, one output)."""
    from . import Circuit, topologies

    cases = [("lattice 10x10", topologies.lattice(10, 10)), ("lattice 100x100", topologies.lattice(100, 100)),
             ("lattice 300x300", topologies.lattice(300, 300)),
             ("random 2000 nodes, degree 6", topologies.random_connected(2000, mean_degree=6, seed=0)),
             ("random 20000 nodes, degree 6", topologies.random_connected(20000, mean_degree=6, seed=0))]
    rows = []
    for label, net in cases:
        c = Circuit(net, ground=0, inputs=[net.n_nodes - 1], outputs=[net.n_nodes // 2])
        rows.append({"network": label, "free_nodes": c.n_free, "auto_backend": c.auto_backend})
    return rows


#: optional packages: (requirement name, import name, fallback requirement spec)
_OPTIONAL_PACKAGES = {"scikit-sparse": ("sksparse", "scikit-sparse>=0.4.12,<0.5"),
                      "pyamg": ("pyamg", "pyamg>=5.0"),
                      "dask": ("distributed", "dask[distributed]>=2024.1")}


def _requirement(name: str) -> str:
    """kirchnet's own requirement spec for an optional package (from the installed metadata,
    so the command matches pyproject.toml), e.g. ``scikit-sparse<0.5,>=0.4.12``."""
    import importlib.metadata as md
    import re

    try:
        for req in md.requires("kirchnet") or ():
            spec = req.split(";")[0].strip()
            if re.match(rf"{re.escape(name)}(\[|[<>=!~ ]|$)", spec):
                return spec
    except md.PackageNotFoundError:
        pass
    return _OPTIONAL_PACKAGES[name][1]


def _version(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "installed"


def optional_backends() -> list[dict]:
    """The optional backends: ``{"name", "present", "detail", "provides", "install"}`` each.

    ``install`` is the exact command that installs a missing one into this interpreter's
    environment (empty when present): CHOLMOD (scikit-sparse, needs the SuiteSparse headers),
    pyamg, ngspice (a system program) and Dask.
    """
    import shlex
    import sys

    from . import solvers
    from .spice import find_ngspice

    pip = f"{shlex.quote(sys.executable)} -m pip install"
    rows = []
    cholmod = solvers.cholmod_available()
    rows.append({"name": "CHOLMOD (scikit-sparse)", "present": cholmod,
                 "detail": _version("scikit-sparse") if cholmod else "not installed",
                 "provides": 'backend "cholmod" (sparse Cholesky, low-rank updates); without it: scipy SuperLU',
                 "install": "" if cholmod else
                 f"apt-get install libsuitesparse-dev && {pip} {shlex.quote(_requirement('scikit-sparse'))}"
                 f"  (in a kirchnet checkout: apt-get install libsuitesparse-dev && make clean venv)"})
    amg = solvers.pyamg_available()
    rows.append({"name": "pyamg", "present": amg, "detail": _version("pyamg") if amg else "not installed",
                 "provides": 'backend "pcg-amg" (multigrid-preconditioned conjugate gradients)',
                 "install": "" if amg else f"{pip} {shlex.quote(_requirement('pyamg'))}"})
    ngspice = find_ngspice()
    rows.append({"name": "ngspice", "present": bool(ngspice), "detail": ngspice or "not found",
                 "provides": "kirchnet.spice.ngspice_potentials (cross-validation against SPICE)",
                 "install": "" if ngspice else "apt-get install ngspice  (or set $NGSPICE to its path)"})
    dask = importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None
    rows.append({"name": "dask", "present": dask, "detail": _version("dask") if dask else "not installed",
                 "provides": "kirchnet sweep (parallel, resumable grids of runs)",
                 "install": "" if dask else f"{pip} {shlex.quote(_requirement('dask'))} pandas pyarrow"})
    return rows


@app.command()
def info(sizes: bool = typer.Option(True, "--sizes/--no-sizes", help="show what 'auto' picks per size")):
    """Versions, optional backends and the solver that ``backend="auto"`` picks."""
    from . import __version__, solvers
    from .spice import find_ngspice

    t = Table(title=f"kirchnet {__version__}", show_header=True)
    t.add_column("component")
    t.add_column("version / status")
    t.add_row("python", platform.python_version())
    for mod in ("numpy", "scipy", "networkx", "sklearn", "matplotlib", "pydantic", "typer"):
        try:
            m = __import__(mod)
            t.add_row(mod, getattr(m, "__version__", "installed"))
        except ImportError:
            t.add_row(mod, "[yellow]not installed[/]")
    t.add_row("dense below", f"{solvers.DENSE_MAX} free nodes")
    console.print(t)
    o = Table(title="optional backends", show_header=True)
    for col in ("backend", "status", "provides"):
        o.add_column(col)
    missing = []
    for r in optional_backends():
        o.add_row(r["name"], f"[green]yes[/] ({escape(r['detail'])})" if r["present"] else "[yellow]missing[/]",
                  escape(r["provides"]))
        if not r["present"]:
            missing.append(r)
    console.print(o)
    for r in missing:
        console.print(f"to install {escape(r['name'])}: {escape(r['install'])}", highlight=False, soft_wrap=True)
    if sizes:
        s = Table(title='backend="auto" picks', show_header=True)
        for col in ("network", "free nodes", "backend"):
            s.add_column(col)
        for r in backend_report():
            s.add_row(r["network"], str(r["free_nodes"]), r["auto_backend"])
        console.print(s)


# ---------------------------------------------------------------------- train
@app.command()
def train(config: Path = typer.Argument(..., help="training config (TOML); see kirchnet.config"),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory "
                                             "(default: runs/<config file name>-<timestamp>)"),
          seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
          epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="override the config's epochs"),
          force: bool = typer.Option(False, "--force", help="start over in an existing non-empty --out"),
          resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last "
                                      "checkpoint (same config; bit-identical to an uninterrupted run)"),
          progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar")):
    """Train one network from CONFIG; write history, conductances, metrics and figures.

    Checkpoints go to OUT/checkpoint every ``checkpoint_every`` epochs (config key;
    default epochs // 20, at least 1): after a crash or kill, ``--resume --out OUT``
    continues and gives the same result as an uninterrupted run."""
    import shutil

    from .config import ConfigError, TrainConfig
    from .errors import KirchnetError
    from .experiments.run import CHECKPOINT_SUBDIR, run_training

    if resume and force:
        _fail("--resume and --force exclude each other: --resume continues the run in --out, "
              "--force starts it over", EXIT_CONFIG)
    if resume and out is None:
        _fail("--resume needs --out DIR: the directory of the run to continue", EXIT_CONFIG)
    try:
        cfg = TrainConfig.from_toml(config)
        if seed is not None or epochs is not None:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), **({"seed": seed} if seed is not None else {}),
                                         **({"epochs": epochs} if epochs is not None else {})},
                                        f"{config} with --seed/--epochs")
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    if resume and cfg.checkpoint_interval() == 0:
        _fail(f"{config}: checkpoint_every = 0 turns checkpoints off, so there is nothing to resume; "
              f"set checkpoint_every >= 1 (or leave it out)", EXIT_CONFIG)
    if resume and out.is_dir() and any(p.name != ".kirchnet.lock" for p in out.iterdir()) \
            and not (out / CHECKPOINT_SUBDIR / "checkpoint.json").is_file():
        _fail(f"--resume: {out} has no checkpoint ({CHECKPOINT_SUBDIR}/checkpoint.json) to continue from; "
              f"pass --force to start the run over in it, or choose another --out", EXIT_CONFIG)
    handle = _open_out(out, force, "runs", config.stem, resume=resume, resume_hint=True)
    target = handle.path
    try:
        if force and not resume:
            shutil.rmtree(target / CHECKPOINT_SUBDIR, ignore_errors=True)  # start over: no stale checkpoint
        if handle.resumed:
            _note(f"resuming the run in {target}")
        metrics = run_training(cfg, out_dir=target, progress=progress, resume=resume)
        handle.complete(config=str(config))
    except KeyboardInterrupt:
        _fail(f"interrupted; continue with: kirchnet train {config} --out {target} --resume", EXIT_INTERRUPTED)
    except (KirchnetError, ValueError) as exc:
        _fail(f"{config}: {exc}", exit_code_of(exc))
    finally:
        handle.release()
    t = Table(title=f"{cfg.name}: {cfg.rule.name} on {cfg.task.name}", show_header=False)
    for k, v in metrics.items():
        t.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    console.print(t)
    console.print(f"results in [bold]{escape(str(target))}[/]")


# ------------------------------------------------------------------ reproduce
def _run_experiments(names, quick, out, seed, force, progress, command):
    from .errors import KirchnetError
    from .experiments.reproduce import reproduce as _reproduce

    handle = _open_out(out, force, "results", ("quick" if quick else "reproduce") +
                       ("" if len(names) > 1 else f"-{names[0]}"))
    target = handle.path
    bar = _progress(progress)
    try:
        if bar is not None:
            bar.start()
        res = _reproduce(target, quick=quick, seed=seed, experiments=names, progress=bar, command=command)
        handle.complete(experiments=names)
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
            bar = None
        _fail(f"interrupted; {target} is incomplete (no complete.json): run the command again with "
              f"another --out (or --force)", EXIT_INTERRUPTED)
    except KirchnetError as exc:
        if bar is not None:
            bar.stop()
            bar = None
        _fail(str(exc), exit_code_of(exc))
    finally:
        if bar is not None:
            bar.stop()
        handle.release()
    t = Table(title="headline", show_header=True)
    for col in ("exp", "claim", "measured"):
        t.add_column(col)
    for r in res["headline"]:
        t.add_row(r["exp"], r["claim"], r["measured"])
    console.print(t)
    console.print(f"report: [bold]{escape(str(target / 'report.md'))}[/] ({res['meta']['wall_time']:.0f} s)")
    return res


@app.command()
def reproduce(quick: bool = typer.Option(False, "--quick", help="small sizes and fewer seeds (1.5-2 min on 2 cores)"),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory "
                                                 "(default: results/<quick|reproduce>-<timestamp>)"),
              seed: int = typer.Option(0, "--seed", help="base seed of every experiment"),
              only: Optional[str] = typer.Option(None, "--only", help="comma-separated subset, e.g. e1,e3"),
              force: bool = typer.Option(False, "--force", help="write into an existing non-empty --out"),
              progress: bool = typer.Option(True, "--progress/--no-progress")):
    """Run experiments E1-E7 and write DIR/report.md with tables and figures."""
    from .experiments.reproduce import EXPERIMENTS

    names = list(EXPERIMENTS)
    if only is not None:
        names = list(dict.fromkeys(n.strip().lower() for n in only.split(",") if n.strip()))
        if not names:
            _fail(f"--only {only!r} names no experiment; give a comma-separated subset of "
                  f"{', '.join(EXPERIMENTS)}, e.g. --only e1,e3", EXIT_CONFIG)
        bad = [n for n in names if n not in EXPERIMENTS]
        if bad:
            _fail(f"unknown experiment(s) {bad}; choose from {', '.join(EXPERIMENTS)}", EXIT_CONFIG)
    cmd = "kirchnet reproduce" + (" --quick" if quick else "") + (f" --seed {seed}" if seed else "")
    _run_experiments(names, quick, out, seed, force, progress, cmd)


@app.command()
def experiment(name: str = typer.Argument(..., help="e1 | e2 | e3 | e4 | e5 | e6 | e7"),
               quick: bool = typer.Option(False, "--quick"),
               out: Optional[Path] = typer.Option(None, "--out", "-o"),
               seed: int = typer.Option(0, "--seed"),
               force: bool = typer.Option(False, "--force"),
               progress: bool = typer.Option(True, "--progress/--no-progress")):
    """Run one experiment (E1 gradient fidelity, E2 training, E3 in-situ noise, E4 partial, E5 device, E6 nonlinear, E7 training on devices)."""
    from .experiments.reproduce import EXPERIMENTS

    key = name.strip().lower()
    if key not in EXPERIMENTS:
        _fail(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}", EXIT_CONFIG)
    _run_experiments([key], quick, out, seed, force, progress,
                     f"kirchnet experiment {key}" + (" --quick" if quick else ""))


# ---------------------------------------------------------------------- sweep
def _register_plugins(application: typer.Typer) -> None:
    """Register optional commands: ``kirchnet.sweep.register(app)`` if that module exists."""
    if importlib.util.find_spec("kirchnet.sweep") is None:
        return
    from . import sweep

    register = getattr(sweep, "register", None)
    if callable(register):
        register(application)


_register_plugins(app)


def main() -> None:  # pragma: no cover - thin wrapper
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
