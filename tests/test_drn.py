"""Deep resistive networks: exact layered solver, exact gradient, EP, Hebbian products."""

import itertools

import numpy as np
import pytest

from kirchnet.drn import DRN, DRNClassifier, DRNSpec, fit_drn, hebbian
from kirchnet.errors import ConvergenceError, ParameterError, ShapeError


def _net(layers=(2, 3, 3, 2), gain=2.0, bias=0.5, diode_bias=0.1, seed=1):
    return DRN(DRNSpec(layers=layers, gain=gain, bias=bias, diode_bias=diode_bias), seed=seed)


def _dense_graph(drn):
    """Independent construction: node potentials vector [inputs, bias(+,-), hidden..., out],
    the full weighted Laplacian and the bound of every node (from the documented layout)."""
    spec = drn.spec
    sizes = spec.sizes
    nb = 2 if spec.has_bias else 0
    offs = np.concatenate([[0], np.cumsum([sizes[0], nb] + list(sizes[1:]))])
    n = offs[-1]
    layer = lambda l: np.arange(offs[0], offs[1]) if l == 0 else np.arange(offs[l + 1], offs[l + 2])
    Lap = np.zeros((n, n))
    p, o = drn.params, 0

    def add(i, j, g):
        Lap[i, i] += g; Lap[j, j] += g; Lap[i, j] -= g; Lap[j, i] -= g

    for l in range(len(sizes) - 1):
        for i in layer(l):
            for j in layer(l + 1):
                add(i, j, p[o]); o += 1
    if nb:
        for l in range(1, len(sizes)):
            for k in range(2):
                for j in layer(l):
                    add(offs[1] + k, j, p[o]); o += 1
    assert o == p.size
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    for l in range(1, len(sizes) - 1):
        nodes = layer(l)
        k = int(round(spec.diode_split * nodes.size))
        lo[nodes[:k]] = spec.diode_bias
        hi[nodes[k:]] = -spec.diode_bias
    clamped = np.arange(offs[2])
    return Lap, lo, hi, clamped, layer


def _enumerate_reference(drn, x, y=None, beta=0.0):
    """Exact QP solution per sample by enumerating every active set of the diodes and
    keeping the one that satisfies all KKT conditions (tiny networks only)."""
    Lap, lo, hi, clamped, layer = _dense_graph(drn)
    spec = drn.spec
    n = Lap.shape[0]
    diodes = np.flatnonzero(np.isfinite(lo) | np.isfinite(hi))
    bound = np.where(np.isfinite(lo), lo, hi)
    out_nodes = layer(len(spec.sizes) - 1)
    sols = []
    for b in range(x.shape[0]):
        fixed = np.full(n, np.nan)
        fixed[layer(0)] = spec.gain * np.concatenate([x[b], -x[b]])
        if spec.has_bias:
            fixed[clamped[-2:]] = [spec.bias, -spec.bias]
        H = Lap.copy()
        rhs = np.zeros(n)
        if beta:
            H[out_nodes, out_nodes] += beta
            rhs[out_nodes] += beta * y[b]
        found = []
        for act in itertools.product([False, True], repeat=diodes.size):
            act = np.array(act, dtype=bool)
            fx = fixed.copy()
            fx[diodes[act]] = bound[diodes[act]]
            F = np.flatnonzero(np.isnan(fx))
            C = np.flatnonzero(~np.isnan(fx))
            v = fx.copy()
            v[F] = np.linalg.solve(H[np.ix_(F, F)], rhs[F] - H[np.ix_(F, C)] @ fx[C])
            r = H @ v - rhs   # current the diode must supply into each node
            ok = True
            for k, dnode in enumerate(diodes):
                low = np.isfinite(lo[dnode])
                if act[k]:
                    ok &= (r[dnode] >= -1e-12) if low else (r[dnode] <= 1e-12)
                else:
                    ok &= (v[dnode] >= lo[dnode] - 1e-12) if low else (v[dnode] <= hi[dnode] + 1e-12)
            if ok:
                found.append(v)
        assert found, "no KKT point found"
        for v in found[1:]:   # strict convexity: every KKT point is the same
            np.testing.assert_allclose(v, found[0], atol=1e-9)
        sols.append([found[0][layer(l)] for l in range(len(spec.sizes))])
    return [np.array([s[l] for s in sols]) for l in range(len(spec.sizes))]


