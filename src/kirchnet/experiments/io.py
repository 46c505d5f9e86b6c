"""Atomic file output and output-directory safety: refusal, locking, completion markers.

Every file is written to a temporary file in the same folder (created with mode
``0o666``, so the kernel applies the caller's umask exactly as ``open(path, "w")``
would; an existing file keeps its mode), flushed to disk, then moved over the target
with ``os.replace``: a reader sees the old file or the new one, never a mix.

An output directory is used through :func:`open_output_dir`: an existing non-empty
directory is refused (:class:`OutputExistsError`) unless ``force`` or ``resume``; a lock
file (``.kirchnet.lock``, an ``flock`` held for the life of the run, naming pid, host,
start time and command) makes a second writer fail at once (:class:`OutputLockedError`);
the lock of a dead process is released by the kernel and taken over; ``complete.json``,
written last by :meth:`OutputDir.complete`, tells a finished directory from a killed one.
Write failures (read-only directory, disk full, permissions) raise :class:`OutputError`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import re
import secrets
import socket
import stat
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import KirchnetError

LOCK_NAME = ".kirchnet.lock"
COMPLETE_NAME = "complete.json"

__all__ = ["OutputExistsError", "OutputLockedError", "OutputError", "write_bytes", "write_text",
           "write_json", "write_csv", "save_figure", "prepare_out_dir", "timestamped_dir",
           "new_output_dir", "open_output_dir", "OutputDir", "lock_holder", "is_complete",
           "read_complete", "safe_component", "LOCK_NAME", "COMPLETE_NAME"]


class OutputExistsError(KirchnetError, FileExistsError):
    """The output directory exists and is not empty (pass ``force`` to reuse it)."""


class OutputLockedError(OutputExistsError):
    """Another live process holds the output directory's lock."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


class OutputError(KirchnetError, OSError):
    """An output file or directory cannot be written (read-only, permissions, disk full)."""


def _default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def describe_os_error(exc: OSError, path) -> str:
    """A message for a failed write of ``path`` that says what to do."""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"cannot write {path}: the disk is full (or the quota is exceeded): free some "
                f"space, or choose another --out, and run again")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {path}: {exc.strerror or 'permission denied'} (the directory is "
                f"read-only or not yours): choose another --out or fix its permissions")
    if code == errno.ENOTDIR:
        return f"cannot write {path}: a parent of it is a file, not a directory: choose another --out"
    return f"cannot write {path}: {exc.strerror or exc}"


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder (mode
    ``0o666 & ~umask``, or the existing file's mode), flushed to disk, then ``os.replace``.
    Raises :class:`OutputError` when the file cannot be written."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            keep_mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            keep_mode = None
        for _ in range(100):
            tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 48 random bits
            raise OutputError(f"cannot create a temporary file next to {path}")
        try:
            try:
                _write_fd(fd, data)
                if keep_mode is not None:
                    os.fchmod(fd, keep_mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(describe_os_error(exc, path)) from exc
    return path


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_default, allow_nan=True) + "\n")


