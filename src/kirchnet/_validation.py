"""Small input checks shared by the public entry points."""

from __future__ import annotations

import numpy as np

from .errors import ParameterError, ShapeError

_MAX_LISTED = 10


def _list(ids) -> str:
    ids = [int(i) for i in ids]
    text = ", ".join(str(i) for i in ids[:_MAX_LISTED])
    if len(ids) > _MAX_LISTED:
        text += f", ... ({len(ids)} in all)"
    return text


def _reject_complex(values, name: str) -> None:
    """Complex input would be silently truncated to its real part by ``asarray(dtype=float)``."""
    if np.iscomplexobj(values):
        raise ParameterError(f"{name} must be real; got complex values (kirchnet solves DC "
                             f"resistor networks: pass real conductances and voltages)")


def check_positive_finite(values, n: int, name: str = "conductances") -> np.ndarray:
    """Return ``values`` as a float array of shape ``(n,)``; every entry finite and > 0."""
    _reject_complex(values, name)
    arr = np.asarray(values, dtype=float)
    if arr.shape != (n,):
        raise ShapeError(f"{name} must have shape ({n},) (one value per edge), got {arr.shape}")
    if 0.0 < arr.min() and arr.max() < np.inf:  # fast path (NaN fails both comparisons)
        return arr
    bad_nan = np.flatnonzero(~np.isfinite(arr))
    if bad_nan.size:
        raise ParameterError(
            f"{name} must be finite; NaN or inf on edge(s) {_list(bad_nan)}", edges=bad_nan
        )
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ParameterError(
            f"{name} must be strictly positive; non-positive value(s) on edge(s) {_list(bad)} "
            f"(e.g. {float(arr[bad[0]])!r})",
            edges=bad,
        )
    return arr


def as_batch(x, width: int, name: str) -> tuple[np.ndarray, bool]:
    """Return ``x`` as a 2-D ``(batch, width)`` float array and whether it was 1-D."""
    _reject_complex(x, name)
    arr = np.asarray(x, dtype=float)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ShapeError(
            f"{name} must have shape ({width},) or (batch, {width}), got {np.shape(x)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ShapeError(f"{name} contains NaN or inf")
    return arr, single
