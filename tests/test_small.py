"""The small-network fast path (kirchnet.small): the same estimates as the general rules,
the same checks, and the Trainer on it equal to the Trainer on the general path."""

import numpy as np
import pytest

import kirchnet as kn
from kirchnet import Circuit, CrossEntropy, Edge, Pair, topologies
from kirchnet.errors import IllConditionedError, KirchnetError, ParameterError
from kirchnet.rules import (GEP, AdjointCoupledLearning, Analytical, CoupledLearning,
                            EquilibriumPropagation, InSitu)
from kirchnet.small import SMALL_MAX, SmallKernel, kernel_for, supports
from kirchnet.training import Trainer

RULES = ([Analytical()]
         + [EquilibriumPropagation(0.1, v, n) for v in ("positive", "negative", "centered")
            for n in ("current", "energy")]
         + [CoupledLearning(0.1, v) for v in ("positive", "negative", "centered")]
         + [AdjointCoupledLearning(0.05, v) for v in ("positive", "centered")]
         + [GEP(n, 0.1, variant=v) for n in ("current", "energy", "clamp", "adjoint_clamp")
            for v in ("positive", "centered")]
         + [InSitu(), InSitu(wrt="resistance"), InSitu(mode="superposed")])


def _circuits():
    net = topologies.random_connected(30, mean_degree=4, seed=3)
    node = Circuit(net, ground=0, inputs=[1, 2, 3], outputs=[28, 29])
    mixed = Circuit(net, ground=0, inputs=[1, Edge(4), 2], outputs=[Edge(7), Pair(20, 1), 25])
    return net, {"node": node, "mixed": mixed}


NET, CIRCUITS = _circuits()


@pytest.mark.parametrize("kind", ["node", "mixed"])
@pytest.mark.parametrize("batch", [1, 64])
def test_every_rule_equals_the_general_rule(kind, batch):
    c = CIRCUITS[kind]
    k = SmallKernel(c)
    rng = np.random.default_rng(batch)
    g = rng.uniform(0.5, 2.0, NET.n_edges)
    x = rng.uniform(-1, 1, (batch, c.n_inputs))
    y = rng.uniform(-0.3, 0.3, (batch, c.n_outputs))
    for rule in RULES:
        est, loss = k.estimate(rule, g, x, y)
        ref = rule.estimate(c, g, x, y)
        scale = np.abs(ref.estimate).max()
        assert scale > 0
        assert np.abs(est - ref.estimate).max() <= 1e-12 * scale, rule
        assert loss == pytest.approx(ref.loss, rel=1e-12, abs=0), rule


@pytest.mark.parametrize("batch", [1, 64])
def test_cross_entropy_rules_equal_the_general_rule(batch):
    c = CIRCUITS["node"]
    k = SmallKernel(c)
    rng = np.random.default_rng(7)
    g = rng.uniform(0.5, 2.0, NET.n_edges)
    x = rng.uniform(-1, 1, (batch, 3))
    labels = rng.integers(0, 2, batch)
    ce = CrossEntropy(0.5)
    for rule in (Analytical(ce), EquilibriumPropagation(0.1, "centered", "energy", loss=ce),
                 CoupledLearning(0.1, loss=ce), GEP("energy", 0.1, loss=ce)):
        est, loss = k.estimate(rule, g, x, labels)
        ref = rule.estimate(c, g, x, labels)
        assert np.abs(est - ref.estimate).max() <= 1e-12 * np.abs(ref.estimate).max(), rule
        assert loss == pytest.approx(ref.loss, rel=1e-12)


def test_supports_only_what_it_computes():
    c = CIRCUITS["node"]
    assert supports(c, Analytical()) and kernel_for(c, CoupledLearning()) is not None
    assert not supports(c, InSitu(current_noise=0.01))  # noisy measurements: the general rule
    assert not supports(c, GEP(lambda beta, ctx: None))  # a user nudge

    class MyCL(CoupledLearning):
        pass

    assert not supports(c, MyCL())  # a subclass may override anything
    big = Circuit(topologies.lattice(17, 17), ground=0, inputs=[1], outputs=[288])
    assert big.n_free > SMALL_MAX and not supports(big, Analytical())
    with pytest.raises(ParameterError, match="free nodes"):
        SmallKernel(big)
    splu = Circuit(NET, ground=0, inputs=[1], outputs=[29], backend="splu")
    assert not supports(splu, Analytical())  # an explicit backend is respected


def _outcome(fn):
    try:
        return "ok", np.asarray(fn())
    except KirchnetError as exc:
        return type(exc), None