@pytest.mark.parametrize("beta", [0.0, 0.7, -0.3])
def test_relax_equals_active_set_enumeration(beta):
    drn = _net()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (6, 2))
    y = rng.uniform(-1, 1, (6, 2))
    st = drn.relax(x, y=y if beta else None, beta=beta)
    ref = _enumerate_reference(drn, x, y, beta)
    scale = np.max(np.abs(st.potentials[0]))
    for l in range(1, len(ref)):
        np.testing.assert_allclose(st.potentials[l], ref[l], rtol=0, atol=1e-10 * scale)
    assert st.residual <= 1e-10
    # a non-trivial case: some diodes block and some conduct
    act = np.concatenate([a.ravel() for a in st.active[1:-1]])
    assert act.any() and (~act).any()


@pytest.mark.parametrize("layers,bias,diode_bias", [((5, 8, 3), 0.0, 0.0), ((4, 6, 5, 4, 3), 0.4, -0.2),
                                                    ((30, 40, 10), 0.0, 0.05)])
def test_kkt_residual_and_warm_start(layers, bias, diode_bias):
    drn = DRN(DRNSpec(layers=layers, gain=3.0, bias=bias, diode_bias=diode_bias), seed=2)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (9, layers[0]))
    y = rng.uniform(0, 1, (9, layers[-1]))
    free = drn.relax(x)
    assert drn.kkt_residual(free) <= 1e-10
    nudged_cold = drn.relax(x, y=y, beta=0.5)
    nudged_warm = drn.relax(x, y=y, beta=0.5, init=free)
    assert drn.kkt_residual(nudged_warm, y) <= 1e-10
    for a, b in zip(nudged_cold.potentials, nudged_warm.potentials):
        np.testing.assert_allclose(a, b, atol=1e-9 * 3.0)
    # the check is not vacuous: a perturbed state violates KCL / complementarity
    bad = [p.copy() for p in free.potentials]
    bad[1][0, 0] += 1e-3
    from kirchnet.drn import DRNState
    assert drn.kkt_residual(DRNState(bad, free.active, 1, 0.0)) > 1e-5


def test_relax_invariant_under_conductance_scaling():
    """Potentials depend on conductance ratios only (Kirchhoff's laws are homogeneous)."""
    drn = _net(layers=(3, 5, 4, 2))
    x = np.random.default_rng(3).uniform(-1, 1, (4, 3))
    a = drn.relax(x).potentials
    scaled = DRN(drn.spec, drn.params * 7.5)
    b = scaled.relax(x).potentials
    for u, w in zip(a, b):
        np.testing.assert_allclose(u, w, atol=1e-10 * 2.0)


@pytest.mark.parametrize("layers,bias", [((3, 4, 2), 0.0), ((3, 5, 4, 2), 0.6)])
def test_analytical_gradient_matches_finite_differences(layers, bias):
    drn = DRN(DRNSpec(layers=layers, gain=2.0, bias=bias, diode_bias=0.05), seed=4)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-1, 1, (5, layers[0])), rng.uniform(-1, 1, (5, layers[-1]))
    loss, g, st = drn.loss_and_grad(x, y)
    assert loss == pytest.approx(drn.loss(x, y), rel=1e-12)
    p0, eps = drn.params.copy(), 1e-6
    fd = np.empty_like(p0)
    for k in range(p0.size):
        p_plus, p_minus = p0.copy(), p0.copy()
        p_plus[k] += eps
        p_minus[k] -= eps
        fd[k] = (DRN(drn.spec, p_plus).loss(x, y) - DRN(drn.spec, p_minus).loss(x, y)) / (2 * eps)
    np.testing.assert_allclose(g, fd, atol=1e-7 * np.max(np.abs(g)))
    assert np.max(np.abs(g)) > 0


