"""Executing a sweep on Dask: the worker-side run, the client loop, fault tolerance."""

from __future__ import annotations

import _thread
import contextlib
import gc
import importlib
import logging
import math
import json
import os
import shutil
import signal
import socket
import threading
import time
import traceback as _traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import preload_report_libraries, write_report
from .spec import (
    RunSpec,
    SweepError,
    SweepSpec,
    SweepSpecError,
    _error_text,
    _label_text,
    expand,
    load_sweep,
)
from .store import (_atomic_write_json, _iso, _write_tables, build_table, preload_table_libraries,
                    trusted_records)

__all__ = ["RunFailed", "SweepResult", "run_sweep", "train_runner", "default_run_timeout"]

DEFAULT_RUNNER = "kirchnet.sweep:train_runner"
EVENT_TOPIC = "kirchnet-sweep"


#: dask settings of the default local cluster. ``worker-saturation = 1``: a single-threaded
#: worker holds only the run it executes (none queued behind it), so a worker that dies
#: uses up no other run's retry budget (``allowed-failures``).
LOCAL_DASK_CONFIG = {"distributed.scheduler.worker-saturation": 1.0}


class RunFailed(RuntimeError):
    """Raised on a worker when a run raises; carries the original error as text.

    Always picklable (only strings inside), so the client can record the error even
    when the original exception class cannot be unpickled there.
    """

    def __init__(self, error_type: str, message: str, traceback: str = ""):
        super().__init__(error_type, message, traceback)
        self.error_type, self.message, self.traceback = error_type, message, traceback

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


# --------------------------------------------------------------------------- runners


def train_runner(config: dict, out_dir: str | None = None) -> dict:
    """The default runner: one call of :func:`kirchnet.experiments.run.run_training`."""
    from ..config import TrainConfig
    from ..experiments.run import run_training

    cfg = TrainConfig.from_dict(config, source="run config")
    return run_training(cfg, out_dir=None if out_dir is None else Path(out_dir), progress=False,
                        checkpoint=False)


def _resolve_runner(runner: str | Callable) -> Callable:
    if callable(runner):
        return runner
    module, _, attr = runner.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SweepError(f"cannot import runner {runner!r}: {exc}") from exc
    if not callable(obj):
        raise SweepError(f"runner {runner!r} is not callable")
    return obj


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars -> Python numbers, NaN/inf -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _emit(event: dict) -> None:
    with contextlib.suppress(Exception):
        from distributed import get_worker

        get_worker().log_event(EVENT_TOPIC, event)


def _execute_run(runner: str | Callable, run_id: str, config: dict,
                 artifacts: str | None) -> dict:
    """Worker side of one run: call the runner, return a result record or raise RunFailed."""
    started = time.time()
    _emit({"event": "start", "run_id": run_id, "pid": os.getpid(), "t": started,
           "host": socket.gethostname(), "worker": _worker_address()})
    tmp = None
    try:
        fn = _resolve_runner(runner)
        if artifacts is not None:
            tmp = Path(artifacts).with_name(f".tmp-{Path(artifacts).name}-{uuid.uuid4().hex[:8]}")
            tmp.parent.mkdir(parents=True, exist_ok=True)
        metrics = fn(config, None if tmp is None else str(tmp))
        if not isinstance(metrics, Mapping):
            raise TypeError(f"the runner must return a dict of metrics, got {type(metrics).__name__}")
        metrics = _flatten(_jsonable(dict(metrics)))
        if tmp is not None and tmp.exists():
            target = Path(artifacts)
            if target.exists():  # a duplicate completion (its first result was lost)
                shutil.rmtree(target)
            os.replace(tmp, target)
    except Exception as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _emit({"event": "error", "run_id": run_id, "pid": os.getpid()})
        raise RunFailed(type(exc).__name__, str(exc), _traceback.format_exc()) from None
    finished = time.time()
    _emit({"event": "end", "run_id": run_id, "pid": os.getpid()})
    return {"status": "ok", "metrics": metrics, "wall_s": finished - started,
            "pid": os.getpid(), "worker": _worker_address(), "host": socket.gethostname(),
            "started_at": _iso(started), "finished_at": _iso(finished)}


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # noqa: BLE001 - not on a worker
        return None


# --------------------------------------------------------------------------- execution