def test_checks_as_the_general_path():
    c = CIRCUITS["node"]
    k = SmallKernel(c)
    x, y = np.array([[1.0, -0.5, 0.2]]), np.array([[0.1, 0.0]])
    with pytest.raises(ParameterError):
        k.estimate(Analytical(), -np.ones(NET.n_edges), x, y)  # validated at the boundary
    # conductances over 17 decades: both paths certify the solve or both refuse it
    g = np.ones(NET.n_edges)
    g[::3] = 1e-17
    fast = _outcome(lambda: k.estimate(Analytical(), g, x, y)[0])
    general = _outcome(lambda: Analytical().estimate(c, g, x, y).estimate)
    assert fast[0] == general[0]
    if fast[0] == "ok":
        assert np.abs(fast[1] - general[1]).max() <= 1e-12 * np.abs(general[1]).max()
    # overflowing conductances: refused with the general path's error, never a number
    with pytest.raises(ParameterError, match="outside the range"):
        k.estimate(Analytical(), np.full(NET.n_edges, 1e300), x, y)
    with pytest.raises(KirchnetError):  # inputs that overflow float64
        k.estimate(Analytical(), np.ones(NET.n_edges), np.full((1, 3), 1e307), y)


def test_potrf_failure_is_ill_conditioned(monkeypatch):
    import types

    import kirchnet.small as small

    real = small.lapack

    def bad_potrf(a, **kw):
        return real.dpotrf(a, **kw)[0], 5  # as LAPACK reports a non-positive pivot

    monkeypatch.setattr(small, "lapack", types.SimpleNamespace(dpotrf=bad_potrf, dpotrs=real.dpotrs))
    k = SmallKernel(CIRCUITS["node"], jit=False)  # the numpy path's LAPACK (kirchnet._jit: its own test)
    with pytest.raises(IllConditionedError, match="leading minor of order 5 .*conductance ratio"):
        k.estimate(Analytical(), np.ones(NET.n_edges), np.ones((1, 3)), np.zeros((1, 2)))


@pytest.mark.parametrize("rule", [CoupledLearning(0.1), EquilibriumPropagation(0.1), Analytical()],
                         ids=["cl", "ep", "analytical"])
def test_trainer_fast_path_equals_general_path(rule):
    c = CIRCUITS["mixed"]
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 2.0, NET.n_edges)
    x = rng.uniform(-1, 1, (40, 3))
    y = c.solve(gt, x).outputs
    kw = dict(optimizer="adam", lr=0.05, epochs=4, batch_size=8, cosine=True)
    fast = Trainer(rule, **kw).fit(c, np.ones(NET.n_edges), x, y, x_val=x[:5], y_val=y[:5])
    slow = Trainer(rule, fast=False, **kw).fit(c, np.ones(NET.n_edges), x, y, x_val=x[:5], y_val=y[:5])
    np.testing.assert_allclose(fast.conductances, slow.conductances, rtol=1e-12)
    for key in ("loss", "val_loss", "batch_loss", "cosine"):
        np.testing.assert_allclose(fast.history[key], slow.history[key], rtol=1e-11)
    assert fast.history.keys == slow.history.keys


def test_failed_certificate_falls_back_to_the_general_rule(monkeypatch):
    import kirchnet.small as small

    monkeypatch.setattr(small, "REFINE_ABOVE", -1.0)  # no fast solve is ever certified
    c = CIRCUITS["mixed"]
    rng = np.random.default_rng(1)
    g = rng.uniform(0.5, 2.0, NET.n_edges)
    x, y = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 3))
    for rule in (Analytical(), CoupledLearning(0.1)):
        est, loss = SmallKernel(c).step(rule, g, x, y)
        ref = rule.estimate(c, g, x, y)
        np.testing.assert_array_equal(est, ref.estimate)  # computed by the general rule itself
        assert loss == ref.loss
    assert SmallKernel(c).outputs(g, x) == pytest.approx(c.solve(g, x).outputs, rel=0, abs=0)


def test_conductances_updated_in_place_are_not_served_from_the_cache():
    c = CIRCUITS["node"]
    k = SmallKernel(c)
    g = np.ones(NET.n_edges)
    x, y = np.array([[1.0, 0.5, -0.5]]), np.array([[0.2, -0.1]])
    first, _ = k.step(Analytical(), g, x, y)
    g *= np.linspace(0.5, 2.0, g.size)  # the same array object, new values
    second, _ = k.step(Analytical(), g, x, y)
    ref = Analytical().estimate(c, g, x, y).estimate
    assert np.abs(second - ref).max() <= 1e-12 * np.abs(ref).max()
    assert np.abs(second - first).max() > 1e-6


