"""Ensembles (kirchnet.ensemble): K networks of one circuit trained at once, each member
equal to its separate Trainer.fit run; the stacked step equals the single kernel's."""

import numpy as np
import pytest

from kirchnet import Circuit, CrossEntropy, Edge, Pair, topologies
from kirchnet.ensemble import EnsembleKernel, group_by_topology
from kirchnet.errors import ParameterError, ShapeError
from kirchnet.constraints import Bounds
from kirchnet.rules import (GEP, AdjointCoupledLearning, Analytical, CoupledLearning,
                            EquilibriumPropagation, InSitu)
from kirchnet.small import SmallKernel
from kirchnet.training import Trainer

NET = topologies.lattice(6, 6)
CIRCUIT = Circuit(NET, ground=0, inputs=[5, 30, Edge(12)], outputs=[35, Pair(20, 5)])
RNG = np.random.default_rng(0)
G0 = RNG.uniform(0.5, 2.0, (4, NET.n_edges))
X = RNG.uniform(-1, 1, (12, 3))
Y = RNG.uniform(-0.3, 0.3, (12, 2))

RULES = [Analytical(), EquilibriumPropagation(0.1), EquilibriumPropagation(0.1, "positive", "energy"),
         CoupledLearning(0.1), CoupledLearning(0.1, "centered"), AdjointCoupledLearning(0.05),
         GEP("clamp", 0.1), GEP("adjoint_clamp", 0.1, variant="centered"), GEP("energy", 0.1),
         InSitu(wrt="resistance")]


@pytest.mark.parametrize("batch", [1, 6])
def test_stacked_step_equals_the_single_kernel(batch):
    ek, k = EnsembleKernel(CIRCUIT), SmallKernel(CIRCUIT)
    xb = RNG.uniform(-1, 1, (4, batch, 3))
    yb = RNG.uniform(-0.3, 0.3, (4, batch, 2))
    for rule in RULES:
        est, losses = ek.step(rule, G0, xb, yb)
        for i in range(4):
            ref, loss = k.step(rule, G0[i], xb[i], yb[i])
            assert np.abs(est[i] - ref).max() <= 1e-12 * np.abs(ref).max(), rule
            assert losses[i] == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("rule", [Analytical(), CoupledLearning(0.1), EquilibriumPropagation(0.1, nudge="energy")],
                         ids=["analytical", "cl", "ep-energy"])
@pytest.mark.parametrize("optimizer, space", [("adam", "conductance"), ("momentum", "resistance")])
def test_each_member_equals_its_separate_run(rule, optimizer, space):
    lrs, seeds = [0.02, 0.05, 0.03, 0.08], [3, 1, 4, 1]
    kw = dict(epochs=3, batch_size=5, parametrization=space, tunable=np.arange(NET.n_edges) % 3 > 0)
    res = Trainer(rule, optimizer, **kw).fit_ensemble(CIRCUIT, G0, X, Y, x_val=X[:4], y_val=Y[:4],
                                                     lr=lrs, seeds=seeds)
    assert len(res) == 4
    for i in range(4):
        ref = Trainer(rule, optimizer, lr=lrs[i], seed=seeds[i], **kw).fit(
            CIRCUIT, G0[i], X, Y, x_val=X[:4], y_val=Y[:4])
        np.testing.assert_allclose(res[i].conductances, ref.conductances, rtol=1e-12)
        assert res[i].history.keys == ref.history.keys
        for key in ref.history.keys:
            np.testing.assert_allclose(res[i].history[key], ref.history[key], rtol=1e-12, atol=1e-15)


def test_fit_with_a_stack_of_conductances_and_classification():
    ce = CrossEntropy(0.2)
    labels = (X[:, 0] > 0).astype(int)
    tr = Trainer(Analytical(ce), "sgd", lr=0.1, epochs=2, batch_size=4)
    res = tr.fit(CIRCUIT, G0[:2], X, labels)  # g0 (K, m): an ensemble
    ref = tr.fit(CIRCUIT, G0[1], X, labels)
    assert isinstance(res, list) and len(res) == 2
    np.testing.assert_allclose(res[1].conductances, ref.conductances, rtol=1e-12)
    np.testing.assert_allclose(res[1].history["accuracy"], ref.history["accuracy"])
    with pytest.raises(ParameterError, match="resume=True is for a single run"):
        tr.fit(CIRCUIT, G0, X, labels, resume=True)


def test_refusals():
    with pytest.raises(ParameterError, match="constraints"):
        Trainer(constraints=Bounds(0.1, 10)).fit_ensemble(CIRCUIT, G0, X, Y)
    with pytest.raises(ParameterError, match="cosine"):
        Trainer(cosine=True).fit_ensemble(CIRCUIT, G0, X, Y)
    with pytest.raises(ParameterError, match="train the members separately"):
        Trainer(InSitu(current_noise=0.1)).fit_ensemble(CIRCUIT, G0, X, Y)
    with pytest.raises(ShapeError, match="one per member"):
        Trainer().fit_ensemble(CIRCUIT, G0, X, Y, lr=[0.1, 0.2])
    with pytest.raises(ShapeError, match=r"shape \(K, "):
        Trainer().fit_ensemble(CIRCUIT, G0[:, :5], X, Y)
    bad = G0.copy()
    bad[2, 3] = -1.0
    with pytest.raises(ParameterError):
        Trainer().fit_ensemble(CIRCUIT, bad, X, Y)


