"""A Ctrl-C that numba's dispatcher turned into a ``SystemError``, raised as the
``KeyboardInterrupt`` it is.

numba boxes a compiled function's tuple result that holds arrays through calls into Python;
a SIGINT whose handler runs there leaves its ``KeyboardInterrupt`` set while the dispatcher
returns a result, and CPython then raises ``SystemError: CPUDispatcher(...) returned a
result with an exception set`` with the ``KeyboardInterrupt`` as its cause (numba 0.68:
10 of 300 Ctrl-Cs in a loop of such calls; none with a scalar result). Callers that handle
Ctrl-C (the command line, a user's ``except KeyboardInterrupt``) would see an error instead.
The long-running public entry points (``fit``, :func:`run_training`, ``reproduce``) are
wrapped with :func:`reraises_ctrl_c`; wrapping the kernels themselves is not possible (other
compiled functions call them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def caused_by_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``SystemError`` whose cause (or context) chain holds a
    ``KeyboardInterrupt``."""
    if not isinstance(exc, SystemError):
        return False
    seen = set()
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def reraises_ctrl_c(fn: F) -> F:
    """``fn``, with a ``SystemError`` caused by a Ctrl-C (:func:`caused_by_ctrl_c`) raised
    as ``KeyboardInterrupt``; every other exception unchanged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SystemError as exc:
            if caused_by_ctrl_c(exc):
                raise KeyboardInterrupt from exc
            raise

    return wrapper  # type: ignore[return-value]
