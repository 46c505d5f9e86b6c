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


# ------------------------------------------------------------------ scalar arguments
# One helper per kind of check. Each returns the clean value and raises a kirchnet error
# whose message names the argument, the offending value and the fix.

def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None,
              error=ParameterError) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``.

    Integers (Python or numpy) and integral floats (``3.0``) are accepted; ``2.5``,
    ``"3"``, ``True``, NaN and inf are refused (no silent truncation or parsing).
    """
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        hint = (f"e.g. {name}={int(np.floor(value))} or {int(np.ceil(value))}"
                if _is_number(value) and np.isfinite(value) else f"pass an int, not a {type(value).__name__}")
        raise error(f"{name} must be an integer, got {value!r}; {hint}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(value, name: str, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, error=ParameterError) -> float:
    """``value`` as a finite ``float`` in the interval given by ``low``/``high``.

    ``low_open``/``high_open`` exclude the end point (e.g. ``low=0, low_open=True``
    for a strictly positive value). Booleans, strings, complex numbers, NaN and inf
    are refused.
    """
    if not _is_number(value):
        raise error(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise error(f"{name} must be finite, got {value!r}; pass a finite number")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low!r}"
        hi = "" if high is None else f"{high!r}" + (")" if high_open else "]")
        if low is not None and high is not None:
            where = f"lie in {lo}, {hi}"
        elif low is not None:
            where = f"be {'>' if low_open else '>='} {low!r}"
        else:
            where = f"be {'<' if high_open else '<='} {high!r}"
        raise error(f"{name} must {where}, got {value!r}")
    return value


def check_positive(value, name: str, error=ParameterError) -> float:
    """A finite ``float > 0``."""
    return check_real(value, name, low=0.0, low_open=True, error=error)


def check_probability(value, name: str, error=ParameterError) -> float:
    """A ``float`` in ``[0, 1]``."""
    return check_real(value, name, low=0.0, high=1.0, error=error)


def check_seed(seed, name: str = "seed", error=ParameterError) -> int:
    """A random seed: an integer ``>= 0`` (numpy refuses negative seeds with its own
    error; here the message names the argument)."""
    if isinstance(seed, (float, np.floating)) and not (np.isfinite(seed) and float(seed).is_integer()):
        raise error(f"{name} must be a non-negative integer, got {seed!r}")
    if not _is_number(seed):
        raise error(f"{name} must be a non-negative integer, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if seed < 0:
        raise error(f"{name} must be a non-negative integer, got {seed}; use e.g. {name}={-seed}")
    return seed


def check_choice(value, name: str, choices, error=ParameterError):
    """``value`` if it is one of ``choices`` (compared with ``==``; strings only when the
    choices are strings)."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable or incomparable
        ok = False
    if not ok or (isinstance(choices[0], str) and not isinstance(value, str)):
        raise error(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_finite_array(values, name: str, dtype=float, error=ShapeError, fix: str = "") -> np.ndarray:
    """``values`` as a numpy array of ``dtype`` with every entry finite (no NaN, no inf).

    Ragged nested lists, strings and objects that are not numbers are refused with a
    kirchnet error instead of numpy's ``ValueError``/``TypeError``.
    """
    try:
        complex_ = np.iscomplexobj(values)
        arr = None if complex_ else np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be an array of numbers (a rectangular list or numpy array), "
                    f"got {type(values).__name__}: {exc}") from None
    if complex_:
        _reject_complex(values, name)
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.argwhere(bad)[:3]
            raise error(f"{name} must be finite; {int(bad.sum())} NaN or inf value(s), e.g. at index "
                        f"{', '.join(str(tuple(int(i) for i in w)) for w in where)}"
                        + (f"; {fix}" if fix else ""))
    return arr