def test_a_member_failing_a_check_is_computed_by_the_single_kernel(monkeypatch):
    import kirchnet.ensemble as ensemble

    monkeypatch.setattr(ensemble, "REFINE_ABOVE", -1.0)  # no stacked solve is certified
    ek = EnsembleKernel(CIRCUIT)
    xb, yb = np.broadcast_to(X[:3], (4, 3, 3)), np.broadcast_to(Y[:3], (4, 3, 2))
    est, losses = ek.step(CoupledLearning(0.1), G0, xb, yb)
    assert not ek.factor(G0).ok.any()
    for i in range(4):
        ref, loss = SmallKernel(CIRCUIT).step(CoupledLearning(0.1), G0[i], xb[i], yb[i])
        np.testing.assert_array_equal(est[i], ref)


def test_group_by_topology():
    other = Circuit(NET, ground=0, inputs=[5, 30, Edge(12)], outputs=[35, Pair(21, 5)])
    runs = [(CIRCUIT, Trainer(lr=0.1, seed=1)), (CIRCUIT, Trainer(lr=0.3, seed=2)),
            (other, Trainer(lr=0.1)), (CIRCUIT, Trainer(lr=0.1, epochs=7)),
            (CIRCUIT, Trainer(CoupledLearning(0.1)))]
    groups = sorted(group_by_topology(runs).values())
    assert groups == [[0, 1], [2], [3], [4]]


# ---------------------------------------------------------------------- compiled kernel (kirchnet._jit)
from kirchnet import _jit  # noqa: E402

NEEDS_NUMBA = pytest.mark.skipif(not _jit.AVAILABLE, reason="numba is not installed (pip install kirchnet[jit])")


@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=NEEDS_NUMBA)], ids=["numpy", "jit"])
def test_jit_stacked_step_equals_the_numpy_kernel_and_the_general_rules(jit):
    ek, ref_kernel = EnsembleKernel(CIRCUIT, jit=jit), SmallKernel(CIRCUIT, jit=False)
    assert ek.kernel.jit is jit
    xb = RNG.uniform(-1, 1, (4, 3, 3))
    yb = RNG.uniform(-0.3, 0.3, (4, 3, 2))
    for rule in RULES:
        est, losses = ek.step(rule, G0, xb, yb)
        for i in range(4):
            ref, loss = ref_kernel.step(rule, G0[i], xb[i], yb[i])
            general = rule.estimate(CIRCUIT, G0[i], xb[i], yb[i])
            scale = np.abs(general.estimate).max()
            assert np.abs(est[i] - ref).max() <= 1e-12 * scale, rule
            assert np.abs(est[i] - general.estimate).max() <= 1e-12 * scale, rule
            assert losses[i] == pytest.approx(loss, rel=1e-12)
    f = ek.factor(G0)  # the stacked factor (evaluation, and rules without a compiled step)
    assert f.ok.all() and f.M.shape == (4, NET.n_edges, 5)


@NEEDS_NUMBA
def test_jit_member_failing_a_check_is_computed_by_the_single_kernel(monkeypatch):
    import kirchnet.ensemble as ensemble

    monkeypatch.setattr(ensemble, "REFINE_ABOVE", -1.0)  # no stacked solve is certified
    ek = EnsembleKernel(CIRCUIT, jit=True)
    xb, yb = np.broadcast_to(X[:3], (4, 3, 3)), np.broadcast_to(Y[:3], (4, 3, 2))
    assert not ek.factor(G0).ok.any()
    for rule in (Analytical(), CoupledLearning(0.1), EquilibriumPropagation(0.1)):
        est, losses = ek.step(rule, G0, xb, yb)
        for i in range(4):
            ref, loss = SmallKernel(CIRCUIT, jit=True).step(rule, G0[i], xb[i], yb[i])
            np.testing.assert_array_equal(est[i], ref)
            assert losses[i] == loss


@NEEDS_NUMBA
def test_jit_ensemble_members_equal_their_separate_general_runs(monkeypatch):
    monkeypatch.setenv("KIRCHNET_JIT", "1")
    lrs = [0.02, 0.05, 0.03, 0.08]
    for rule in (Analytical(), CoupledLearning(0.1)):
        kw = dict(epochs=3, batch_size=4)
        res = Trainer(rule, "sgd", **kw).fit_ensemble(CIRCUIT, G0, X, Y, lr=lrs)
        for i in range(4):
            ref = Trainer(rule, "sgd", lr=lrs[i], fast=False, **kw).fit(CIRCUIT, G0[i], X, Y)
            np.testing.assert_allclose(res[i].conductances, ref.conductances, rtol=1e-12)
            np.testing.assert_allclose(res[i].history["loss"], ref.history["loss"], rtol=1e-11)


@NEEDS_NUMBA
def test_jit_stacked_step_at_the_cached_factor_is_bitwise_the_fresh_step():
    xb = RNG.uniform(-1, 1, (4, 3, 3))
    yb = RNG.uniform(-0.3, 0.3, (4, 3, 2))
    for rule in (Analytical(), CoupledLearning(0.1)):
        cached, fresh = EnsembleKernel(CIRCUIT, jit=True), EnsembleKernel(CIRCUIT, jit=True)
        cached.evaluate(G0, X, Y, rule.loss)  # leaves the stacked factor at G0
        a, b = cached.step(rule, G0, xb, yb), fresh.step(rule, G0, xb, yb)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        single = SmallKernel(CIRCUIT, jit=True)
        for i in range(4):  # and each member is the single kernel's compiled step, bit for bit
            est, loss = single.step(rule, G0[i], xb[i], yb[i])
            np.testing.assert_array_equal(a[0][i], est)
            assert a[1][i] == loss