def test_random_circuits_and_roles_match_the_general_rules():
    """Random graphs with node/Edge inputs, node/Edge/Pair outputs and extra clamped nodes:
    the same estimate (or the same error class) as the general rules."""
    rng = np.random.default_rng(5)
    checked = 0
    for trial in range(40):
        n = int(rng.integers(6, 40))
        net = topologies.random_connected(n, mean_degree=float(rng.uniform(2.2, 5)), seed=trial)
        nodes = rng.permutation(np.arange(1, n))
        ni, ns = int(rng.integers(0, 3)), int(rng.integers(0, 2))
        inputs = [int(v) for v in nodes[:ni]] + [Edge(int(e)) for e in rng.choice(net.n_edges, ns, replace=False)]
        rest = nodes[ni:]
        outputs = [[int(rest[j]), Edge(int(rng.integers(net.n_edges))), Pair(int(rest[j]), int(nodes[0]))][
            int(rng.integers(3))] for j in range(int(rng.integers(1, 3)))]
        try:
            c = Circuit(net, ground=0, inputs=inputs, outputs=outputs, clamped=[int(rest[-1])])
        except KirchnetError:
            continue
        if c.n_inputs == 0:
            continue
        k = SmallKernel(c)
        g = np.exp(rng.uniform(-2, 2, net.n_edges))
        b = int(rng.choice([1, 5]))
        x, y = rng.uniform(-1, 1, (b, c.n_inputs)), rng.uniform(-1, 1, (b, c.n_outputs))
        for rule in (Analytical(), CoupledLearning(0.1), EquilibriumPropagation(0.1, "centered", "energy"),
                     GEP("adjoint_clamp", 0.1)):
            fast, general = (_outcome(lambda: k.estimate(rule, g, x, y)[0]),
                             _outcome(lambda: rule.estimate(c, g, x, y).estimate))
            assert fast[0] == general[0], (trial, rule)
            if fast[0] == "ok":
                assert np.abs(fast[1] - general[1]).max() <= 1e-11 * np.abs(general[1]).max() + 1e-15
                checked += 1
    assert checked > 50


# ---------------------------------------------------------------------- compiled kernel (kirchnet._jit)
from kirchnet import _jit  # noqa: E402

NEEDS_NUMBA = pytest.mark.skipif(not _jit.AVAILABLE, reason="numba is not installed (pip install kirchnet[jit])")
JIT = [False, pytest.param(True, marks=NEEDS_NUMBA)]


@pytest.mark.parametrize("jit", JIT, ids=["numpy", "jit"])
@pytest.mark.parametrize("kind", ["node", "mixed"])
@pytest.mark.parametrize("batch", [1, 16])
def test_jit_and_numpy_paths_equal_the_general_rules(jit, kind, batch):
    c = CIRCUITS[kind]
    k, ref_kernel = SmallKernel(c, jit=jit), SmallKernel(c, jit=False)
    assert k.jit is jit
    rng = np.random.default_rng(10 + batch)
    g = rng.uniform(0.5, 2.0, NET.n_edges)
    x = rng.uniform(-1, 1, (batch, c.n_inputs))
    y = rng.uniform(-0.3, 0.3, (batch, c.n_outputs))
    for rule in RULES:
        est, loss = k.step(rule, g, x, y)
        fast_ref, fast_loss = ref_kernel.step(rule, g, x, y)
        ref = rule.estimate(c, g, x, y)
        scale = np.abs(ref.estimate).max()
        assert np.abs(est - ref.estimate).max() <= 1e-12 * scale, rule
        assert np.abs(est - fast_ref).max() <= 1e-12 * scale, rule
        assert loss == pytest.approx(ref.loss, rel=1e-12, abs=0) and loss == pytest.approx(fast_loss, rel=1e-12)


@NEEDS_NUMBA
def test_jit_factor_bases_equal_the_numpy_factor():
    """The envelope Cholesky in reverse Cuthill-McKee order gives the numpy path's bases
    (T, M, K) on a lattice (narrow envelope) and a random graph (wide one)."""
    lat = topologies.lattice(7, 7)
    circuits = [Circuit(lat, ground=0, inputs=[6, 42, Edge(20)], outputs=[48, Pair(24, 6)]), CIRCUITS["mixed"]]
    for c in circuits:
        g = np.random.default_rng(4).uniform(0.1, 10.0, c.network.n_edges)
        fj, fn = SmallKernel(c, jit=True).factor(g), SmallKernel(c, jit=False).factor(g)
        assert fj.MT is not None and fn.MT is None
        for a, b in ((fj.T, fn.T), (fj.M, fn.M), (fj.K, fn.K)):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()


