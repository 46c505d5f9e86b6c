"""Memory guard: refuse an allocation that cannot fit before trying it.

``require(nbytes, what, fix)`` raises a kirchnet error (default :class:`SolverError`)
naming the estimate, the limit and the alternative when ``nbytes`` exceeds
:func:`memory_limit`: ``KIRCHNET_MEMORY_LIMIT`` (bytes, or with a suffix ``K``, ``M``,
``G``, ``T``, e.g. ``8G``; ``0`` or ``none`` disables the guard) or, by default,
:data:`FRACTION` of the memory the operating system reports as available now
(``MemAvailable`` in ``/proc/meminfo``, else ``os.sysconf``). Estimates are of the
dominant arrays only; the guard exists to turn a certain ``MemoryError`` (or an
out-of-memory kill) after minutes into an immediate, explained refusal.
"""

from __future__ import annotations

import os
import re

from .errors import ConfigError, SolverError

ENV = "KIRCHNET_MEMORY_LIMIT"
#: default limit: this fraction of the currently available memory
FRACTION = 0.75
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _available_bytes() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(text: str) -> float:
    """``"8G"`` -> 8 * 2**30 bytes; ``"1e9"`` -> 1e9; ``"0"`` / ``"none"`` -> inf (no limit)."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B") if text is not None else ""
    if t in ("0", "NONE", "OFF", "INF"):
        return float("inf")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:E[+-]?[0-9]+)?)\s*([KMGT]?)", t)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{ENV}={text!r} is not a memory size; use bytes or a number with a "
                          f"suffix K, M, G or T (e.g. 8G), or 0 to disable the memory guard")
    return float(m.group(1)) * _UNITS[m.group(2)]


def memory_limit() -> tuple[float, str]:
    """``(bytes, where it comes from)``; ``inf`` when nothing is known or the guard is off."""
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return parse_size(env), f"{ENV}={env}"
    avail = _available_bytes()
    if avail is None:
        return float("inf"), "unknown available memory"
    return FRACTION * avail, f"{FRACTION:.0%} of the {human(avail)} available; set {ENV} to change it"


def human(nbytes: float) -> str:
    """``12.8 GB`` style (decimal units)."""
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= f:
            return f"{nbytes / f:.1f} {unit}"
    return f"{nbytes:.0f} B"


#: allocations below this are not checked against the available memory (reading it costs
#: more than a small solve); an explicit KIRCHNET_MEMORY_LIMIT is always honoured
UNCHECKED_BELOW = 2.0**28


def require(nbytes: float, what: str, fix: str, error: type[Exception] = SolverError) -> None:
    """Raise ``error`` when ``what`` (estimated ``nbytes``) exceeds the memory limit."""
    if nbytes < UNCHECKED_BELOW and not os.environ.get(ENV):
        return
    limit, source = memory_limit()
    if nbytes > limit:
        raise error(f"{what} would need about {human(nbytes)}, more than the memory limit of "
                    f"{human(limit)} ({source}); {fix}")