@dataclass
class SweepResult:
    """What :func:`run_sweep` did. ``records``: every run of the grid that has a result."""

    out_dir: Path
    n_runs: int
    n_skipped: int
    n_submitted: int
    n_ok: int
    n_failed: int
    wall_s: float
    interrupted: bool
    report: Path | None
    records: dict[str, dict] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return self.n_runs - sum(r.get("status") in ("ok", "failed") for r in self.records.values())


class _Tracker:
    """Counts for the progress display; fed by worker events (any thread) and results."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started: dict[str, int] = {}  # start events per run (> 1: restarted)
        self.last: dict[str, str] = {}  # last worker event per run: start, end or error
        self.starts: dict[str, dict] = {}  # latest start event per run (+ client receipt time)
        self.done: set[str] = set()
        self.ok = self.failed = 0
        self.callback: Callable[[], None] | None = None

    def on_event(self, event) -> None:
        _, msg = event
        if not isinstance(msg, dict) or "run_id" not in msg:
            return
        with self.lock:
            rid = msg["run_id"]
            self.last[rid] = msg.get("event")
            if msg.get("event") == "start":
                self.started[rid] = self.started.get(rid, 0) + 1
                self.starts[rid] = {**msg, "t_client": time.monotonic()}
        if self.callback:
            self.callback()

    def finish(self, run_id: str, ok: bool) -> None:
        with self.lock:
            self.done.add(run_id)
            if ok:
                self.ok += 1
            else:
                self.failed += 1

    def running_starts(self) -> list[tuple[str, dict]]:
        """``(run_id, start event)`` of the runs running now (started, not ended or done)."""
        with self.lock:
            return [(rid, self.starts[rid]) for rid, ev in self.last.items()
                    if ev == "start" and rid not in self.done and rid in self.starts]

    @property
    def running(self) -> int:
        with self.lock:
            return sum(1 for rid, ev in self.last.items() if ev == "start" and rid not in self.done)

    @property
    def restarted(self) -> int:
        with self.lock:
            return sum(1 for c in self.started.values() if c > 1)


#: imported by every worker of the local cluster (Dask's ``preload``): see its docstring
WORKER_SETUP = "kirchnet.sweep.worker_setup"


def _distributed():
    """``(Client, LocalCluster)`` from Dask's distributed, or a :class:`SweepError` saying
    how to install it."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SweepError("sweeps need Dask: pip install 'kirchnet[dist]' "
                         "(dask[distributed], pandas, pyarrow)") from exc
    return Client, LocalCluster


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None, client, n_tasks: int):
    if client is not None:
        yield client, f"{client.scheduler.address} (given client)"
        return
    Client, LocalCluster = _distributed()

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from exc
        try:
            yield c, scheduler
        finally:
            c.close()
        return
    import dask

    n = workers or max(1, min(os.cpu_count() or 1, n_tasks))
    # a Ctrl-C in the middle of LocalCluster's start or close leaves workers that distributed's
    # own exit handler cannot close ("Exception ignored in atexit callback ... AssertionError:
    # Status.init"): it is held there and raised once the cluster is up (then closed) or closed
    cluster = c = None
    try:
        with _HeldCtrlC() as held:
            try:
                with dask.config.set(LOCAL_DASK_CONFIG):  # read when the scheduler starts
                    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=logging.CRITICAL,
                                           preload=[WORKER_SETUP])  # workers ignore a terminal's Ctrl-C
            except Exception:
                if held.seen:  # a worker took the terminal's Ctrl-C before its preload: "Nanny failed to start"
                    raise KeyboardInterrupt from None
                raise
            c = Client(cluster)
        yield c, f"LocalCluster, {n} worker process(es)"
    except BaseException:
        _close_local(c, cluster, raise_held=False)  # an error is on its way: a held Ctrl-C adds nothing
        raise
    _close_local(c, cluster)


def _close_local(c, cluster, raise_held: bool = True) -> None:
    """Close the client, then its local cluster, a Ctrl-C held meanwhile (:class:`_HeldCtrlC`)."""
    with _HeldCtrlC(raise_held):
        if c is not None:
            c.close()
        if cluster is not None:
            cluster.close()


def _call_previous(previous, signum, frame) -> None:
    """What the SIGINT handler ``previous`` does (Python's raises ``KeyboardInterrupt``)."""
    if callable(previous):
        previous(signum, frame)
    else:  # SIG_DFL, or a handler not installed from Python
        raise KeyboardInterrupt