@NEEDS_NUMBA
def test_jit_checks_as_the_general_path(monkeypatch):
    import kirchnet.small as small

    c = CIRCUITS["node"]
    x, y = np.array([[1.0, -0.5, 0.2]]), np.array([[0.1, 0.0]])
    g = np.ones(NET.n_edges)
    g[::3] = 1e-17  # 17 decades: both paths certify the solve or both refuse it
    for rule in (Analytical(), CoupledLearning(0.1)):
        fast = _outcome(lambda: SmallKernel(c, jit=True).estimate(rule, g, x, y)[0])
        general = _outcome(lambda: rule.estimate(c, g, x, y).estimate)
        assert fast[0] == general[0]
        if fast[0] == "ok":
            assert np.abs(fast[1] - general[1]).max() <= 1e-12 * np.abs(general[1]).max()
    with pytest.raises(ParameterError, match="outside the range"):
        SmallKernel(c, jit=True).estimate(Analytical(), np.full(NET.n_edges, 1e300), x, y)
    # a failed certificate: the general rule's own numbers, bit for bit
    monkeypatch.setattr(small, "REFINE_ABOVE", -1.0)
    rng = np.random.default_rng(1)
    g = rng.uniform(0.5, 2.0, NET.n_edges)
    x, y = rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 2))
    k = SmallKernel(c, jit=True)
    for rule in (Analytical(), CoupledLearning(0.1), EquilibriumPropagation(0.1)):
        est, loss = k.step(rule, g, x, y)
        ref = rule.estimate(c, g, x, y)
        np.testing.assert_array_equal(est, ref.estimate)
        assert loss == ref.loss


@NEEDS_NUMBA
def test_jit_pivot_failure_raises_the_numpy_paths_error(monkeypatch):
    import kirchnet.small as small

    real_factor = small._jit.factor
    real = small.lapack

    def failing(*args):  # the compiled Cholesky meets a non-positive pivot
        st, info, MT, T, K = real_factor(*args)
        return 2, 1, MT, T, K

    def bad_potrf(a, **kw):
        return real.dpotrf(a, **kw)[0], 5

    import types

    monkeypatch.setattr(small._jit, "factor", failing)
    monkeypatch.setattr(small._jit, "step", lambda *a: (2, np.zeros(NET.n_edges), 0.0))
    monkeypatch.setattr(small, "lapack", types.SimpleNamespace(dpotrf=bad_potrf, dpotrs=real.dpotrs))
    k = SmallKernel(CIRCUITS["node"], jit=True)
    with pytest.raises(IllConditionedError, match="leading minor of order 5 .*conductance ratio"):
        k.estimate(CoupledLearning(0.1), np.ones(NET.n_edges), np.ones((1, 3)), np.zeros((1, 2)))


def test_jit_switches(monkeypatch):
    c = CIRCUITS["node"]
    monkeypatch.setenv("KIRCHNET_JIT", "0")
    assert not _jit.enabled() and not SmallKernel(c).jit
    monkeypatch.setenv("KIRCHNET_JIT", "1")
    assert SmallKernel(c).jit is _jit.AVAILABLE
    assert not SmallKernel(c, jit=False).jit
    if not _jit.AVAILABLE:
        with pytest.raises(ParameterError, match="needs numba"):
            SmallKernel(c, jit=True)


@pytest.mark.parametrize("jit", JIT, ids=["numpy", "jit"])
def test_trainer_on_the_jit_path_equals_the_general_path(jit, monkeypatch):
    monkeypatch.setenv("KIRCHNET_JIT", "1" if jit else "0")
    c = CIRCUITS["mixed"]
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (12, 3))
    y = c.solve(rng.uniform(0.5, 2.0, NET.n_edges), x).outputs
    for rule in (Analytical(), CoupledLearning(0.1, "centered")):
        kw = dict(optimizer="sgd", lr=0.05, epochs=3, batch_size=4)
        fast = Trainer(rule, **kw).fit(c, np.ones(NET.n_edges), x, y)
        slow = Trainer(rule, fast=False, **kw).fit(c, np.ones(NET.n_edges), x, y)
        np.testing.assert_allclose(fast.conductances, slow.conductances, rtol=1e-12)
        np.testing.assert_allclose(fast.history["loss"], slow.history["loss"], rtol=1e-11)


@NEEDS_NUMBA
def test_jit_step_at_the_cached_factor_is_bitwise_the_fresh_step():
    """A Trainer evaluates (caching the factor), then steps at the same g: the result is the
    step's without the cache, bit for bit (evaluate_every and resume stay exact)."""
    c = CIRCUITS["mixed"]
    rng = np.random.default_rng(8)
    g = rng.uniform(0.5, 2.0, NET.n_edges)
    x, y = rng.uniform(-1, 1, (5, 3)), rng.uniform(-0.3, 0.3, (5, 3))
    for rule in (Analytical(), CoupledLearning(0.1), CoupledLearning(0.1, "centered")):
        cached, fresh = SmallKernel(c, jit=True), SmallKernel(c, jit=True)
        cached.outputs(g, x)  # leaves the factor at g
        assert cached._last is not None and fresh._last is None
        a, b = cached.step(rule, g, x, y), fresh.step(rule, g, x, y)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