def write_csv(path, rows: Iterable[Mapping[str, Any]], fieldnames: list[str] | None = None) -> Path:
    """Rows (dicts) as CSV; columns = ``fieldnames`` or the union of keys in first-seen order."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = []
        for r in rows:
            fieldnames += [k for k in r if k not in fieldnames]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    return write_text(path, buf.getvalue())


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def save_figure(fig, path) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- names
def safe_component(name: str, fallback: str = "run") -> str:
    """``name`` as one safe path component: characters outside ``[A-Za-z0-9_.-]`` become
    ``_``, leading dots are dropped (no ``..``, no hidden names, no separators)."""
    text = re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name)).lstrip(".")[:80]
    return text or fallback


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def timestamped_dir(base, prefix: str) -> Path:
    """``base/prefix-YYYYmmdd-HHMMSS`` (with a numeric suffix if it already exists); not created."""
    base = Path(base)
    stamp = _stamp()
    prefix = safe_component(prefix)
    cand = base / f"{prefix}-{stamp}"
    k = 2
    while cand.exists():
        cand = base / f"{prefix}-{stamp}-{k}"
        k += 1
    return cand


def new_output_dir(base, prefix: str) -> Path:
    """Create and return a new directory ``base/prefix-YYYYmmdd-HHMMSS[-k]``: ``prefix`` is
    made a safe name (:func:`safe_component`) and the directory is created with
    ``mkdir(exist_ok=False)``, so two commands started in the same second never share it."""
    base = Path(base)
    prefix = safe_component(prefix)
    stamp = _stamp()
    try:
        base.mkdir(parents=True, exist_ok=True)
        for k in range(1, 10000):
            cand = base / (f"{prefix}-{stamp}" if k == 1 else f"{prefix}-{stamp}-{k}")
            if not _inside(base, cand):  # pragma: no cover - safe_component prevents it
                raise OutputExistsError(f"output name {prefix!r} would leave {base}")
            try:
                cand.mkdir()
                return cand
            except FileExistsError:
                continue
    except OSError as exc:
        if isinstance(exc, KirchnetError):
            raise
        raise OutputError(describe_os_error(exc, base)) from exc
    raise OutputExistsError(f"no free directory name for {prefix}-{stamp} in {base}")  # pragma: no cover


# --------------------------------------------------------------------------- directories
def _content(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)


def _exists_message(out: Path, resume_hint: bool) -> str:
    return (f"output directory {out} already exists and is not empty; choose another --out, "
            f"or pass --force to write into it" + (", or --resume to continue it" if resume_hint else ""))


def prepare_out_dir(out, force: bool = False, resume: bool = False, resume_hint: bool = False) -> Path:
    """Create ``out``; refuse an existing non-empty directory unless ``force`` or ``resume``
    (no lock; see :func:`open_output_dir`)."""
    out = Path(out)
    try:
        if out.exists() or out.is_symlink():
            if not out.is_dir():
                raise OutputExistsError(f"output path {out} exists and is not a directory; choose another --out")
            if _content(out) and not (force or resume):
                raise OutputExistsError(_exists_message(out, resume_hint))
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if isinstance(exc, KirchnetError):
            raise
        raise OutputError(describe_os_error(exc, out)) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: the directory is read-only or not yours: choose another "
                          f"--out or fix its permissions")
    return out


def _read_holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder_of(lock_path: Path, wait: float = 0.5) -> dict:
    """:func:`_read_holder` of a lock that another process holds: it writes who it is just
    after it locks, so an empty file is read again for up to ``wait`` seconds (a message
    naming the pid rather than "another process")."""
    deadline = time.monotonic() + wait
    while not (holder := _read_holder(lock_path)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return holder


def _holder_text(h: dict) -> str:
    if not h:
        return "another process"
    return (f"pid {h.get('pid', '?')} on host {h.get('host', '?')} since {h.get('started_at', '?')} "
            f"(command: {h.get('command', '?')})")


def lock_holder(directory) -> dict | None:
    """The holder of ``directory``'s lock (``{"pid", "host", "started_at", "command"}``; ``{}``
    if unreadable) while a live process holds it, else None. Touches nothing."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(path)
    finally:
        os.close(fd)
    return None


def _lock_message(out: Path, holder: dict) -> str:
    return (f"output directory {out} is in use by {_holder_text(holder)}; wait for it to finish, "
            f"or choose another --out (lock file {out / LOCK_NAME})")


