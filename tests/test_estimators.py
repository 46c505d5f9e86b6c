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
    reg = ResistiveRegressor(hidden=hidden, hidden_kind="linear").fit(X, Y)   # hidden=6: a linear hidden layer
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


# ----------------------------------------------------------------------------- the loss that trains
def _iris_small():
    X, y = load_iris(return_X_y=True)
    return X[::3], y[::3]


def test_rule_trains_the_estimators_loss_and_temperature():
    """rule=EP(...) used to train MSE while loss='cross_entropy' was reported; the centered
    current nudge is exact, so it must now match the exact cross-entropy gradient."""
    from kirchnet.losses import CrossEntropy
    from kirchnet.rules import EquilibriumPropagation

    X, y = _iris_small()
    kw = dict(epochs=5, temperature=0.2)
    ref = ResistiveClassifier(**kw).fit(X, y)
    ep = ResistiveClassifier(rule=EquilibriumPropagation(beta=0.1), **kw).fit(X, y)
    assert ep.rule_.loss == CrossEntropy(0.2) and ref.rule_.loss == CrossEntropy(0.2)
    np.testing.assert_allclose(ep.conductances_, ref.conductances_, rtol=1e-9)
    by_name = ResistiveClassifier(rule="ep", **kw).fit(X, y)
    assert type(by_name.rule_).__name__ == "EquilibriumPropagation" and by_name.rule_.loss == CrossEntropy(0.2)
    np.testing.assert_allclose(by_name.conductances_, ref.conductances_, rtol=1e-9)
    # predict_proba uses the temperature that trained, not a later set_params
    o = ep.decision_function(X)
    p = ep.predict_proba(X)
    ep.set_params(temperature=5.0)
    np.testing.assert_allclose(ep.predict_proba(X), p)
    np.testing.assert_allclose(p, np.exp(o / 0.2) / np.exp(o / 0.2).sum(1, keepdims=True))
    # the temperature changes the result (GridSearchCV over it is not a no-op)
    hot = ResistiveClassifier(rule="ep", epochs=5, temperature=1.0).fit(X, y)
    assert np.abs(hot.conductances_ - by_name.conductances_).max() > 1e-3


def test_conflicting_rule_loss_is_refused():
    from kirchnet.errors import ConfigError
    from kirchnet.losses import CrossEntropy

    X, y = _iris_small()
    with pytest.raises(ConfigError, match=r"carries the loss CrossEntropy\(temperature=0.3\).*temperature=0.1"):
        ResistiveClassifier(rule=Analytical(CrossEntropy(0.3)), temperature=0.1, epochs=1).fit(X, y)
    with pytest.raises(ConfigError, match="carries the loss CrossEntropy"):
        ResistiveRegressor(rule=Analytical(CrossEntropy(0.3)), epochs=1).fit(X, y.astype(float))
    # a matching loss is accepted
    ResistiveClassifier(rule=Analytical(CrossEntropy(0.3)), temperature=0.3, epochs=1).fit(X, y)


def test_rule_names_dicts_and_tunable_forms_of_the_config():
    from kirchnet.errors import ConfigError
    from kirchnet.rules import AdjointCoupledLearning, CoupledLearning, InSitu

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    y = X @ np.array([1.0, -0.5])
    r = ResistiveRegressor(rule={"name": "cl", "eta": 0.05}, epochs=2).fit(X, y)
    assert isinstance(r.rule_, CoupledLearning) and r.rule_.eta == 0.05 and r.rule_.variant == "positive"
    assert isinstance(ResistiveRegressor(rule="acl", epochs=1).fit(X, y).rule_, AdjointCoupledLearning)
    assert isinstance(ResistiveRegressor(rule="insitu", epochs=1).fit(X, y).rule_, InSitu)
    with pytest.raises(ConfigError, match="rule.name"):
        ResistiveRegressor(rule="backprop", epochs=1).fit(X, y)
    with pytest.raises(ConfigError, match="rule.etaa: unknown key"):
        ResistiveRegressor(rule={"name": "cl", "etaa": 0.1}, epochs=1).fit(X, y)
    with pytest.raises(TypeError, match="rule must be None, a rule name"):
        ResistiveRegressor(rule=3, epochs=1).fit(X, y)
    m = default_circuit(2, 1).network.n_edges
    half = ResistiveRegressor(tunable="random:0.5", epochs=2).fit(X, y)
    assert half.tunable_.sum() == round(0.5 * m)
    near = ResistiveRegressor(tunable={"mode": "outputs", "fraction": 0.25}, hidden=4, epochs=2).fit(X, y)
    assert near.tunable_.sum() == round(0.25 * near.circuit_.network.n_edges)
    assert ResistiveRegressor(tunable="all", epochs=1).fit(X, y).tunable_.all()
    for bad in ("half", "random:2"):
        with pytest.raises(ConfigError, match="tunable"):
            ResistiveRegressor(tunable=bad, epochs=1).fit(X, y)


