"""Losses: values and output errors against closed forms and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from kirchnet import CrossEntropy, Loss, SquaredError, get_loss


def _fd_delta(loss, o, y, h=1e-6):
    """Central differences of the per-sample loss w.r.t. every output, (b, k)."""
    b, k = o.shape
    out = np.zeros_like(o)
    for j in range(k):
        step = np.zeros_like(o)
        step[:, j] = h
        out[:, j] = (loss(o + step, y)[0] - loss(o - step, y)[0]) / (2 * h)
    return out


def test_squared_error_closed_form():
    o = np.array([[1.0, 2.0], [0.0, -1.0]])
    y = np.array([[0.5, 2.5], [1.0, -1.0]])
    values, delta = SquaredError()(o, y)
    np.testing.assert_allclose(values, [0.25, 0.5])  # 1/2 (0.25 + 0.25), 1/2 (1 + 0)
    np.testing.assert_array_equal(delta, o - y)
    # one sample given as (k,), and a single output given as (b,)
    v1, d1 = SquaredError()(o[:1], y[0])
    np.testing.assert_allclose(v1, [0.25])
    v2, d2 = SquaredError()(o[:, :1], y[:, 0])
    np.testing.assert_allclose(v2, [0.125, 0.5])


@pytest.mark.parametrize("temperature", [1.0, 0.3, 4.0])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_cross_entropy_against_definition_and_fd(temperature, targets):
    rng = np.random.default_rng(0)
    b, k = 6, 4
    o = rng.normal(scale=2.0, size=(b, k))
    if targets == "labels":
        y = rng.integers(0, k, size=b)
        p = np.eye(k)[y]
    else:
        y = rng.dirichlet(np.ones(k), size=b)
        p = y
    loss = CrossEntropy(temperature=temperature)
    values, delta = loss(o, y)
    z = o / temperature
    expected = -(p * (z - logsumexp(z, axis=1, keepdims=True))).sum(axis=1)
    np.testing.assert_allclose(values, expected, rtol=1e-13)
    fd = _fd_delta(loss, o, y)
    np.testing.assert_allclose(delta, fd, rtol=1e-7, atol=1e-9)
    # for a distribution target the errors sum to zero: softmax and p both sum to one
    np.testing.assert_allclose(delta.sum(axis=1), 0, atol=1e-14)


def test_cross_entropy_unnormalized_probabilities_fd():
    """Targets that do not sum to one still give delta = dC/do."""
    o = np.array([[0.3, -1.0, 2.0]])
    y = np.array([[0.5, 1.5, 0.0]])
    loss = CrossEntropy()
    np.testing.assert_allclose(loss(o, y)[1], _fd_delta(loss, o, y), rtol=1e-7, atol=1e-10)


def test_cross_entropy_is_stable_for_large_logits():
    o = np.array([[1000.0, 0.0, -1000.0]])
    values, delta = CrossEntropy()(o, np.array([0]))
    assert np.isfinite(values).all() and values[0] == pytest.approx(0.0, abs=1e-300)
    values, delta = CrossEntropy()(o, np.array([1]))
    assert values[0] == pytest.approx(1000.0, rel=1e-14)
    np.testing.assert_allclose(delta, [[1.0, -1.0, 0.0]], atol=1e-300)


def test_cross_entropy_label_and_onehot_agree():
    o = np.random.default_rng(1).normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    v1, d1 = CrossEntropy()(o, labels)
    v2, d2 = CrossEntropy()(o, np.eye(3)[labels])
    np.testing.assert_allclose(v1, v2, rtol=1e-14)
    np.testing.assert_allclose(d1, d2, rtol=1e-14, atol=1e-16)
    v3, _ = CrossEntropy()(o, labels.astype(float))  # integral floats are labels too
    np.testing.assert_allclose(v3, v1, rtol=1e-14)


def test_get_loss():
    assert isinstance(get_loss("mse"), SquaredError)
    assert isinstance(get_loss("squared_error"), SquaredError)
    assert isinstance(get_loss("cross_entropy"), CrossEntropy)
    assert isinstance(get_loss("ce"), CrossEntropy)
    inst = CrossEntropy(temperature=2.0)
    assert get_loss(inst) is inst
    with pytest.raises(ValueError, match=r"unknown loss 'l1'; choose one of \['ce', 'cross_entropy', 'mse', 'squared_error'\]"):
        get_loss("l1")
    with pytest.raises(ValueError, match="unknown loss 3"):
        get_loss(3)


def test_custom_loss_plugs_into_the_gradient():
    """The Loss interface: a user loss (here 1/4 sum (o - y)^4) drives loss_and_grad."""
    from kirchnet import Circuit, topologies

    class Quartic(Loss):
        name = "quartic"

        def __call__(self, outputs, targets):
            d = outputs - np.asarray(targets, dtype=float)
            return 0.25 * (d ** 4).sum(axis=1), d ** 3

    net = topologies.lattice(3, 3)
    c = Circuit(net, ground=0, inputs=[8], outputs=[4, 5])
    rng = np.random.default_rng(2)
    g = rng.uniform(0.5, 2.0, net.n_edges)
    x, y = rng.normal(size=(3, 1)), rng.normal(size=(3, 2))
    loss, grad = c.loss_and_grad(g, x, y, loss=Quartic())
    h = 1e-6
    fd = np.array([(c.loss_and_grad(g + h * np.eye(net.n_edges)[e], x, y, loss=Quartic())[0]
                    - c.loss_and_grad(g - h * np.eye(net.n_edges)[e], x, y, loss=Quartic())[0]) / (2 * h)
                   for e in range(net.n_edges)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())


# ------------------------------------------------------------ argument validation (issue 9)
@pytest.mark.parametrize("temperature, match", [
    (0.0, r"temperature must be > 0\.0, got 0\.0"),
    (-1.0, r"temperature must be > 0\.0, got -1\.0"),  # would train toward the wrong class
    (np.nan, r"temperature must be finite, got nan"),
    (np.inf, r"temperature must be finite, got inf"),
    ("0.1", r"temperature must be a real number, got '0\.1'"),
])
def test_cross_entropy_temperature_is_checked(temperature, match):
    from kirchnet.errors import ParameterError

    with pytest.raises(ParameterError, match=match):
        CrossEntropy(temperature)


@pytest.mark.parametrize("loss, o, y", [
    (SquaredError(), np.array([[1e200, 0.0]]), np.array([[0.0, 0.0]])),   # (1e200)^2 overflows
    (SquaredError(), np.array([[1e308, 0.0]]), np.array([[-1e308, 0.0]])),  # o - y overflows
    (CrossEntropy(1e-300), np.array([[1e10, 0.0]]), np.array([1])),       # o / T overflows
])
def test_losses_never_return_non_finite_values(loss, o, y):
    from kirchnet.errors import ParameterError

    with pytest.raises(ParameterError, match=r"loss is not finite \(largest output magnitude .*\); .*rescale"):
        loss(o, y)


@pytest.mark.parametrize("loss, y, match", [
    (SquaredError(), np.array([["a", "b"]]), r"targets must be numbers .* got str"),
    (SquaredError(), [[0.1, 0.2], [0.3]], r"targets must be numbers .* got a ragged or mixed array"),
    (CrossEntropy(), np.array(["cat", "dog"]), r"targets must be numbers .*encode class names as 0\.\.k-1"),
    (CrossEntropy(), np.array([True, False]), r"class labels must be integers 0\.\.k-1, got booleans"),
])
def test_non_numeric_targets_are_shape_errors(loss, y, match):
    from kirchnet.errors import ShapeError

    with pytest.raises(ShapeError, match=match):
        loss(np.zeros((2, 2)), y)