class OutputDir:
    """An output directory held by this process (see :func:`open_output_dir`).

    ``path``: the directory; ``stale``: the holder record of a dead process whose lock was
    taken over (else None); ``resumed``: the directory had content and ``resume`` was given.
    """

    def __init__(self, path: Path, fd: int, stale: dict | None, resumed: bool, command: str,
                 started_at: str):
        self.path, self._fd, self.stale, self.resumed = path, fd, stale, resumed
        self.command, self.started_at = command, started_at

    def complete(self, **info) -> Path:
        """Write ``complete.json`` (the last file of a finished run): command, start and end."""
        from .. import __version__

        return write_json(self.path / COMPLETE_NAME, {
            "status": "complete", "command": self.command, "started_at": self.started_at,
            "finished_at": _iso_now(), "kirchnet_version": __version__, **info})

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        path = self.path / LOCK_NAME
        try:
            if os.stat(path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # pragma: no cover - a forgotten release
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _command() -> str:
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "kirchnet")):
        argv[0] = "kirchnet"
    return " ".join(shlex.quote(a) for a in argv)


def open_output_dir(out=None, *, base="results", prefix="run", force: bool = False, resume: bool = False,
                    command: str | None = None, resume_hint: bool = False) -> OutputDir:
    """Take an output directory for one run or sweep and lock it.

    ``out=None``: a new ``base/prefix-<timestamp>`` (:func:`new_output_dir`). An existing
    non-empty ``out`` is refused with :class:`OutputExistsError` unless ``force`` (write
    into it) or ``resume`` (the caller continues it); nothing is touched when refused. A
    directory locked by a live process raises :class:`OutputLockedError` naming the holder
    (pid, host, start time, command); a lock left by a dead process is taken over
    (``OutputDir.stale``). A previous ``complete.json`` is removed: the directory is in
    progress until :meth:`OutputDir.complete`. Unwritable paths raise :class:`OutputError`.
    """
    command = command or _command()
    if out is None:
        path = new_output_dir(base, prefix)
    else:
        path = Path(out)
        if path.is_dir():  # refuse before touching anything
            holder = lock_holder(path)
            if holder is not None:
                raise OutputLockedError(_lock_message(path, holder), holder)
        path = prepare_out_dir(path, force=force, resume=resume, resume_hint=resume_hint)
    lock_path = path / LOCK_NAME
    try:
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise OutputLockedError(_lock_message(path, holder := _holder_of(lock_path)), holder) from None
                raise
            try:  # the file we locked is still the lock file (not unlinked by a releasing holder)
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = os.read(fd, 1 << 16)
    except OSError as exc:
        if isinstance(exc, KirchnetError):
            raise
        raise OutputError(describe_os_error(exc, lock_path)) from exc
    stale = None
    if previous.strip():
        try:
            stale = json.loads(previous)
        except ValueError:
            stale = {}
    started = _iso_now()
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": started, "command": command}
    handle = OutputDir(path, fd, stale, resumed=False, command=command, started_at=started)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        _write_fd(fd, (json.dumps(info) + "\n").encode())
        os.fsync(fd)
        content = _content(path)  # again, under the lock: a writer that finished meanwhile
        if content and not (force or resume):
            raise OutputExistsError(_exists_message(path, resume_hint))
        handle.resumed = bool(content) and resume
        if content:
            remove_stale_temp_files(path)
        try:
            os.unlink(path / COMPLETE_NAME)
        except FileNotFoundError:
            pass
    except BaseException as exc:
        handle.release()
        if isinstance(exc, OSError) and not isinstance(exc, KirchnetError):
            raise OutputError(describe_os_error(exc, path)) from exc
        raise
    return handle


_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def remove_stale_temp_files(directory) -> int:
    """Delete the temporary files of :func:`write_bytes` that a killed writer left in
    ``directory`` (recursively); call it only while holding the directory's lock."""
    n = 0
    for root, _, files in os.walk(directory):
        for f in files:
            if _TEMP_RE.match(f):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, f))
                    n += 1
    return n


def read_complete(directory) -> dict | None:
    """The completion record of ``directory`` (None if the run did not finish)."""
    p = Path(directory) / COMPLETE_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") == "complete" else None


def is_complete(directory) -> bool:
    """True when ``directory`` holds a finished run (its ``complete.json`` is present)."""
    return read_complete(directory) is not None