def test_export_circuit_and_save_reproduce_the_predictions(tmp_path):
    import pickle

    import kirchnet as kn

    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(50, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 4.0
    reg = ResistiveRegressor(epochs=5).fit(X, y)
    s = reg.export_circuit()
    o = s.circuit.solve(s.conductances, reg.input_voltages(X)).outputs[:, 0]
    np.testing.assert_array_equal(o * s.metadata["y_scale"][0] + s.metadata["y_mean"][0], reg.predict(X))
    back = kn.load(reg.save(tmp_path / "reg"))
    np.testing.assert_array_equal(back.conductances, reg.conductances_)
    np.testing.assert_array_equal(back.circuit.solve(back.conductances, reg.input_voltages(X)).outputs[:, 0], o)
    assert back.metadata["estimator"] == "ResistiveRegressor" and back.metadata["augment_inputs"] is True
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X), reg.predict(X))
    clf = ResistiveClassifier(epochs=2).fit(*_iris_small())
    assert clf.export_circuit().metadata["classes"] == [0, 1, 2]


def _circles(n=200):
    from sklearn.datasets import make_circles
    from sklearn.model_selection import train_test_split

    X, y = make_circles(n_samples=n, noise=0.05, factor=0.5, random_state=0)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def test_hidden_builds_a_deep_resistive_network_that_beats_the_linear_one():
    from kirchnet.elements import IdealDiode

    Xtr, Xte, ytr, yte = _circles()
    drn = ResistiveClassifier(hidden=16, epochs=15).fit(Xtr, ytr)
    lin = ResistiveClassifier(epochs=15).fit(Xtr, ytr)
    lin_h = ResistiveClassifier(hidden=16, hidden_kind="linear", epochs=15).fit(Xtr, ytr)
    # held-out concentric circles: no linear decision separates them
    assert lin.score(Xte, yte) < 0.7 and lin_h.score(Xte, yte) < 0.7
    assert drn.score(Xte, yte) >= 0.95
    c = drn.circuit_
    n = drn.drn_.params.size
    assert drn.drn_.spec.layers == (2, 16, 2) and not c.is_linear
    assert [e for e in range(c.network.n_edges) if isinstance(c.elements.law_of(e), IdealDiode)] == \
        list(range(n, c.network.n_edges))
    np.testing.assert_array_equal(drn.conductances_[n:], 1.0)      # the diodes' scales never train
    assert not drn.tunable_[n:].any() and drn.tunable_[:n].all()
    assert lin_h.circuit_.is_linear and lin_h.circuit_.network.n_edges == 7 * 16 + 16 * 2


def test_drn_estimator_layers_export_save_and_pickle(tmp_path):
    import pickle

    import kirchnet as kn

    rng = np.random.default_rng(0)
    X = rng.normal(1.0, 2.0, size=(40, 3))
    y = np.abs(X[:, 0]) - X[:, 1]
    reg = ResistiveRegressor(hidden=(6, 4), epochs=3, batch_size=20).fit(X, y)
    assert reg.drn_.spec.layers == (3, 6, 4, 1)
    s = reg.export_circuit()
    assert s.metadata["drn"]["layers"] == [3, 6, 4, 1] and s.metadata["augment_inputs"] is False
    v = reg.input_voltages(X)
    z = (X - reg.x_mean_) / reg.x_scale_
    np.testing.assert_allclose(v, reg.drn_.circuit_inputs(z), rtol=1e-12, atol=1e-15)
    o = s.circuit.solve(s.conductances, v).outputs[:, 0]
    np.testing.assert_allclose(o * s.metadata["y_scale"][0] + s.metadata["y_mean"][0], reg.predict(X), rtol=1e-12)
    # the layered solver gives the same outputs as the general one
    layered = kn.drn.DRN(reg.drn_.spec, s.conductances[:reg.drn_.params.size]).predict(z)[:, 0]
    np.testing.assert_allclose(layered, o, rtol=0, atol=1e-10 * np.abs(v).max())
    back = kn.load(reg.save(tmp_path / "drn"))
    np.testing.assert_allclose(back.circuit.solve(back.conductances, v).outputs[:, 0], o, rtol=1e-12)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X), reg.predict(X))


@pytest.mark.parametrize("params, match", [
    (dict(hidden=(4, 0)), r"hidden\[1\] must be >= 1, got 0"),
    (dict(hidden=(4, 2.5)), r"hidden\[1\] must be an integer, got 2\.5"),
    (dict(hidden=3, hidden_kind="relu"), r"hidden_kind must be 'drn'.*got 'relu'"),
    (dict(hidden=3, gain=0.0), r"gain must be > 0"),
])
def test_drn_estimator_arguments_are_value_errors(params, match):
    X = np.random.default_rng(0).uniform(-1, 1, (12, 2))
    for est in (ResistiveRegressor(**params), ResistiveClassifier(**params)):
        with pytest.raises(ValueError, match=match):
            est.fit(X, (X[:, 0] > 0).astype(int))
