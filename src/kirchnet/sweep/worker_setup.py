"""Imported by each worker process of a sweep's local cluster (Dask's worker ``preload``):
the worker ignores SIGINT.

A terminal's Ctrl-C goes to the whole foreground process group, the workers included. The
command itself stops the sweep, keeps the finished runs and closes the cluster; a worker
that took the Ctrl-C too died with a KeyboardInterrupt traceback on the console (asyncio's
handler in distributed's worker process; dask/distributed issue 1925), and one in the
middle of its start failed it ("Nanny failed to start")."""

from __future__ import annotations

import signal
import threading


def ignore_ctrl_c() -> bool:
    """SIGINT ignored in this process (from its main thread; elsewhere nothing changes).
    Returns whether it is ignored now."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def dask_setup(worker=None) -> None:
    """Dask's preload hook, run in the worker process as it starts."""
    ignore_ctrl_c()
