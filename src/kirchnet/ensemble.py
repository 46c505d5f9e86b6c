"""Ensembles: K independent networks of one topology trained at once (theory.md, 1-3).

Seeds, initial conductances and learning rates may differ per member; the circuit (graph,
ground, inputs, outputs) is shared. Every step stacks the members: one scatter builds the
K reduced Laplacians ``L_FF`` and driver columns (K, n_free, n_free + D), each member's
dense Cholesky and block solve ``L_FF [H | Z | psi] = [R_drv | P_F^T | d]`` are direct
LAPACK calls (numpy's batched ``cholesky`` is no faster per matrix than ``potrf`` and has
no batched triangular solve), and everything else is batched over the leading K axis:
the residual certificate, the maximum principle, the bases ``T``, ``Wd``, ``W``, ``K`` of
:mod:`kirchnet.small`, every rule's estimate, the optimizer step, clipping and the
per-epoch evaluation. A member that fails a check (or a rule the batched formulas do not
cover) is computed by the single-network kernel, which falls back to the general rules:
each member equals its separate :meth:`Trainer.fit <kirchnet.training.Trainer.fit>` run.
With numba (:mod:`kirchnet._jit`) every member's factor, checks and bases are one
compiled call over the stack, and Analytical / CL with squared error the whole step.

Use :func:`fit_ensemble` (or ``Trainer.fit`` with ``g0`` of shape (K, m), or
:meth:`Trainer.fit_ensemble <kirchnet.training.Trainer.fit_ensemble>` for per-member
``lr`` and ``seed``) and :func:`group_by_topology` to find the runs of a sweep that can
share an ensemble.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections import defaultdict

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from . import _jit
from ._validation import check_positive, check_seed
from .constraints import Compose, from_space, to_space
from .errors import ParameterError, SaturationWarning, ShapeError, SolverError
from .losses import SquaredError
from .small import REFINE_ABOVE, ACCURACY, _G_RANGE, SmallKernel, _rule_kind, phase_difference, supports
from .rules.base import Analytical
from .rules.twophase import AdjointClampNudge, ClampNudge, CoupledLearning, CurrentNudge, EnergyNudge, _betas

__all__ = ["EnsembleKernel", "fit_ensemble", "group_by_topology"]


class _Stack:
    """Bases of K factorizations (see :class:`kirchnet.small._Factor`); ``ok[i]`` False:
    member i failed a check and is computed by the single-network kernel."""

    __slots__ = ("G", "T", "M", "Wd", "W", "K", "ok", "MT")

    def __init__(self, G, T, M, K, ok, MT=None):
        D = T.shape[2]
        self.G, self.T, self.M, self.K, self.ok = G, T, M, K, ok
        self.MT = MT  # (K, D + k, m) C-ordered, from the compiled kernel (kirchnet._jit)
        self.Wd, self.W = M[:, :, :D], M[:, :, D:]


class EnsembleKernel:
    """The stacked fast path of one circuit: ``step(rule, G (K, m), x (K, b, n_in), y)``."""

    def __init__(self, circuit, jit: bool | None = None):
        self.kernel = SmallKernel(circuit, jit=jit)  # its index arrays; the single-member fallback
        self.circuit = circuit
        self._last = None
        self._buffers = None
        # B_F^T X as differences of gathered rows (free position of each edge end; a clamped
        # end reads a zero row), B_F V as a sparse product: B_F has two entries per column
        nf = self.kernel.n_free
        pos = np.full(circuit.network.n_nodes, nf, dtype=np.int64)
        pos[circuit.free_nodes] = np.arange(nf)
        self._tail, self._head = pos[circuit.network.tails], pos[circuit.network.heads]
        self._BFT_sparse = sp.csr_array(self.kernel._BFT)

    def _jit_args(self) -> tuple:
        """The kernel's compiled-path arrays with this module's check thresholds."""
        return self.kernel._jit_args[:-3] + (_G_RANGE, REFINE_ABOVE, ACCURACY)

    # ------------------------------------------------------------------ factor
    def factor(self, G: np.ndarray) -> _Stack:
        """The stacked factorizations at ``G`` (K, m) (cached for the last ``G``: the epoch's
        evaluation and the next epoch's first step share one)."""
        last = self._last
        if last is not None and np.array_equal(last.G, G):  # a copy: callers may update G in place
            return last
        self._last = self._factor(G)
        return self._last

    def _work(self, Kn: int) -> dict:
        """Work arrays for K members, kept between steps (fresh multi-megabyte arrays every
        step cost more in page faults than the arithmetic). Right-hand sides and solutions
        are stored transposed, (K, columns, n_free), so that each member's block is a
        Fortran-ordered (n_free, columns) matrix for LAPACK and reductions are contiguous."""
        if self._buffers is None or self._buffers["K"] != Kn:
            kn = self.kernel
            nf, D, k, m = kn.n_free, kn.n_drivers, kn.n_outputs, kn.n_edges
            c = D + k + 1
            self._buffers = {"K": Kn, "slots": None, "rhsT": np.empty((Kn, c, nf)),
                             "XTp": np.zeros((Kn, c, nf + 1)), "MT": np.empty((Kn, c, m)),
                             "VT": np.empty((Kn, c, m)), "RT": np.empty((Kn, c, nf))}
            self._buffers["rhsT"][:, D:D + k, :] = kn._PFT.T
        return self._buffers

    def _factor(self, G: np.ndarray) -> _Stack:
        """Stacked factorizations; the returned bases live in work arrays that the next call
        overwrites (the kernel keeps only the last)."""
        kn = self.kernel
        Kn = G.shape[0]
        nf, D, k = kn.n_free, kn.n_drivers, kn.n_outputs
        if kn.jit:  # every member's factor, checks and bases in one compiled call (kirchnet._jit)
            status, MT, T, Kc = _jit.factor_stack(np.ascontiguousarray(G, dtype=float), *self._jit_args())
            return _Stack(G.copy(), T, MT.transpose(0, 2, 1), Kc, status == 0, MT)
        w = self._work(Kn)
        rhsT, XTp, MT, VT, RT = w["rhsT"], w["XTp"], w["MT"], w["VT"], w["RT"]
        XT = XTp[:, :, :nf]  # the last column stays 0 (the row a clamped edge end reads)
        S = kn._buf_size
        if w.get("slots") is None:
            w["slots"] = (np.arange(Kn)[:, None] * S + kn._slot[None, :]).ravel()
        # L_FF and R_drv of every member in one scatter
        buf = np.bincount(w["slots"], weights=(np.take(G, kn._edge, axis=1) * kn._sign).ravel(),
                          minlength=Kn * S).reshape(Kn, S)
        L = buf[:, :nf * nf].reshape(Kn, nf, nf)
        rhsT[:, :D, :] = buf[:, nf * nf:].reshape(Kn, nf, D).transpose(0, 2, 1)
        d = np.diagonal(L, axis1=1, axis2=2).copy()
        rhsT[:, -1, :] = d
        hi = d.max(axis=1)
        ok = (hi >= 1.0 / _G_RANGE) & (hi <= _G_RANGE)
        for i in range(Kn):  # the O(n^3) part: one potrf and one potrs per member
            if not ok[i]:
                XT[i] = 0.0
                continue
            chol, info = lapack.dpotrf(L[i].T, lower=1, clean=0, overwrite_a=1)  # L[i].T is L[i] in F order
            if info != 0:
                ok[i] = False
                XT[i] = 0.0
                continue
            Xi, info = lapack.dpotrs(chol, rhsT[i].T, lower=1)
            XT[i] = Xi.T
            ok[i] = info == 0
        np.take(XTp, self._tail, axis=2, out=MT)  # (K, D + k + 1, m): drops of H, Z and psi
        MT -= np.take(XTp, self._head, axis=2)
        np.multiply(MT, G[:, None, :], out=VT)
        RT[...] = (VT.reshape(Kn * VT.shape[1], -1) @ self._BFT_sparse).reshape(RT.shape)
        np.subtract(rhsT, RT, out=RT)  # residual in the edge form
        np.abs(RT, out=RT)
        RT /= d[:, None, :]
        rho = RT.max(axis=2)
        scale = np.abs(XT).max(axis=2)
        with np.errstate(invalid="ignore", over="ignore"):
            ok &= np.all(rho * (scale[:, -1:] * (1.0 + 2e-8)) <= REFINE_ABOVE * scale, axis=1)
            if kn._ni:
                Hn = XT[:, :kn._ni, :]
                ok &= np.maximum(-Hn.min(axis=(1, 2)), Hn.sum(axis=1).max(axis=1) - 1.0) <= ACCURACY
        MT[:, :D, :] += kn._ET
        Mb = MT[:, :D + k, :].transpose(0, 2, 1)  # (K, m, D + k), a view
        TK = (XT[:, :D + k, :] @ kn._PFT).transpose(0, 2, 1)  # (K, k, D + k)
        T = TK[:, :, :D] + kn._PD
        Kc = TK[:, :, D:]
        Kc = 0.5 * (Kc + Kc.transpose(0, 2, 1))
        return _Stack(G.copy(), T, Mb, Kc, ok)

    # ------------------------------------------------------------------ step
    def outputs(self, f: _Stack, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(z (K, b, D), o (K, b, k))`` for inputs ``x`` (K, b, n_in) or shared (b, n_in)."""
        z = x[..., self.kernel._perm]
        return z, z @ f.T.transpose(0, 2, 1)

    def step(self, rule, G: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(estimates (K, m), losses (K,))``: member ``i`` equals
        ``SmallKernel.step(rule, G[i], x[i], y[i])`` (to rounding). Unvalidated, as that."""
        kn = self.kernel
        t = type(rule)
        if (kn.jit and (t is Analytical or t is CoupledLearning) and type(rule.loss) is SquaredError
                and type(y) is np.ndarray and y.dtype == np.float64 and x.dtype == np.float64
                and x.ndim == 3 and y.shape == x.shape[:2] + (kn.n_outputs,) and x.shape[0] == G.shape[0]):
            b1, b2 = (0.0, 1.0) if t is Analytical else _betas(rule.eta, rule.variant)
            kind = 0 if t is Analytical else 1
            x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
            last = self._last
            if last is not None and last.MT is not None and np.array_equal(last.G, G):
                # the stacked factor the epoch's evaluation left at G: the same compiled algebra
                status, est, losses = _jit.rule_stack(last.MT, last.T, last.K, last.ok, x, y, kn._perm, kind, b1, b2)
            else:
                status, est, losses = _jit.step_stack(np.ascontiguousarray(G, dtype=float), x, y, kn._perm,
                                                      kind, b1, b2, *self._jit_args())
            for i in np.flatnonzero(status != 0):  # a failed check: the single kernel decides
                est[i], losses[i] = kn.step(rule, G[i], x[i], y[i])
            return est, losses
        f = self.factor(G)
        est = losses = None
        batched = _batched_kind(rule)
        if batched and f.ok.any():
            try:
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    est, losses = self._step(rule, batched, f, x, y)
            except np.linalg.LinAlgError:  # a singular output compliance: the kernel names it
                est = None
        if est is None:
            est, losses = np.empty_like(G), np.empty(G.shape[0])
            redo = np.arange(G.shape[0])
        else:
            good = f.ok & np.isfinite(losses) & np.isfinite(est).all(axis=1)
            redo = np.flatnonzero(~good)
        for i in redo:  # members that failed a check (or rules without a batched formula)
            est[i], losses[i] = self.kernel.step(rule, G[i], x[i], y[i])
        return est, losses

    def _step(self, rule, kind, f, x, y):
        z, o = self.outputs(f, x)
        Kn, b, k = o.shape
        loss = rule.loss
        mse = type(loss) is SquaredError and np.shape(y) == o.shape
        if mse:
            delta = o - y
            values = 0.5 * np.einsum("Kbk,Kbk->Kb", delta, delta)
            t = y
        else:
            v, dl = loss(o.reshape(Kn * b, k), np.asarray(y).reshape((Kn * b,) + np.shape(y)[2:]))
            values, delta = v.reshape(Kn, b), dl.reshape(Kn, b, k)
            t = None
        losses = values.sum(axis=1) / b
        zT = z.transpose(0, 2, 1)
        if kind in ("analytical", "insitu"):
            corr = np.einsum("Kek,Kek->Ke", f.W, f.Wd @ (zT @ delta))
            if kind == "insitu" and rule.wrt in ("resistance", "r"):
                return f.G * f.G * corr / b, losses
            return -corr / b, losses

        def targets():
            if t is not None:
                return t
            flat = np.asarray(y).reshape((Kn * b,) + np.shape(y)[2:])
            return loss.targets(flat, o.reshape(Kn * b, k)).reshape(Kn, b, k)

        def stiffness(r):  # rows of r (K, b, k) times S = K^{-1}
            return np.linalg.solve(f.K, r.transpose(0, 2, 1)).transpose(0, 2, 1)

        def energy(bk):  # squared error only (_batched_kind)
            A = np.eye(k)[None] + bk * f.K
            return -bk * np.linalg.solve(A, delta.transpose(0, 2, 1)).transpose(0, 2, 1)

        if kind == "ep":
            b1, b2 = _betas(rule.beta, rule.variant)
            mus = {bk: (-bk * delta if rule.nudge == "current" else energy(bk)) for bk in (b1, b2) if bk}
        elif kind in ("cl", "acl"):
            b1, b2 = _betas(rule.eta, rule.variant)
            nu = stiffness(targets() - o) if kind == "cl" else stiffness(-(delta @ f.K))
            mus = {bk: bk * nu for bk in (b1, b2) if bk}
        else:
            b1, b2 = _betas(rule.beta, rule.variant)
            nudge = type(rule.nudge)
            mus = {}
            for bk in (b1, b2):
                if not bk:
                    continue
                if nudge is CurrentNudge:
                    mus[bk] = -bk * delta
                elif nudge is EnergyNudge:
                    mus[bk] = energy(bk)
                elif nudge is ClampNudge:
                    mus[bk] = stiffness((o + bk * (targets() - o)) - o)
                else:
                    mus[bk] = stiffness((o - bk * delta @ f.K) - o)
        mu1, mu2 = mus.get(b1), mus.get(b2)
        dmu, smu = phase_difference(mu1, mu2)
        A = np.concatenate([zT @ dmu, 0.5 * (dmu.transpose(0, 2, 1) @ smu)], axis=1)
        return np.einsum("Kek,Kek->Ke", f.W, f.M @ A) / (b * (b2 - b1)), losses

    def evaluate(self, G, x, y, loss, accuracy=False) -> list[dict]:
        """Per member ``{"loss", "accuracy"}`` on the shared data ``(x, y)`` (one stacked readout)."""
        from .training import _labels

        f = self.factor(G)
        _, o = self.outputs(f, x)  # (K, n, k)
        Kn, n, k = o.shape
        if type(loss) is SquaredError and isinstance(y, np.ndarray) and y.shape == (n, k):
            r = o - y
            values = 0.5 * np.einsum("Knk,Knk->K", r, r) / n
        else:
            flat = loss(o.reshape(Kn * n, k), np.concatenate([np.asarray(y)] * Kn))[0]
            values = flat.reshape(Kn, n).mean(axis=1)
        acc = (np.mean(np.argmax(o, axis=2) == _labels(y)[None], axis=1) if accuracy else None)
        out = []
        for i in range(Kn):
            if not (f.ok[i] and np.isfinite(values[i])):  # the single kernel checks or refuses
                out.append(self.kernel.evaluate(G[i], x, y, loss, accuracy))
                continue
            rec = {"loss": float(values[i])}
            if accuracy:
                rec["accuracy"] = float(acc[i])
            out.append(rec)
        return out


def _batched_kind(rule) -> str | None:
    """The rule's fast formula when the batched step covers it (squared-error energy nudges
    only: other losses need a Newton solve per member, done by the single kernel)."""
    kind = _rule_kind(rule)
    energy = (kind == "ep" and rule.nudge == "energy") or (kind == "gep" and type(rule.nudge) is EnergyNudge)
    if energy and type(rule.loss) is not SquaredError:
        return None
    return kind


def _per_member(value, K: int, name: str, check) -> np.ndarray:
    arr = np.asarray(value, dtype=object if name == "seeds" else float)
    if arr.ndim == 0:
        arr = np.full(K, value, dtype=arr.dtype)
    if arr.shape != (K,):
        raise ShapeError(f"{name} must be one value or one per member ({K},), got shape {arr.shape}")
    return np.array([check(v, name) for v in arr], dtype=float if name != "seeds" else object)


def fit_ensemble(trainer, circuit, G0, x, y, x_val=None, y_val=None, lr=None, seeds=None) -> list:
    """Train the K members ``G0`` (K, m) with ``trainer``'s settings; returns K
    :class:`~kirchnet.training.TrainResult` s, member ``i`` equal (to rounding) to
    ``Trainer(..., lr=lr[i], seed=seeds[i]).fit(circuit, G0[i], x, y, x_val, y_val)``.

    ``lr``: the optimizer's learning rate, one or one per member (default the trainer's);
    ``seeds``: shuffling seeds, one or one per member (default the trainer's). The circuit
    must be small and linear and the rule one of :mod:`kirchnet.small`'s; constraints,
    callbacks, checkpoints, history files and ``cosine`` are per-run features: train
    such members separately (each is refused here with a :class:`ParameterError`).
    """
    from .training import TrainResult, History, _check_training_data, conductance_bounds
    from .partial import resolve_mask

    G = np.array(G0, dtype=float)
    if G.ndim != 2 or G.shape[1] != circuit.network.n_edges:
        raise ShapeError(f"an ensemble's g0 must have shape (K, {circuit.network.n_edges}), got {G.shape}")
    Kn = G.shape[0]
    if Kn == 0:
        raise ShapeError("an ensemble needs at least one member (g0 of shape (0, m))")
    G = np.stack([circuit.check_conductances(g) for g in G])
    if not supports(circuit, trainer.rule):
        raise ParameterError(f"ensembles need a small linear circuit (at most kirchnet.small.SMALL_MAX free "
                             f"nodes, backend 'auto'/'dense') and a rule kirchnet.small computes; got "
                             f"{circuit!r} with {trainer.rule!r}: train the members separately")
    refused = [name for name, on in (("constraints", not (isinstance(trainer.constraints, Compose)
                                                          and not trainer.constraints.constraints)),
                                     ("callbacks", bool(trainer.callbacks)),
                                     ("checkpoint_dir", trainer.checkpoint_dir is not None),
                                     ("history_dir", trainer.history_dir is not None),
                                     ("cosine", trainer.cosine),
                                     ("max_rank", trainer.max_rank not in (None, 0))) if on]
    if refused:
        raise ParameterError(f"ensembles do not support {', '.join(refused)} (per-run features); "
                             f"train the members separately with Trainer.fit")
    lrs = _per_member(trainer.optimizer.lr if lr is None else lr, Kn, "lr", check_positive)
    seed_list = _per_member(trainer.seed if seeds is None else seeds, Kn, "seeds", lambda v, n: check_seed(v))
    lo = np.minimum(trainer.clip[0], G.min(axis=1))[:, None]
    hi = np.maximum(trainer.clip[1], G.max(axis=1))[:, None]
    mask = resolve_mask(trainer.tunable, circuit)
    loss = trainer.rule.loss
    X, Y, Xv, Yv = _check_training_data(x, y, x_val, y_val, circuit, loss)
    n = len(X)
    bs = n if trainer.full_batch else trainer.batch_size
    ek = EnsembleKernel(circuit)
    opt = copy.deepcopy(trainer.optimizer)
    opt.reset()
    space = trainer.parametrization
    p_lo, p_hi = (lo, hi) if space == "conductance" else (1.0 / hi, 1.0 / lo)
    bounds = [conductance_bounds(trainer.constraints, (float(lo[i, 0]), float(hi[i, 0]))) for i in range(Kn)]
    warned = [False] * Kn

    def records(G, base, metrics=True):
        if not metrics:  # Trainer(evaluate_every=N): epoch, lr and batch loss only
            return [{**b, "low_rank_updates": 0} for b in base]
        ev = ek.evaluate(G, X, Y, loss, trainer.accuracy)
        if Xv is not None:
            for r, v in zip(ev, ek.evaluate(G, Xv, Yv, loss, trainer.accuracy)):
                r.update({f"val_{key}": val for key, val in v.items()})
        lo_b = np.array([bd[0] for bd in bounds])[:, None]
        hi_b = np.array([bd[1] for bd in bounds])[:, None]
        Gm = G[:, mask]  # saturation_counts for every member at once
        n_low = np.count_nonzero(Gm <= lo_b * (1.0 + 1e-9), axis=1)
        n_up = np.where(np.isfinite(hi_b[:, 0]), np.count_nonzero(Gm >= hi_b * (1.0 - 1e-9), axis=1), 0)
        n_tun = int(mask.sum())
        out = []
        for i in range(Kn):
            n_sat = int(n_low[i] + n_up[i])
            if (trainer.saturation_warning is not None and not warned[i] and n_tun
                    and n_sat > trainer.saturation_warning * n_tun):
                warned[i] = True
                warnings.warn(SaturationWarning(
                    f"ensemble member {i}, epoch {base[i]['epoch']}: {n_sat} of {n_tun} tunable edges sit at a "
                    f"conductance bound; Trainer(saturation_warning=None) silences this warning"),
                    stacklevel=5)  # the caller: here <- fit_ensemble <- Trainer.fit_ensemble <- its wrapper
            out.append({**base[i], **ev[i], "low_rank_updates": 0,
                        "n_at_lower": int(n_low[i]), "n_at_upper": int(n_up[i])})
        return out

    histories = [History() for _ in range(Kn)]
    for h, r in zip(histories, records(G, [{"epoch": 0, "lr": math.nan, "batch_loss": math.nan}] * Kn)):
        h.append(r)
    timings = []
    for epoch in range(1, trainer.epochs + 1):
        t0 = time.perf_counter()
        factor = float(trainer.schedule(epoch - 1))
        lr_e = lrs * factor  # each member's optimizer.lr * schedule(epoch - 1)
        if trainer.shuffle and n > 1:
            orders = np.stack([np.random.default_rng([int(s), epoch]).permutation(n) for s in seed_list])
        else:
            orders = np.broadcast_to(np.arange(n), (Kn, n))
        batch_losses = []
        for i in range(0, n, bs):
            idx = orders[:, i:i + bs]
            xb, yb = X[idx], Y[idx]
            try:
                est, bl = ek.step(trainer.rule, G, xb, yb)
            except (SolverError, ParameterError, ShapeError) as exc:  # say where, as Trainer.fit does
                from .training import _at_step

                raise _at_step(exc, epoch, i // bs) from exc
            if getattr(trainer.rule, "wrt", None) in ("resistance", "r"):
                est = -est / (G * G)  # dC/dg = -r^2 dC/dr
            d = est if space == "conductance" else -(G * G) * est
            d = np.where(mask, d, 0.0)
            if not np.isfinite(d).all():
                bad = int(np.flatnonzero(~np.isfinite(d).all(axis=1))[0])
                raise SolverError(f"epoch {epoch}, step {i // bs}: ensemble member {bad}: the gradient "
                                  f"is not finite; lower its learning rate")
            opt.t += 1  # Optimizer.step on the stack, with one learning rate per member
            p_new = to_space(G, space) - opt._direction(d, lr_e[:, None])
            G_new = from_space(np.clip(p_new, p_lo, p_hi), space)
            G_new = np.where(mask, G_new, G)
            if np.isnan(G_new[:, mask]).any():
                bad = int(np.flatnonzero(np.isnan(G_new[:, mask]).any(axis=1))[0])
                raise SolverError(f"epoch {epoch}, step {i // bs}: ensemble member {bad}: the update gave "
                                  f"NaN conductances; lower the learning rate")
            G_new = np.clip(G_new, lo, hi)
            G = np.where(mask, G_new, G)
            batch_losses.append(bl)
        B = np.array(batch_losses)  # (steps, K)
        mean_bl = B[0] if len(B) == 1 else B.mean(axis=0)
        base = [{"epoch": epoch, "lr": float(lr_e[j]), "batch_loss": float(mean_bl[j])} for j in range(Kn)]
        metrics = epoch % trainer.evaluate_every == 0 or epoch == trainer.epochs
        for h, r in zip(histories, records(G, base, metrics)):
            h.append(r)
        timings.append(time.perf_counter() - t0)
    return [TrainResult(G[i].copy(), histories[i], mask, epochs_run=len(histories[i]) - 1,
                        stopped=False, timings=list(timings)) for i in range(Kn)]


def _mask_key(tunable) -> str:
    if isinstance(tunable, np.ndarray):
        return f"{tunable.dtype}{tunable.shape}:{hash(tunable.tobytes())}"
    return repr(tunable)


def group_by_topology(runs, key=None) -> dict:
    """``{topology key: [run indices]}``: the runs that can share one ensemble.

    ``runs``: a sequence of ``(circuit, trainer)`` pairs (or of objects mapped to such a
    pair by ``key``). Runs share an ensemble when their circuits have the same network
    edges, ground, inputs and outputs and their trainers the same settings except the
    learning rate and the seed (rule, optimizer type and hyperparameters, schedule,
    epochs, batching, tunable mask, parametrization, clip)."""
    groups = defaultdict(list)
    for j, run in enumerate(runs):
        circuit, trainer = key(run) if key is not None else run
        net = circuit.network
        topo = (net.n_nodes, np.asarray(net.edges).tobytes(), circuit.ground,
                circuit.input_nodes.tobytes(), circuit.source_edges.tobytes(), repr(circuit.output_specs),
                circuit.clamped_nodes.tobytes())
        opt = trainer.optimizer
        settings = (repr(trainer.rule), type(opt).__name__,
                    repr({k: v for k, v in vars(opt).items() if k not in ("lr", "t") and not k.startswith("_")}),
                    repr(trainer.schedule), trainer.epochs, trainer.batch_size, trainer.full_batch,
                    trainer.shuffle, _mask_key(trainer.tunable), trainer.parametrization, trainer.clip)
        groups[(topo, settings)].append(j)
    return dict(groups)