class _SigintHook:
    """Within ``with``, SIGINT goes to ``self._handler``, and the handler it replaced is
    restored on exit. Only in the main thread (no signal handlers elsewhere), and not where
    SIGINT is ignored or its handler was not installed from Python (nothing to restore)."""

    def __init__(self):
        self._previous = None

    def _handler(self, signum, frame):  # pragma: no cover - each subclass has its own
        raise NotImplementedError

    def _install(self) -> bool:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN and previous is not None:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handler)
                return True
        return False

    def _restore(self):
        """The replaced handler back; returns it (None: none was replaced)."""
        previous, self._previous = self._previous, None
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        return previous


class _HeldCtrlC(_SigintHook):
    """``with _HeldCtrlC() as held``: a first SIGINT (Ctrl-C) within is recorded
    (``held.seen``) instead of raised, and raised as ``KeyboardInterrupt`` when the block
    ends without an error (``raise_held``; False: only recorded); a second one raises at
    once (the user insists)."""

    def __init__(self, raise_held: bool = True):
        super().__init__()
        self.seen = False
        self._raise_held = raise_held

    def _handler(self, signum, frame):
        if not self.seen:
            self.seen = True
            return
        _call_previous(self._restore(), signum, frame)

    def __enter__(self) -> "_HeldCtrlC":
        self._install()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()
        if self.seen and self._raise_held and exc_type is None:
            raise KeyboardInterrupt


def _make_progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), transient=False)


#: --run-timeout default: a run may take this many times the slowest finished run ...
TIMEOUT_FACTOR = 20.0
#: ... but never less than this (s); before any run has finished the limit is DEFAULT_FIRST_TIMEOUT_S
MIN_TIMEOUT_S = 60.0
DEFAULT_FIRST_TIMEOUT_S = 600.0


def default_run_timeout(wall_times) -> float:
    """The default per-run timeout from the grid's own runs: ``max(60 s, 20 x the slowest
    finished run)`` (finished runs of this and earlier invocations), ``600 s`` while none
    has finished."""
    walls = [float(w) for w in wall_times if isinstance(w, (int, float)) and math.isfinite(w)]
    if not walls:
        return DEFAULT_FIRST_TIMEOUT_S
    return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * max(walls))


