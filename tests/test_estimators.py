"""scikit-learn estimators: the estimator checks, realizable tasks with default settings,
clone / Pipeline / GridSearchCV, user circuits and rules."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from kirchnet import Circuit, topologies
from kirchnet.constraints import Bounds
from kirchnet.estimators import ResistiveClassifier, ResistiveRegressor, augment_inputs, default_circuit
from kirchnet.rules import Analytical


@parametrize_with_checks([ResistiveRegressor(), ResistiveClassifier()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_default_circuit_layout():
    c = default_circuit(3, 2)
    assert c.n_inputs == 8 and c.n_outputs == 2 and c.ground == 0
    assert c.network.n_edges == 9 * 2  # crossbar: (ground + 8 inputs) x 2 outputs
    h = default_circuit(3, 2, hidden=5)
    assert h.network.n_edges == 9 * 5 + 5 * 2
    np.testing.assert_array_equal(augment_inputs(np.array([[2.0, -1.0]])), [[2, -1, -2, 1, 1, -1]])


@pytest.mark.parametrize("hidden", [0, 6])
def test_regressor_defaults_fit_realizable_linear_task(hidden):
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 3.0, size=(200, 4))
    W = rng.normal(size=(4, 2))
    Y = X @ W + np.array([10.0, -4.0])
    reg = ResistiveRegressor(hidden=hidden).fit(X, Y)
    assert reg.score(X, Y) > 0.99
    assert reg.predict(X).shape == Y.shape
    assert ResistiveRegressor().fit(X, Y[:, 0]).predict(X[:3]).shape == (3,)


def test_regressor_teacher_student_same_circuit():
    """Targets from a hidden network with the estimator's own (user) circuit."""
    net = topologies.random_connected(30, mean_degree=4, seed=2)
    c = Circuit(net, ground=0, inputs=[1, 2, 3], outputs=[28, 29])
    rng = np.random.default_rng(1)
    gt = np.exp(rng.uniform(np.log(0.3), np.log(3), net.n_edges))
    Z = rng.normal(size=(150, 3))
    X = Z * 2.0 + 1.0  # the estimator standardizes X back to ~Z
    Y = c.solve(gt, (X - X.mean(0)) / X.std(0)).outputs
    reg = ResistiveRegressor(circuit=c).fit(X, Y)
    assert reg.score(X, Y) > 0.99
    h = reg.history_["loss"]
    assert h[0] / h[-1] > 100
    assert reg.circuit_ is not c  # the parameter is not mutated


def test_classifier_iris_pipeline_gridsearch():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = ResistiveClassifier().fit(X, names)
    assert clf.score(X, names) > 0.9
    assert set(clf.predict(X[:5])) <= set(names)
    p = clf.predict_proba(X[:5])
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(clf.classes_[p.argmax(1)], clf.predict(X[:5]))
    pipe = make_pipeline(StandardScaler(), ResistiveClassifier(epochs=15))
    gs = GridSearchCV(pipe, {"resistiveclassifier__temperature": [0.05, 0.2]}, cv=2).fit(X, y)
    assert gs.best_score_ > 0.8
    c2 = clone(clf)
    assert c2.get_params() == clf.get_params() and not hasattr(c2, "conductances_")


def test_classifier_mse_loss_and_binary_decision():
    X, y = load_iris(return_X_y=True)
    X, y = X[y < 2], y[y < 2]
    clf = ResistiveClassifier(loss="mse").fit(X, y)
    assert clf.score(X, y) > 0.95
    d = clf.decision_function(X)
    assert d.shape == (len(X),)
    np.testing.assert_array_equal((d > 0).astype(int), clf.predict(X))


def test_estimator_options_and_errors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = X @ np.array([1.0, -2.0])
    reg = ResistiveRegressor(rule=Analytical(), parametrization="resistance", tunable=0.5,
                             constraints=[Bounds(0.01, 100.0)], epochs=40).fit(X, y)
    assert reg.score(X, y) > 0.9
    assert np.all((reg.conductances_ >= 0.01) & (reg.conductances_ <= 100.0))
    c = Circuit(topologies.lattice(3, 3), ground=0, inputs=[1, 2, 3], outputs=[8])
    with pytest.raises(ValueError, match="inputs"):
        ResistiveRegressor(circuit=c).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ResistiveClassifier().fit(X, np.zeros(60))
    with pytest.raises(ValueError, match="loss"):
        ResistiveClassifier(loss="hinge").fit(X, (y > 0).astype(int))


# ------------------------------------------------------------ feature scale and argument checks (issue 9)
@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_regressor_works_on_features_of_extreme_scale(scale):
    """Features scaled by 1e300 overflowed the standard deviation (predictions were constant);
    standardization now divides by each feature's largest magnitude first."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 3))
    y = X @ np.array([0.3, -0.2, 0.1]) + 0.05
    ref = ResistiveRegressor(epochs=30).fit(X, y)
    est = ResistiveRegressor(epochs=30).fit(X * scale, y)
    pred = est.predict(X * scale)
    assert np.isfinite(pred).all() and np.std(pred) > 0.1
    np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-9, atol=1e-12)
    assert est.score(X * scale, y) > 0.99


def test_regressor_targets_of_extreme_scale():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (40, 2))
    y = X @ np.array([0.4, -0.3])
    est = ResistiveRegressor(epochs=30).fit(X, y * 1e300)
    np.testing.assert_allclose(est.predict(X) / 1e300, ResistiveRegressor(epochs=30).fit(X, y).predict(X),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("params, match", [
    (dict(epochs=2.7), r"epochs must be an integer, got 2\.7"),
    (dict(batch_size=0), r"batch_size must be >= 1, got 0"),
    (dict(hidden=1.5), r"hidden must be an integer, got 1\.5"),
    (dict(hidden=None), r"hidden must be an integer, got None"),
    (dict(init_conductance=np.inf), r"init_conductance must be finite, got inf"),
    (dict(init_conductance=-1.0), r"init_conductance must be > 0\.0, got -1\.0"),
])
def test_estimator_arguments_are_value_errors(params, match):
    from kirchnet.errors import ParameterError

    X = np.random.default_rng(0).uniform(-1, 1, (12, 2))
    for est in (ResistiveRegressor(**params), ResistiveClassifier(**params)):
        with pytest.raises(ParameterError, match=match) as info:
            est.fit(X, (X[:, 0] > 0).astype(int))
        assert isinstance(info.value, ValueError)  # scikit-learn's convention


def test_estimator_full_batch():
    X = np.random.default_rng(0).uniform(-1, 1, (20, 2))
    est = ResistiveRegressor(batch_size=None, epochs=3).fit(X, X[:, 0] * 0.2)
    ref = ResistiveRegressor(batch_size=20, epochs=3).fit(X, X[:, 0] * 0.2)
    np.testing.assert_allclose(est.predict(X), ref.predict(X), rtol=1e-12)