def test_ep_tends_to_gradient_with_expected_order():
    drn = _net(layers=(3, 5, 4, 2), bias=0.3)
    rng = np.random.default_rng(6)
    x, y = rng.uniform(-1, 1, (8, 3)), rng.uniform(-1, 1, (8, 2))
    _, g, _ = drn.loss_and_grad(x, y)
    betas = np.array([0.04, 0.02, 0.01])
    slopes = {}
    for variant in ("centered", "positive", "negative"):
        err = [np.linalg.norm(drn.ep_gradient(x, y, beta=b, variant=variant)[1] - g) for b in betas]
        slopes[variant] = np.polyfit(np.log(betas), np.log(err), 1)[0]
    assert slopes["centered"] == pytest.approx(2.0, abs=0.1)
    assert slopes["positive"] == pytest.approx(1.0, abs=0.1)
    assert slopes["negative"] == pytest.approx(1.0, abs=0.1)


def test_hebbian_matmul_equals_explicit_tensor():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 4))
    explicit = np.mean((a[:, :, None] - b[:, None, :]) ** 2, axis=0)
    np.testing.assert_allclose(hebbian(a, b), explicit, rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match="same batch"):
        hebbian(a, b[:3])


def test_ep_update_equals_explicit_difference_of_energy_derivatives():
    """The matrix-product EP estimate equals the tensor definition
    (dE/dW(v+) - dE/dW(v-)) / (2 beta), dE/dW_ij = 1/2 mean (v_i - v_j)^2."""
    drn = _net(layers=(3, 4, 5, 2), bias=0.4)
    rng = np.random.default_rng(8)
    x, y = rng.uniform(-1, 1, (7, 3)), rng.uniform(-1, 1, (7, 2))
    beta = 0.3
    _, est, free = drn.ep_gradient(x, y, beta=beta)
    plus = drn.relax(x, y=y, beta=beta, init=free).potentials
    minus = drn.relax(x, y=y, beta=-beta, init=free).potentials
    parts = []
    for l in range(len(drn.weights)):
        dp = plus[l][:, :, None] - plus[l + 1][:, None, :]
        dm = minus[l][:, :, None] - minus[l + 1][:, None, :]
        parts.append((0.5 * np.mean(dp ** 2 - dm ** 2, axis=0) / (2 * beta)).ravel())
    s = drn.spec.bias
    for l in range(1, len(drn.spec.sizes)):
        parts.append(np.stack([0.5 * np.mean((s - plus[l]) ** 2 - (s - minus[l]) ** 2, axis=0),
                               0.5 * np.mean((-s - plus[l]) ** 2 - (-s - minus[l]) ** 2, axis=0)]
                              ).ravel() / (2 * beta))
    np.testing.assert_allclose(est, np.concatenate(parts), rtol=1e-10, atol=1e-13)


def test_xor_training_reaches_full_accuracy():
    from kirchnet.tasks.nonlinear import xor

    task = xor(n_train=64, n_test=64, noise=0.1, seed=0)
    drn = DRN(DRNSpec(layers=(2, 32, 2), gain=10.0), seed=0)
    before = np.mean(np.argmax(drn.predict(task.x_test), axis=1) == task.labels_test)
    hist = fit_drn(drn, task.x_train, task.y_train, epochs=20, batch_size=8, lr=0.05,
                   method="ep", beta=0.5)
    acc = np.mean(np.argmax(drn.predict(task.x_test), axis=1) == task.labels_test)
    assert acc == 1.0 and before < 1.0
    assert hist.loss[-1] < hist.loss[0]


