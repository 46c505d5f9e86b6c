"""Subnormal numbers flushed to zero for the duration of a sparse factorization.

The tangent Laplacian of a diode network at an operating point has weights from ~1 S down
to 1e-30 S and below (reverse-biased diodes); eliminating along chains of such edges fills
the Cholesky factor with entries below 1e-300, and arithmetic on subnormal numbers is
10-100x slower on x86-64. Measured: CHOLMOD's numeric factorization of
``bench_nonlinear.py``'s 10^5-node diode lattice at its equilibrium, 16,460 subnormal
entries in the factor, 473-504 ms; the same with flush-to-zero and denormals-are-zero set
229 ms (199 ms with the resistors' conductances). Entries below 2.2e-308 carry nothing the
solution can see, so circuit simulators run this way.

:func:`flush_subnormals` sets the x86-64 MXCSR bits FTZ and DAZ through glibc's
``fegetenv``/``fesetenv`` (no compiler needed) and restores the caller's floating-point
environment afterwards, also on an exception. Elsewhere (other CPUs or C libraries) it
does nothing. Only the calling thread's mode changes: a multi-threaded BLAS's worker
threads keep theirs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys

#: x86-64 MXCSR: flush-to-zero (bit 15) and denormals-are-zero (bit 6)
_FTZ_DAZ = 0x8040
#: glibc's x86-64 ``fenv_t``: 32 bytes, the MXCSR in the last 4
_FENV_BYTES, _MXCSR_OFFSET = 32, 28


def _libm():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        buf = ctypes.create_string_buffer(_FENV_BYTES)
        if lib.fegetenv(buf) != 0:
            return None
        mxcsr = int.from_bytes(buf.raw[_MXCSR_OFFSET:], "little")
    except (OSError, AttributeError):
        return None
    # a sane MXCSR (the exception masks of the default environment set, nothing above bit 15):
    # otherwise the layout is not the one assumed here
    return lib if mxcsr >> 16 == 0 and mxcsr & 0x1F80 == 0x1F80 else None


_LIBM = _libm()
#: whether :func:`flush_subnormals` changes anything on this machine
AVAILABLE = _LIBM is not None


@contextlib.contextmanager
def flush_subnormals():
    """Run the block with subnormal inputs and results treated as zero (module docstring)."""
    if _LIBM is None:
        yield
        return
    saved = ctypes.create_string_buffer(_FENV_BYTES)
    if _LIBM.fegetenv(saved) != 0:
        yield
        return
    raw = saved.raw
    mxcsr = int.from_bytes(raw[_MXCSR_OFFSET:], "little") | _FTZ_DAZ
    _LIBM.fesetenv(ctypes.create_string_buffer(raw[:_MXCSR_OFFSET] + mxcsr.to_bytes(4, "little"), _FENV_BYTES))
    try:
        yield
    finally:
        _LIBM.fesetenv(saved)