def _take_out_dir(out_dir, spec: SweepSpec, force: bool, resume: bool):
    """Lock the output directory; with ``resume`` an existing one must hold this sweep."""
    from ..experiments.io import LOCK_NAME, OutputExistsError, open_output_dir

    if out_dir is None:
        return open_output_dir(None, base="results", prefix=spec.default_out_prefix(), command=None)
    out = Path(out_dir)
    if resume and not force and out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        meta = out / "sweep.json"
        try:
            name = json.loads(meta.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            name = None
        if name != spec.sweep.name:
            what = "holds no sweep (no readable sweep.json)" if name is None else f"holds sweep {name!r}"
            raise OutputExistsError(f"output directory {out} {what}, not sweep {spec.sweep.name!r}: "
                                    f"choose another --out, or pass --force to write into it")
    return open_output_dir(out, force=force, resume=resume, resume_hint=True)


def run_sweep(spec: SweepSpec | str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
              scheduler: str | None = None, workers: int | None = None, client=None,
              runner: str | Callable | None = None, validate: Callable | bool | None = None,
              retries: int | None = None, max_runs: int | None = None, rerun_failed: bool = True,
              progress: bool = True, report: bool = True, table_interval_s: float = 2.0,
              worker_loss_resubmits: int = 1, run_timeout: float | None = None,
              resume: bool = True, force: bool = False,
              on_failure: Callable[[str], None] | None = None,
              on_result: Callable[[dict], bool | None] | None = None) -> SweepResult:
    """Execute every run of the sweep that has no result yet; persist, tabulate, report.

    ``out_dir`` defaults to a new ``results/sweep-<file name>-<timestamp>``; with
    ``resume`` (the default here; ``kirchnet sweep --resume``) an existing directory of the
    same sweep is continued: runs with a trusted record (:func:`~kirchnet.sweep.store.record_problem`:
    schema valid, config hash equal to the run id) are skipped, failed ones are executed
    again unless ``rerun_failed=False``, damaged or foreign records are executed again.
    ``resume=False`` refuses a non-empty directory (:class:`~kirchnet.experiments.io.OutputExistsError`)
    unless ``force``. The directory is locked for the whole sweep (a second sweep on it fails
    at once) and ``complete.json`` is written when every run has a result.
    Cluster: ``client`` (an existing ``distributed.Client``),
    else ``scheduler`` (``tcp://HOST:PORT``), else a ``LocalCluster`` of ``workers``
    single-threaded processes (default: one per core). ``runner`` (callable or
    ``"module:function"``, signature ``runner(config: dict, out_dir: str | None) ->
    dict``) overrides the file's; ``validate`` defaults to TrainConfig validation for
    the default runner and to none for a custom one. ``max_runs`` executes at most
    that many pending runs. ``run_timeout`` (s): a run still running after it is
    recorded as failed with reason ``"timeout"``, its future cancelled and its worker
    process killed (the nanny starts a fresh one) so the sweep goes on; ``None``:
    :func:`default_run_timeout`; ``0``: no limit. ``on_failure(line)`` gets one line per
    failed run (the details are in its record). ``on_result(record)`` is called after each run is
    persisted; returning ``False`` stops the sweep (pending runs are cancelled). A
    ``KeyboardInterrupt`` also stops it cleanly (tables and report are still written)
    and is re-raised. A run whose workers died ``allowed-failures + 1`` times (Dask's
    ``KilledWorker``) is submitted afresh ``worker_loss_resubmits`` times before it is
    recorded as failed, because Dask counts every run assigned to a dying worker, not
    only the one that killed it.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    runner = runner if runner is not None else (spec.sweep.runner or DEFAULT_RUNNER)
    if validate is None:
        validate = runner == DEFAULT_RUNNER
    retries = spec.sweep.retries if retries is None else int(retries)
    if retries < 0:
        raise SweepSpecError(f"retries must be >= 0, got {retries}")
    if workers is not None and workers < 1:
        raise SweepSpecError(f"workers must be >= 1, got {workers}")
    if workers is not None and (scheduler is not None or client is not None):
        raise SweepSpecError("workers= sets the size of the local cluster; it cannot be combined "
                             "with an existing scheduler or client")
    if max_runs is not None and max_runs < 0:
        raise SweepSpecError(f"max_runs must be >= 0, got {max_runs}")
    if run_timeout is not None and not (run_timeout >= 0 and math.isfinite(run_timeout)):
        raise SweepSpecError(f"run_timeout must be a finite number of seconds >= 0 (0: no limit), "
                             f"got {run_timeout}")
    if isinstance(runner, str) and scheduler is None and client is None:
        _resolve_runner(runner)  # fail fast (local workers share this environment)
    runs = expand(spec, validate=validate)
    handle = _take_out_dir(out_dir, spec, force, resume)
    try:
        res = _run_in(handle.path, spec, runs, scheduler=scheduler, workers=workers, client=client,
                      runner=runner, retries=retries, max_runs=max_runs, rerun_failed=rerun_failed,
                      progress=progress, report=report, table_interval_s=table_interval_s,
                      worker_loss_resubmits=worker_loss_resubmits, run_timeout=run_timeout,
                      on_failure=on_failure, on_result=on_result)
        if not res.interrupted and res.n_missing == 0:
            handle.complete(sweep=spec.sweep.name, n_runs=res.n_runs,
                            n_ok=sum(r.get("status") == "ok" for r in res.records.values()),
                            n_failed=sum(r.get("status") == "failed" for r in res.records.values()))
        return res
    finally:
        handle.release()


def _failure_line(rec: dict) -> str:
    error = (rec.get("error") or "").strip().splitlines()
    return (f"run {rec['run_id']} failed ({_label_text(rec.get('labels', {})) or 'base'}): "
            f"{error[0][:200] if error else 'unknown error'}")


def _stop_worker(c, start: dict) -> None:
    """Kill the worker process that runs a hung run (its nanny starts a fresh one)."""
    pid, host, addr = start.get("pid"), start.get("host"), start.get("worker")
    if pid and host == socket.gethostname():
        with contextlib.suppress(OSError):
            os.kill(int(pid), signal.SIGKILL)
        return
    if addr:  # a remote worker: from its own event loop (the task thread is busy)
        with contextlib.suppress(Exception):
            c.run(_hard_exit, workers=[addr], wait=False)


def _hard_exit() -> None:  # pragma: no cover - runs on a remote worker
    os._exit(1)


def _run_in(out: Path, spec, runs, *, scheduler, workers, client, runner, retries, max_runs,
            rerun_failed, progress, report, table_interval_s, worker_loss_resubmits, run_timeout,
            on_failure, on_result) -> SweepResult:
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _atomic_write_json(out / "sweep.json", {
        "name": spec.sweep.name, "axes": spec.axis_names(),
        "spec": spec.model_dump(mode="json"),
        "runs": [{"run_id": r.run_id, "labels": r.labels} for r in runs]})

    records, rejected = trusted_records(out, runs)
    if rejected:
        logging.getLogger(__name__).warning(
            "%d run record(s) in %s cannot be trusted and run again (e.g. %s: %s)", len(rejected),
            out / "runs", *next(iter(rejected.items())))
    done_status = ("ok",) if rerun_failed else ("ok", "failed")
    todo = [r for r in runs if records.get(r.run_id, {}).get("status") not in done_status]
    n_skipped = len(runs) - len(todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    t0 = time.perf_counter()
    tracker = _Tracker()
    interrupted = False
    info: dict[str, Any] = {}
    walls = [rec.get("wall_s") for rec in records.values() if rec.get("status") == "ok"]

    def limit() -> float:
        return default_run_timeout(walls) if run_timeout is None else float(run_timeout)

    def failed_line(rec: dict) -> None:
        line = _failure_line(rec)
        if on_failure is not None:
            on_failure(line)
        else:
            logging.getLogger(__name__).warning("%s", line)

    if todo:
        # Dask and what the tables and the report import, imported before the loop (where a
        # Ctrl-C in a first import would leave a half-initialized module, and no report could
        # be written after it) with a Ctrl-C held, then raised: one that interrupts an import
        # of distributed or of a C extension can crash the interpreter at its exit
        with _HeldCtrlC():
            if client is None:
                _distributed()
            if report:
                preload_report_libraries()
            else:
                preload_table_libraries()
        with _client(scheduler, workers, client, len(todo)) as (c, where), _make_progress(progress) as bar, \
                _CtrlC() as ctrl_c:
            info["cluster"] = where
            task = None
            if bar is not None:
                task = bar.add_task(spec.sweep.name, total=len(todo), counts="")

                def refresh():
                    bar.update(task, counts=f"ok {tracker.ok} · running {tracker.running} · "
                                            f"failed {tracker.failed} · skipped {n_skipped}")

                tracker.callback = refresh
                refresh()
                if on_failure is None:
                    def on_failure(line):  # noqa: F811 - above the progress bar
                        bar.console.print(line, highlight=False, markup=False, soft_wrap=True)
            with contextlib.suppress(Exception):
                c.subscribe_topic(EVENT_TOPIC, tracker.on_event)
            by_key = {}
            current: dict[str, Any] = {}  # run id -> its latest future
            resubmitted: dict[str, int] = {}
            timed_out: dict[str, float] = {}  # run id -> the limit it exceeded

            def submit(r: RunSpec):
                art = str((out / "runs" / r.run_id).resolve()) if spec.sweep.save_artifacts else None
                fut = c.submit(_execute_run, runner, r.run_id, r.config, art,
                               key=f"kirchnet-run-{r.run_id}-{uuid.uuid4().hex[:8]}", pure=False,
                               retries=retries)
                by_key[fut.key] = (fut, r)
                current[r.run_id] = fut
                return fut

            futures = [submit(r) for r in todo]
            stop_watch = threading.Event()

            def watchdog():  # per-run timeout: cancel the run, kill its worker; a dropped Ctrl-C again
                while not stop_watch.wait(0.2):
                    ctrl_c.redeliver()
                    lim = limit()
                    if lim <= 0:
                        continue
                    for rid, start in tracker.running_starts():
                        if rid in timed_out or time.monotonic() - start["t_client"] <= lim:
                            continue
                        fut = current.get(rid)
                        if fut is None or fut.done():
                            continue
                        timed_out[rid] = lim
                        with contextlib.suppress(Exception):
                            c.cancel([fut])
                        _stop_worker(c, start)

            watch = threading.Thread(target=watchdog, name="kirchnet-sweep-timeout", daemon=True)
            watch.start()
            last_table = time.perf_counter()
            from distributed import as_completed

            clean = False
            try:
                pending = as_completed(futures)
                for fut in pending:
                    if ctrl_c.is_set():  # a Ctrl-C whose KeyboardInterrupt was swallowed
                        raise KeyboardInterrupt
                    _, r = by_key[fut.key]
                    if (_killed_worker(fut) and r.run_id not in timed_out and
                            resubmitted.get(r.run_id, 0) < worker_loss_resubmits):
                        # dask gave up after allowed-failures worker deaths while the run was
                        # assigned; one of them may not have been its fault: a fresh try
                        resubmitted[r.run_id] = resubmitted.get(r.run_id, 0) + 1
                        new = submit(r)
                        futures.append(new)
                        pending.add(new)
                        continue
                    if fut.status not in ("finished", "error", "cancelled"):
                        # its result was lost with a worker after it finished: dask
                        # recomputes it, and it comes back here when done
                        pending.add(fut)
                        continue
                    if r.run_id in timed_out and fut.status != "finished":
                        rec = _timeout_record(r, timed_out[r.run_id])
                    else:
                        rec = _collect(fut, r)
                    if rec is None:  # cancelled or lost connection: no result, resume reruns it
                        continue
                    _atomic_write_json(out / "runs" / f"{r.run_id}.json", rec)
                    records[r.run_id] = rec
                    tracker.finish(r.run_id, rec["status"] == "ok")
                    if rec["status"] == "ok":
                        walls.append(rec.get("wall_s"))
                    else:
                        failed_line(rec)
                    if bar is not None:
                        bar.advance(task)
                        tracker.callback()
                    fut.release()
                    if time.perf_counter() - last_table >= table_interval_s:
                        _write_grid_tables(out, spec, runs, records)
                        last_table = time.perf_counter()
                    if on_result is not None and on_result(rec) is False:
                        interrupted = True
                        break
                clean = True
            finally:
                stop_watch.set()
                ctrl_c.disarm()
                if not clean:  # KeyboardInterrupt or a lost scheduler: stop what is left
                    interrupted = True
                if interrupted:
                    with contextlib.suppress(Exception):
                        c.cancel([f for f in futures if not f.done()])
                with contextlib.suppress(Exception):
                    c.unsubscribe_topic(EVENT_TOPIC)
                wall = time.perf_counter() - t0
                info.update(_invocation_info(len(todo), tracker, n_skipped, wall, interrupted))
                try:
                    _finish_outputs(out, spec, runs, records, info, report)
                except Exception:  # an error in flight matters more than the report
                    if clean:
                        raise
                    logging.getLogger(__name__).exception("could not write the sweep report")
            if ctrl_c.is_set():  # a Ctrl-C whose redelivery the loop's end disarmed: raised after the outputs
                raise KeyboardInterrupt
    else:
        info.update(_invocation_info(0, tracker, n_skipped, 0.0, False))
        _finish_outputs(out, spec, runs, records, info, report)
    wall = time.perf_counter() - t0
    in_grid = {r.run_id: records[r.run_id] for r in runs if r.run_id in records}
    return SweepResult(out_dir=out, n_runs=len(runs), n_skipped=n_skipped, n_submitted=len(todo),
                       n_ok=tracker.ok, n_failed=tracker.failed, wall_s=wall,
                       interrupted=interrupted, report=(out / "report.md") if report else None,
                       records=in_grid)


class _CtrlC(_SigintHook):
    """``with _CtrlC() as ctrl_c``: within, SIGINT (Ctrl-C) is recorded (``ctrl_c.is_set()``)
    before the handler in place (Python's: ``KeyboardInterrupt``) runs.

    Python prints and drops an exception raised where the garbage collector runs code (its
    callbacks, finalizers, weakref callbacks: "Exception ignored in"), and distributed runs
    such code on every full collection (its GC diagnosis): a Ctrl-C that landed there was
    lost and the sweep ran to its end. So: during a collection (tracked by a gc callback
    first and one last in ``gc.callbacks``) or in a ``__del__``, the interrupt is delivered
    again 50 ms later; :meth:`redeliver` (the sweep's watchdog thread) delivers it again
    while the loop still runs a second after it; and the loop checks :meth:`is_set` after
    every run. Outside the main thread (no signal handlers there) nothing is installed."""

    def __init__(self):
        super().__init__()
        self._seen = threading.Event()
        self._at = 0.0
        self._collecting = False
        self._lock = threading.Lock()
        self._disarmed = False

    def is_set(self) -> bool:
        return self._seen.is_set()

    def _gc_start(self, phase, info):
        if phase == "start":
            self._collecting = True

    def _gc_stop(self, phase, info):
        if phase == "stop":
            self._collecting = False

    def _swallowing(self, frame) -> bool:
        if self._collecting:
            return True
        while frame is not None:
            if frame.f_code.co_name == "__del__":
                return True
            frame = frame.f_back
        return False

    def _handler(self, signum, frame):
        self._seen.set()
        self._at = time.monotonic()
        if self._swallowing(frame):  # raised here it would be lost: again in a moment, outside
            threading.Timer(0.05, self._deliver).start()
            return
        _call_previous(self._previous, signum, frame)

    def redeliver(self, after: float = 1.0) -> None:
        """(Another thread.) Deliver a recorded Ctrl-C again where it came more than
        ``after`` seconds ago and the loop still runs: its KeyboardInterrupt was dropped
        somewhere this class does not see."""
        if self._seen.is_set() and time.monotonic() - self._at > after:
            self._deliver()

    def _deliver(self) -> None:
        """The recorded Ctrl-C again (a timer's or the watchdog's thread), unless disarmed."""
        with self._lock:
            if not self._disarmed:
                self._at = time.monotonic()
                _thread.interrupt_main()

    def disarm(self) -> None:
        """The loop has stopped: no redelivery from now on, neither the watchdog's nor a
        pending 50 ms one (it would interrupt the cleanup that writes what finished; a
        KeyboardInterrupt is already on its way). A new Ctrl-C still interrupts."""
        with self._lock:
            self._disarmed = True

    def __enter__(self) -> "_CtrlC":
        if self._install():
            gc.callbacks.insert(0, self._gc_start)
            gc.callbacks.append(self._gc_stop)
        return self

    def __exit__(self, *exc) -> None:
        if self._restore() is not None:
            for cb in (self._gc_start, self._gc_stop):
                with contextlib.suppress(ValueError):
                    gc.callbacks.remove(cb)


def _timeout_record(run: RunSpec, limit: float) -> dict:
    from .. import __version__

    return {"run_id": run.run_id, "labels": run.labels, "config": run.config,
            "kirchnet_version": __version__, "status": "failed", "reason": "timeout",
            "error": f"timeout: still running after {limit:g} s (--run-timeout); the run was "
                     f"stopped and its worker restarted",
            "traceback": "", "metrics": {}, "finished_at": _iso(time.time())}


def _invocation_info(n_submitted, tracker, n_skipped, wall, interrupted) -> dict:
    text = (f"{n_submitted} submitted, {tracker.ok} ok, {tracker.failed} failed, "
            f"{n_skipped} already done, wall time {wall:.1f} s")
    if tracker.restarted:
        text += f", {tracker.restarted} restarted after a worker loss"
    if interrupted:
        text += " (interrupted: rerun the same command to resume)"
    return {"last invocation": text}


def _finish_outputs(out, spec, runs, records, info, report: bool) -> None:
    if report:
        write_report(out, spec, runs, records, info)
    else:
        _write_grid_tables(out, spec, runs, records)


def _write_grid_tables(out, spec, runs, records) -> None:
    """``results.csv``/``.parquet`` of the runs of the grid that have a record."""
    _write_tables(out, build_table([records[r.run_id] for r in runs if r.run_id in records],
                                   spec.axis_names()))


def _killed_worker(fut) -> bool:
    if fut.status != "error":
        return False
    try:
        return type(fut.exception()).__name__ == "KilledWorker"
    except Exception:  # noqa: BLE001 - cancelled meanwhile
        return False


def _collect(fut, run: RunSpec) -> dict | None:
    """Turn a finished future into a run record (None if it was cancelled)."""
    from .. import __version__

    base = {"run_id": run.run_id, "labels": run.labels, "config": run.config,
            "kirchnet_version": __version__}
    try:
        res = fut.result()
    except RunFailed as exc:  # the run raised (after its retries)
        return {**base, "status": "failed", "error": str(exc), "traceback": exc.traceback,
                "metrics": {}, "finished_at": _iso(time.time())}
    except Exception as exc:  # noqa: BLE001 - KilledWorker, an unreadable result, ...
        if "Cancelled" in type(exc).__name__:
            return None
        return {**base, "status": "failed", "error": _error_text(exc), "traceback": "",
                "metrics": {}, "finished_at": _iso(time.time())}
    return {**base, **res}