def test_classifier_api_analytical():
    from kirchnet.tasks.nonlinear import xor

    task = xor(n_train=64, n_test=64, seed=1)
    clf = DRNClassifier(hidden=32, gain=10.0, epochs=20, batch_size=8, lr=0.05, method="analytical",
                        optimizer=None)
    clf.fit(task.x_train, task.labels_train)
    assert clf.score(task.x_test, task.labels_test) == 1.0
    assert set(clf.predict(task.x_test)) <= {0, 1}
    # defaults (Adam, EP centered) on string labels
    names = np.array(["even", "odd"])
    clf2 = DRNClassifier().fit(task.x_train, names[task.labels_train])
    assert clf2.score(task.x_test, names[task.labels_test]) == 1.0
    assert clf2.decision_function(task.x_test).shape == (64, 2)


def test_errors_name_the_problem():
    with pytest.raises(ParameterError, match="layers"):
        DRNSpec(layers=(3, 2))
    with pytest.raises(ParameterError, match="diode_split"):
        DRNSpec(layers=(3, 4, 2), diode_split=1.5)
    with pytest.raises(ParameterError, match="gain"):
        DRNSpec(layers=(3, 4, 2), gain=0.0)
    drn = _net(layers=(3, 4, 2), bias=0.0)
    with pytest.raises(ShapeError, match=r"\(batch, 3\)"):
        drn.relax(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match="y must have shape"):
        drn.loss_and_grad(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="positive and finite"):
        DRN(drn.spec, -drn.params)
    big = float(drn._degrees()[-1].min()) + 1.0
    with pytest.raises(ParameterError, match="unbounded"):
        drn.relax(np.zeros((1, 3)), y=np.zeros((1, 2)), beta=-big)
    with pytest.raises(ParameterError, match="lr must be positive"):
        fit_drn(drn, np.zeros((2, 3)), np.zeros((2, 2)), lr=0.0)
    with pytest.raises(ParameterError, match="method"):
        fit_drn(drn, np.zeros((2, 3)), np.zeros((2, 2)), method="cl")
    with pytest.raises(ParameterError, match="variant"):
        drn.ep_gradient(np.zeros((2, 3)), np.zeros((2, 2)), variant="symmetric")
    tight = DRN(DRNSpec(layers=(3, 6, 2), gain=2.0, max_sweeps=1, tol=1e-14), seed=0)
    with pytest.raises(ConvergenceError, match="max_sweeps"):
        tight.relax(np.random.default_rng(0).uniform(-1, 1, (3, 3)))


def test_to_circuit_matches_general_solver():
    """The same network through the general nonlinear solver (needs kirchnet.elements and
    Circuit(elements=...))."""
    import inspect

    from kirchnet import circuit as circuit_mod

    if "elements" not in inspect.signature(circuit_mod.Circuit.__init__).parameters:
        pytest.skip("the general Circuit has no elements= argument yet (nonlinear core)")
    drn = _net(layers=(3, 4, 3, 2), bias=0.5, diode_bias=0.1)
    circ, g = drn.to_circuit()
    assert not circ.is_linear
    rng = np.random.default_rng(9)
    x, y = rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, (5, 2))
    st = drn.relax(x)
    xc = drn.circuit_inputs(x)
    general = circ.solve(g, xc)
    layer_nodes, _ = drn.circuit_nodes()
    scale = np.max(np.abs(xc))
    for l, nodes in enumerate(layer_nodes):
        np.testing.assert_allclose(general.potentials[:, nodes], st.potentials[l],
                                   rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(general.outputs, st.outputs, rtol=0, atol=1e-10 * scale)
    act = np.concatenate([a.ravel() for a in st.active[1:-1]])
    assert act.any() and (~act).any()
    # the general implicit gradient equals the layered one on the trainable edges
    loss, grad, _ = drn.loss_and_grad(x, y)
    general_loss, general_grad = circ.loss_and_grad(g, xc, y)
    assert general_loss == pytest.approx(loss, rel=1e-10)
    np.testing.assert_allclose(general_grad[:drn.params.size], grad, rtol=0,
                               atol=1e-9 * np.max(np.abs(grad)))


@pytest.mark.parametrize("method", ["ep", "analytical"])
def test_fused_sgd_step_equals_estimate_update(method):
    """ep_step / gradient_step (W_0 accumulated in place by BLAS) equal
    max(params - lr * estimate, g_min)."""
    drn = _net(layers=(4, 6, 5, 3), bias=0.3)
    rng = np.random.default_rng(10)
    x, y = rng.uniform(-1, 1, (5, 4)), rng.uniform(-1, 1, (5, 3))
    lr = 0.05
    if method == "ep":
        loss, est, _ = drn.ep_gradient(x, y, beta=0.2)
    else:
        loss, est, _ = drn.loss_and_grad(x, y)
    expected = np.maximum(drn.params - lr * est, drn.spec.g_min)
    step = drn.ep_step(x, y, lr, beta=0.2) if method == "ep" else drn.gradient_step(x, y, lr)
    assert step == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(drn.params, expected, rtol=1e-12, atol=1e-15)
    assert drn.weights[0].base is not None and np.shares_memory(drn.weights[0], drn.params)


def test_to_circuit_works_with_the_general_rules_and_spice():
    import inspect

    from kirchnet import circuit as circuit_mod

    if "elements" not in inspect.signature(circuit_mod.Circuit.__init__).parameters:
        pytest.skip("the general Circuit has no elements= argument yet (nonlinear core)")
    from kirchnet import spice
    from kirchnet.rules import Analytical, EquilibriumPropagation

    drn = _net(layers=(3, 4, 3, 2), bias=0.5, diode_bias=0.1)
    circ, g = drn.to_circuit()
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2))
    xc = drn.circuit_inputs(x)
    n = drn.params.size
    general = EquilibriumPropagation(beta=0.2, variant="centered", nudge="energy").estimate(circ, g, xc, y)
    _, layered, _ = drn.ep_gradient(x, y, beta=0.2)
    np.testing.assert_allclose(general.estimate[:n], layered, rtol=0, atol=1e-9 * np.abs(layered).max())
    exact = Analytical().estimate(circ, g, xc, y).estimate
    np.testing.assert_allclose(exact[:n], drn.loss_and_grad(x, y)[1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(exact[n:], 0.0, atol=1e-12)   # ideal diodes carry no gradient
    netlist = spice.to_netlist(circ, g, xc[0])
    n_diodes = sum(drn.spec.sizes[1:-1])
    assert sum(line.startswith("D") for line in netlist.splitlines()) == n_diodes


def test_circuit_potentials_hook_matches_general_solver_for_any_input_potentials():
    import inspect

    from kirchnet import circuit as circuit_mod
    from kirchnet.drn import layered_spec

    if "elements" not in inspect.signature(circuit_mod.Circuit.__init__).parameters:
        pytest.skip("the general Circuit has no elements= argument yet (nonlinear core)")
    drn = _net(layers=(3, 5, 4, 2), bias=0.5, diode_bias=0.1)
    circ, g = drn.to_circuit()
    assert layered_spec(circ) == drn.spec
    other, _ = DRN(DRNSpec(layers=(2, 3, 2))).to_circuit()
    assert layered_spec(other) != drn.spec and layered_spec(object()) is None
    rng = np.random.default_rng(12)
    xc = drn.circuit_inputs(rng.uniform(-1, 1, (4, 3)))
    xc[:, :6] = rng.uniform(-3, 3, (4, 6))       # input layer not of the form gain (x, -x)
    u = drn.circuit_potentials(xc)
    np.testing.assert_allclose(u, circ.solve(g, xc).potentials, rtol=0, atol=1e-10 * 3.0)
    bad = xc.copy()
    bad[:, 6] = 0.0
    with pytest.raises(ParameterError, match="bias source"):
        drn.circuit_potentials(bad)
