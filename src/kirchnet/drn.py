"""Deep resistive networks (DRN, after Scellier, ICML 2024) with an exact layered solver.

A DRN is a layered resistive network:

* the input layer clamps ``2 n_0`` nodes to ``gain * (x, -x)`` (duplicated and inverted, so
  that positive conductances realise signed weights);
* consecutive layers are joined by dense trainable conductances ``W_l`` of shape
  ``(n_l, n_{l+1})`` (no edges inside a layer);
* every hidden node is tied to ground through an ideal diode: the first
  ``round(diode_split * n_l)`` nodes of a hidden layer are bounded below,
  ``v >= diode_bias``, the others bounded above, ``v <= -diode_bias`` (``diode_bias != 0``
  is a voltage source in series with the diode), so each hidden unit acts like a ReLU;
* the output layer is linear, read as node potentials;
* optionally (``bias != 0``) every non-input layer ``l`` is tied to two bias sources at
  ``+bias`` and ``-bias`` by trainable conductances ``G_l`` of shape ``(2, n_l)``.

Equilibrium. The potentials minimize the co-content (power) ``E(v) = 1/2 sum_l sum_ij
W_l[i, j] (v_i - v_j)^2 + 1/2 sum_l sum_j (G_l[0, j] (bias - v_j)^2 + G_l[1, j] (bias + v_j)^2)``
over the diode bounds: a strictly convex quadratic program. A node's neighbours lie in
the layers above and below only, so given the even layers every odd-layer node solves a
one-variable problem whose solution is the conductance-weighted average of its
neighbours clipped to its diode bound,

    v_j = clip((sum_i g_ij v_i + bias terms) / (sum_i g_ij + bias conductances), bound_j),

and vice versa. :meth:`DRN.relax` alternates the two blocks (block coordinate descent;
each block step is an exact minimization, so the energy decreases monotonically and the
iteration converges to the unique minimizer) until one whole sweep moves no potential by
more than ``tol`` times the voltage scale: the stopping quantity is the KKT residual
(KCL at free nodes, complementarity at the diodes) divided by each node's total
conductance. Everything is vectorized over the batch (one matrix product per layer pair
and half-sweep); the input term ``v_0 W_0`` is computed once per batch and shared by all
phases.

Nudged phases (EP) add ``beta C`` with ``C = 1/2 ||o - y||^2`` per sample to the energy;
the output update becomes ``(sum_h g_ho v_h + beta y) / (d_o + beta)`` (needs
``d_o + beta > 0``: a negative nudge larger than an output's total conductance makes the
energy unbounded, a :class:`~kirchnet.errors.ParameterError`).

Exact gradient (:meth:`DRN.loss_and_grad`). Where the active set (diodes at their bound)
is strict, the equilibrium is locally the solution of the linear network in which the
active nodes are clamped at their bounds; implicit differentiation gives

    dC/dg_ij = -(lam_i - lam_j) (v_i - v_j),   H_FF lam = dC/dv_F,

with ``lam = 0`` on the inputs and the active nodes. ``H_FF`` is the Laplacian of that
linearized network: the same layered network with the inputs off, the active nodes
grounded and the output error injected as currents, solved by the same block
coordinate descent (block Gauss-Seidel on an SPD matrix whose diagonal blocks are
diagonal, hence exact block solves; converges, same stopping test).

Hebbian update (EP). ``dE/dW_l[i, j] = 1/2 mean_b (v_i - v_j)^2``, never built as a
``(batch, n_l, n_{l+1})`` tensor: ``mean_b (v_i - v_j)^2 = mean(v_i^2) 1^T + 1 mean(v_j^2)^T
- 2 V_pre^T V_post / B`` (:func:`hebbian`); for ``W_0`` the inputs are the same in both
nudged phases and the difference of the two phases is one product ``V_0^T (V_1^+ - V_1^-)``.

:meth:`DRN.to_circuit` builds the equivalent general :class:`~kirchnet.Circuit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConvergenceError, ParameterError, ShapeError
from ._interrupt import reraises_ctrl_c

__all__ = ["DRNSpec", "DRN", "DRNState", "DRNClassifier", "hebbian", "fit_drn", "layered_spec",
           "deep_resistive_circuit"]


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return v


@dataclass(frozen=True)
class DRNSpec:
    """Hyperparameters of a DRN.

    ``layers = (n_features, h_1, ..., n_outputs)``: the input layer has ``2 n_features``
    nodes (``gain * (x, -x)``). ``diode_split``: fraction of each hidden layer bounded
    below (``v >= diode_bias``; the rest ``v <= -diode_bias``). ``bias``: voltage of the
    two bias sources (``+bias``, ``-bias``) tied to every non-input layer (0: none).
    ``g_min``: the smallest conductance training keeps. ``tol``, ``max_sweeps``: stopping
    test of the block coordinate descent (relative to the voltage scale).
    """

    layers: tuple[int, ...]
    gain: float = 1.0
    diode_split: float = 0.5
    diode_bias: float = 0.0
    bias: float = 0.0
    g_min: float = 1e-6
    tol: float = 1e-10
    max_sweeps: int = 10_000

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise ParameterError(f"DRNSpec.layers must be a sequence of layer sizes such as "
                                 f"(784, 100, 10), got {self.layers!r}")
        layers = tuple(self.layers)
        if len(layers) < 3 or any(isinstance(n, bool) or not isinstance(n, (int, np.integer))
                                  or n < 1 for n in layers):
            raise ParameterError(f"DRNSpec.layers must hold at least three positive integers "
                                 f"(inputs, hidden..., outputs), got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(int(n) for n in layers))
        for name in ("gain", "diode_split", "diode_bias", "bias", "g_min", "tol"):
            object.__setattr__(self, name, _finite(f"DRNSpec.{name}", getattr(self, name)))
        if self.gain <= 0:
            raise ParameterError(f"DRNSpec.gain must be positive, got {self.gain!r}")
        if not 0.0 <= self.diode_split <= 1.0:
            raise ParameterError(f"DRNSpec.diode_split must lie in [0, 1], got {self.diode_split!r}")
        if self.g_min <= 0:
            raise ParameterError(f"DRNSpec.g_min must be positive, got {self.g_min!r}")
        if not 0 < self.tol < 1:
            raise ParameterError(f"DRNSpec.tol must lie in (0, 1), got {self.tol!r}")
        if not isinstance(self.max_sweeps, (int, np.integer)) or self.max_sweeps < 1:
            raise ParameterError(f"DRNSpec.max_sweeps must be a positive integer, got {self.max_sweeps!r}")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Node counts per layer: ``(2 n_features, h_1, ..., n_outputs)``."""
        return (2 * self.layers[0],) + self.layers[1:]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def has_bias(self) -> bool:
        return self.bias != 0.0

    def n_lower(self, l: int) -> int:
        """How many nodes of hidden layer ``l`` are bounded below."""
        return int(round(self.diode_split * self.sizes[l]))

    @property
    def n_params(self) -> int:
        s = self.sizes
        return sum(a * b for a, b in zip(s, s[1:])) + (2 * sum(s[1:]) if self.has_bias else 0)


@dataclass
class DRNState:
    """Equilibrium of a batch: ``potentials[l]`` (batch, n_l) per layer (``[0]`` the
    inputs), ``active[l]`` (batch, n_l) the diodes at their bound (``None`` for the input
    and output layers), ``sweeps`` used and the final ``residual`` (relative)."""

    potentials: list
    active: list
    sweeps: int
    residual: float
    beta: float = 0.0
    #: total conductance per node of layers 1..L without the nudge (index 0 unused)
    degrees: list | None = None

    @property
    def outputs(self) -> np.ndarray:
        return self.potentials[-1]


@dataclass
class _Batch:
    """What every phase of one batch shares (:meth:`DRN._context`)."""

    v0: np.ndarray
    drive: np.ndarray
    degrees: list
    bias_currents: list


def hebbian(v_pre: np.ndarray, v_post: np.ndarray) -> np.ndarray:
    """``mean_b (v_pre[b, i] - v_post[b, j])^2`` (n_pre, n_post) as three matrix products:
    ``mean(v_pre^2) 1^T + 1 mean(v_post^2)^T - 2 V_pre^T V_post / B``."""
    v_pre, v_post = np.asarray(v_pre, dtype=float), np.asarray(v_post, dtype=float)
    if v_pre.ndim != 2 or v_post.ndim != 2 or v_pre.shape[0] != v_post.shape[0]:
        raise ShapeError(f"hebbian needs two (batch, n) arrays with the same batch, got "
                         f"{v_pre.shape} and {v_post.shape}")
    B = v_pre.shape[0]
    out = (v_pre.T @ v_post) * (-2.0 / B)
    out += np.mean(v_pre * v_pre, axis=0)[:, None]
    out += np.mean(v_post * v_post, axis=0)[None, :]
    return out


class DRN:
    """A deep resistive network: :class:`DRNSpec` plus conductances.

    All parameters live in one flat vector ``params`` (the edge order of
    :meth:`to_circuit`): the weights ``weights[l]`` (n_l, n_{l+1}) in C order, layer after
    layer, then (if ``spec.bias``) the bias conductances ``biases[l - 1]`` (2, n_l) for
    ``l = 1 .. L``. ``weights`` and ``biases`` are views into ``params``.

    Initialization (``params=None``): ``W_l ~ U(0, 2 init_scale / sqrt(n_l))`` (seeded).
    """

    def __init__(self, spec: DRNSpec, params: np.ndarray | None = None, seed: int = 0,
                 init_scale: float = 1.0):
        if not isinstance(spec, DRNSpec):
            raise ParameterError(f"spec must be a DRNSpec, got {type(spec).__name__}")
        self.spec = spec
        sizes = spec.sizes
        self.params = np.empty(spec.n_params)
        self.weights, self.biases = [], []
        o = 0
        for a, b in zip(sizes, sizes[1:]):
            self.weights.append(self.params[o:o + a * b].reshape(a, b))
            o += a * b
        if spec.has_bias:
            for n in sizes[1:]:
                self.biases.append(self.params[o:o + 2 * n].reshape(2, n))
                o += 2 * n
        if params is None:
            rng = np.random.default_rng(seed)
            scale = _finite("init_scale", init_scale)
            if scale <= 0:
                raise ParameterError(f"init_scale must be positive, got {init_scale!r}")
            for W in self.weights:
                W[...] = rng.uniform(0.0, 2.0 * scale / math.sqrt(W.shape[0]), W.shape)
            for G in self.biases:
                G[...] = rng.uniform(0.0, 2.0 * scale / math.sqrt(sizes[0]), G.shape)
            np.maximum(self.params, spec.g_min, out=self.params)
        else:
            self.set_params(params)
        # diode bounds per hidden layer (lower, upper): v >= lo, v <= hi
        self._lo, self._hi = [None], [None]
        for l in range(1, len(sizes) - 1):
            k = spec.n_lower(l)
            lo = np.full(sizes[l], -np.inf)
            hi = np.full(sizes[l], np.inf)
            lo[:k] = spec.diode_bias
            hi[k:] = -spec.diode_bias
            self._lo.append(lo)
            self._hi.append(hi)
        self._lo.append(None)
        self._hi.append(None)

    # ------------------------------------------------------------------ parameters
    def set_params(self, params) -> None:
        """Copy ``params`` (n_params,) into the network (checked positive and finite)."""
        p = np.asarray(params, dtype=float)
        if p.shape != self.params.shape:
            raise ShapeError(f"params must have shape {self.params.shape} for layers "
                             f"{self.spec.layers} (bias={self.spec.bias}), got {p.shape}")
        bad = np.flatnonzero(~(np.isfinite(p) & (p > 0)))
        if bad.size:
            raise ParameterError(f"conductances must be positive and finite; params[{int(bad[0])}] "
                                 f"= {p[bad[0]]!r} ({bad.size} bad entries)", edges=bad[:20])
        self.params[...] = p

    def copy(self) -> "DRN":
        return DRN(self.spec, self.params.copy())

    def _degrees(self, beta: float = 0.0) -> list:
        """Total conductance at each node of layers 1..L (index 0 unused)."""
        W, d = self.weights, [None]
        L = len(W)
        for l in range(1, L + 1):
            dl = W[l - 1].sum(axis=0)
            if l < L:
                dl = dl + W[l].sum(axis=1)
            if self.biases:
                dl = dl + self.biases[l - 1].sum(axis=0)
            d.append(dl)
        if beta:
            d[L] = d[L] + beta
            if np.any(d[L] <= 0):
                k = int(np.argmin(d[L]))
                raise ParameterError(
                    f"beta = {beta!r} makes the nudged energy unbounded: output {k} has total "
                    f"conductance {d[L][k] - beta:.6g} <= -beta; use |beta| below the smallest "
                    f"output conductance sum ({float(np.min(d[L]) - beta):.6g})")
        return d

    def _bias_currents(self) -> list:
        """``bias (G_l[0] - G_l[1])``: the current the bias sources drive into each node."""
        if not self.biases:
            return [0.0] * (len(self.weights) + 1)
        return [0.0] + [self.spec.bias * (G[0] - G[1]) for G in self.biases]

    # ------------------------------------------------------------------ inputs
    def input_potentials(self, x) -> np.ndarray:
        """``gain * (x, -x)`` (batch, 2 n_features)."""
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[None, :]
        n = self.spec.layers[0]
        if x.ndim != 2 or x.shape[1] != n:
            raise ShapeError(f"x must have shape (batch, {n}) for layers {self.spec.layers}, "
                             f"got {np.shape(x)}")
        if not np.all(np.isfinite(x)):
            raise ParameterError("x contains NaN or infinite values")
        g = self.spec.gain
        return np.concatenate([g * x, -g * x], axis=1)

    def _check_y(self, y, B):
        y = np.asarray(y, dtype=float)
        if y.ndim == 1:
            y = y[None, :]
        n = self.spec.layers[-1]
        if y.shape != (B, n):
            raise ShapeError(f"y must have shape ({B}, {n}) (one target per output), got {np.shape(y)}")
        return y

    # ------------------------------------------------------------------ solver
    def _scale(self, v0, y=None, beta=0.0) -> float:
        s = max(float(np.max(np.abs(v0))) if v0.size else 0.0, abs(self.spec.bias),
                abs(self.spec.diode_bias))
        if beta and y is not None and y.size:
            s = max(s, float(np.max(np.abs(y))))
        return s if s > 0 else 1.0

    def _context(self, x=None, v0=None) -> "_Batch":
        """Per-batch quantities shared by every phase: input potentials ``v0``, the input
        drive ``v0 W_0`` and the node degrees (one pass over ``W_0`` for both: ``[v0; 1] W_0``)."""
        if v0 is None:
            v0 = self.input_potentials(x)
        B = v0.shape[0]
        W = self.weights
        both = np.concatenate([v0, np.ones((1, v0.shape[1]))]) @ W[0]
        drive, col0 = both[:B], both[B]
        L = len(W)
        d = [None]
        for l in range(1, L + 1):
            dl = col0.copy() if l == 1 else W[l - 1].sum(axis=0)
            if l < L:
                dl += W[l].sum(axis=1)
            if self.biases:
                dl += self.biases[l - 1].sum(axis=0)
            d.append(dl)
        return _Batch(v0, drive, d, self._bias_currents())

    def relax(self, x=None, y=None, beta: float = 0.0, init: DRNState | None = None,
              tol: float | None = None, active: bool = True, context: "_Batch | None" = None
              ) -> DRNState:
        """Equilibrium (exact to ``tol``, default ``spec.tol``) of the batch ``x``
        (batch, n_features), optionally nudged by ``beta C`` towards ``y``; ``init``
        warm-starts from another state (e.g. the free one; the sweep then starts with the
        output layer's parity, where the nudge acts). ``active=False`` skips the active
        set (only the exact gradient needs it). ``context`` shares the per-batch input
        drive and degrees between phases (:meth:`_context`)."""
        ctx = self._context(x) if context is None else context
        v0 = ctx.v0
        B = v0.shape[0]
        if beta:
            if y is None:
                raise ParameterError("relax with beta != 0 needs the targets y")
            y = self._check_y(y, B)
        W = self.weights
        WT = [w.T for w in W]
        L = len(W)
        inv_d = [None] + [1.0 / dl for dl in ctx.degrees[1:]]
        c = ctx.bias_currents
        extra = [None] + [c[l] for l in range(1, L + 1)]
        if beta:
            dL = ctx.degrees[L] + beta
            if np.any(dL <= 0):
                k = int(np.argmin(dL))
                raise ParameterError(
                    f"beta = {beta!r} makes the nudged energy unbounded: output {k} has total "
                    f"conductance {ctx.degrees[L][k]:.6g} <= -beta; use |beta| below the smallest "
                    f"output conductance sum ({float(np.min(ctx.degrees[L])):.6g})")
            inv_d[L] = 1.0 / dL
            extra[L] = extra[L] + beta * y
        extra[1] = ctx.drive + extra[1]
        lo, hi = self._lo, self._hi
        if init is not None:
            v = [v0] + [p.copy() for p in init.potentials[1:]]
        else:
            v = [v0] + [np.zeros((B, n)) for n in self.spec.sizes[1:]]
        odd, even = list(range(1, L + 1, 2)), list(range(2, L + 1, 2))
        blocks = (even, odd) if (init is not None and L % 2 == 0) else (odd, even)
        scale = self._scale(v0, y, beta)
        tol = self.spec.tol if tol is None else float(tol)
        thresh = tol * scale

        def update(l):
            if l < L:
                a = v[l + 1] @ WT[l]
                if l > 1:
                    a += v[l - 1] @ W[l - 1]
                a += extra[l]
                a *= inv_d[l]
                np.maximum(a, lo[l], out=a)
                np.minimum(a, hi[l], out=a)
            else:
                a = v[l - 1] @ W[l - 1]
                a += extra[l]
                a *= inv_d[l]
            diff = a - v[l]
            np.abs(diff, out=diff)
            v[l] = a
            return diff.max() if diff.size else 0.0

        res = np.inf
        for sweep in range(1, self.spec.max_sweeps + 1):
            res = 0.0
            for block in blocks:
                for l in block:
                    res = max(res, update(l))
            if res <= thresh:
                break
        else:
            raise ConvergenceError(
                f"DRN relaxation did not reach tol = {tol:g} in max_sweeps = {self.spec.max_sweeps} "
                f"sweeps (last relative change {res / scale:.3g}); raise DRNSpec.max_sweeps")
        act = [None] * (L + 1)
        if active:
            for l in range(1, L):
                a = extra[l] + v[l + 1] @ WT[l]
                if l > 1:
                    a += v[l - 1] @ W[l - 1]
                a *= inv_d[l]
                act[l] = (a < lo[l]) | (a > hi[l])
        return DRNState(v, act, sweep, float(res) / scale, float(beta), ctx.degrees)

    def kkt_residual(self, state: DRNState, y=None) -> float:
        """Largest violation of the optimality conditions, relative to the voltage scale
        times the node's total conductance: KCL at every free node, and at every diode
        node feasibility, the sign of the diode current and complementarity
        ``i_diode (v - bound) = 0``. (An independent check of :meth:`relax`.)"""
        v, beta = state.potentials, state.beta
        W, L = self.weights, len(self.weights)
        B = v[0].shape[0]
        y = self._check_y(y, B) if beta else None
        d = self._degrees(beta)
        c = self._bias_currents()
        scale = self._scale(v[0], y, beta)
        worst = 0.0
        for l in range(1, L + 1):
            # current flowing out of the node through its resistors (and nudge)
            inflow = v[l - 1] @ W[l - 1] + c[l]
            if l < L:
                inflow = inflow + v[l + 1] @ W[l].T
            elif beta:
                inflow = inflow + beta * y
            r = d[l] * v[l] - inflow          # = current the diode must supply (into the node: -r)
            if l == L:
                worst = max(worst, float(np.max(np.abs(r) / d[l])))
                continue
            lo, hi = self._lo[l], self._hi[l]
            # lower-bounded node: diode current into the node i = r >= 0, v >= lo, i (v - lo) = 0
            low = np.isfinite(lo)
            vl, rl = v[l][:, low], r[:, low]
            dl = d[l][low]
            viol = np.maximum(lo[low] - vl, 0.0) + np.maximum(-rl, 0.0) / dl \
                + np.minimum(np.abs(rl) / dl, np.abs(vl - lo[low]))
            worst = max(worst, float(np.max(viol, initial=0.0)))
            up = ~low
            vu, ru = v[l][:, up], r[:, up]
            du = d[l][up]
            viol = np.maximum(vu - hi[up], 0.0) + np.maximum(ru, 0.0) / du \
                + np.minimum(np.abs(ru) / du, np.abs(vu - hi[up]))
            worst = max(worst, float(np.max(viol, initial=0.0)))
        return worst / scale

    def predict(self, x) -> np.ndarray:
        """Output potentials of the free equilibrium (batch, n_outputs)."""
        return self.relax(x).outputs

    # ------------------------------------------------------------------ gradients
    def _energy_grad_diff(self, a: DRNState, b: DRNState, coeff: float, out: np.ndarray,
                          skip_first: bool = False) -> np.ndarray:
        """``out = coeff * (dE/dtheta(a) - dE/dtheta(b))`` (batch means) by matrix products;
        ``dE/dW_l[i, j] = 1/2 mean_b (v_i - v_j)^2``, ``dE/dG_l[0, j] = 1/2 mean (bias - v_j)^2``,
        ``dE/dG_l[1, j] = 1/2 mean (bias + v_j)^2``. States share the input layer.
        ``skip_first`` leaves the ``W_0`` block of ``out`` untouched."""
        va, vb = a.potentials, b.potentials
        B = va[0].shape[0]
        o = 0
        for l, W in enumerate(self.weights):
            n = W.size
            G = out[o:o + n].reshape(W.shape)
            if l == 0 and skip_first:
                o += n
                continue
            if l == 0:  # inputs identical: only the cross term survives
                np.matmul(va[0].T, va[1] - vb[1], out=G)
                G *= -coeff / B
            else:
                np.matmul(va[l].T, va[l + 1], out=G)
                G -= vb[l].T @ vb[l + 1]
                G *= -coeff / B
                G += (0.5 * coeff) * np.mean(va[l] ** 2 - vb[l] ** 2, axis=0)[:, None]
            G += (0.5 * coeff) * np.mean(va[l + 1] ** 2 - vb[l + 1] ** 2, axis=0)[None, :]
            o += n
        if self.biases:
            s = self.spec.bias
            for l, Gb in enumerate(self.biases, start=1):
                n = Gb.size
                G = out[o:o + n].reshape(Gb.shape)
                pa, pb = va[l], vb[l]
                # (s - a)^2 - (s - b)^2 = (b - a)(2 s - a - b); (s + a)^2 - (s + b)^2 = (a - b)(2 s + a + b)
                G[0] = (0.5 * coeff) * np.mean((pb - pa) * (2 * s - pa - pb), axis=0)
                G[1] = (0.5 * coeff) * np.mean((pa - pb) * (2 * s + pa + pb), axis=0)
                o += n
        return out

    def loss(self, x, y) -> float:
        """Batch mean of ``1/2 ||o - y||^2`` at the free equilibrium."""
        st = self.relax(x)
        y = self._check_y(y, st.outputs.shape[0])
        return 0.5 * float(np.mean(np.sum((st.outputs - y) ** 2, axis=1)))

    def _ep_phases(self, x, y, beta, variant, free=None):
        beta = _finite("beta", beta)
        if beta <= 0:
            raise ParameterError(f"beta must be positive (the variant sets the sign), got {beta!r}")
        if variant not in ("centered", "positive", "negative"):
            raise ParameterError(f"variant must be 'centered', 'positive' or 'negative', got {variant!r}")
        ctx = self._context(x)
        y = self._check_y(y, ctx.v0.shape[0])
        if free is None:
            free = self.relax(context=ctx, active=False)
        loss = 0.5 * float(np.mean(np.sum((free.outputs - y) ** 2, axis=1)))
        if variant == "centered":
            a = self.relax(y=y, beta=beta, init=free, context=ctx, active=False)
            b = self.relax(y=y, beta=-beta, init=free, context=ctx, active=False)
            coeff = 1.0 / (2.0 * beta)
        elif variant == "positive":
            a, b, coeff = self.relax(y=y, beta=beta, init=free, context=ctx, active=False), free, 1.0 / beta
        else:
            a, b, coeff = free, self.relax(y=y, beta=-beta, init=free, context=ctx, active=False), 1.0 / beta
        return loss, a, b, coeff, free

    def ep_gradient(self, x, y, beta: float = 1.0, variant: str = "centered",
                    free: DRNState | None = None, out: np.ndarray | None = None):
        """Equilibrium propagation estimate of ``dC/dparams``.

        ``centered``: ``(dE/dtheta(v^beta) - dE/dtheta(v^-beta)) / (2 beta)`` (three
        relaxations: free, ``+beta``, ``-beta``, the nudged ones warm-started from the free
        state); ``positive``: ``(dE(v^beta) - dE(v^0)) / beta``; ``negative``:
        ``(dE(v^0) - dE(v^-beta)) / beta``. Returns ``(loss, estimate (n_params,), free)``.
        """
        loss, a, b, coeff, free = self._ep_phases(x, y, beta, variant, free)
        if out is None:
            out = np.empty_like(self.params)
        self._energy_grad_diff(a, b, coeff, out)
        return loss, out, free

    def _accumulate_w0(self, s: float, D: np.ndarray, q: np.ndarray, v0: np.ndarray) -> None:
        """``W_0 += s V_0^T D + 1 q^T`` in one BLAS pass over ``W_0`` (``dgemm`` with
        ``beta = 1`` on the augmented ``[V_0; 1]^T [D; q / s]``)."""
        from scipy.linalg.blas import dgemm

        W0 = self.weights[0]
        if s == 0.0:
            W0 += q[None, :]
            return
        Daug = np.concatenate([D, (q / s)[None, :]])
        Vaug = np.concatenate([v0, np.ones((1, v0.shape[1]))])
        res = dgemm(s, Daug, Vaug, beta=1.0, c=W0.T, overwrite_c=1, trans_a=1)
        if not np.shares_memory(res, W0):  # pragma: no cover - BLAS copied c
            W0[...] = res.T

    def ep_step(self, x, y, lr: float, beta: float = 1.0, variant: str = "centered") -> float:
        """One in-place SGD step with the EP estimate, ``params -= lr * estimate``, then
        ``params >= g_min``; the ``W_0`` block is accumulated by one BLAS call
        (:meth:`_accumulate_w0`) instead of forming the estimate. Returns the free loss."""
        loss, a, b, coeff, _ = self._ep_phases(x, y, beta, variant)
        v0 = a.potentials[0]
        B = v0.shape[0]
        # W_0 estimate: -(coeff / B) V_0^T (a_1 - b_1) + 1 (coeff / 2) mean(a_1^2 - b_1^2)^T
        self._accumulate_w0(lr * coeff / B, a.potentials[1] - b.potentials[1],
                            -(0.5 * lr * coeff) * np.mean(a.potentials[1] ** 2 - b.potentials[1] ** 2,
                                                         axis=0), v0)
        self._sgd_rest(lambda out: self._energy_grad_diff(a, b, coeff, out, skip_first=True), lr)
        return loss

    def _sgd_rest(self, fill, lr):
        n0 = self.weights[0].size
        buf = np.empty(self.params.size)
        fill(buf)
        rest = self.params[n0:]
        rest -= lr * buf[n0:]
        np.maximum(self.params, self.spec.g_min, out=self.params)

    def gradient_step(self, x, y, lr: float) -> float:
        """One in-place SGD step with the exact gradient (as :meth:`ep_step`). Returns the loss."""
        v, loss, lam = self._loss_adjoint(self.relax(x), y)
        B = v[0].shape[0]
        # W_0 gradient: V_0^T Lam_1 / B - 1 mean(lam_1 v_1)^T
        self._accumulate_w0(-lr / B, lam[1], lr * np.mean(lam[1] * v[1], axis=0), v[0])
        self._sgd_rest(lambda out: self._grad_from_adjoint(v, lam, out, skip_first=True), lr)
        return loss

    def _loss_adjoint(self, state: DRNState, y):
        """``(potentials, 1/2 mean ||o - y||^2, adjoint)`` of a relaxed state: the output error
        read at the last layer and the adjoint of :meth:`adjoint` for it."""
        v = state.potentials
        err = v[-1] - self._check_y(y, v[0].shape[0])
        return v, 0.5 * float(np.mean(np.sum(err * err, axis=1))), self.adjoint(state, err)

    def adjoint(self, state: DRNState, error: np.ndarray, tol: float | None = None) -> list:
        """``lam`` per layer (``lam_0 = 0``) solving ``H_FF lam = error`` on the linearized
        network of ``state`` (active diodes grounded, ``error`` (batch, n_out) injected at
        the outputs), by block coordinate descent to ``tol`` (relative to ``max |lam|``)."""
        W, L = self.weights, len(self.weights)
        v = state.potentials
        B = v[0].shape[0]
        d = state.degrees if state.degrees is not None else self._degrees(0.0)
        inv_d = [None] + [1.0 / dl for dl in d[1:]]
        free = [None] + [~state.active[l] for l in range(1, L)] + [None]
        lam = [np.zeros((B, n)) for n in self.spec.sizes]
        lam[L] = error * inv_d[L]
        tol = self.spec.tol if tol is None else float(tol)
        odd = list(range(1, L + 1, 2))
        even = list(range(2, L + 1, 2))

        def update(l):
            a = lam[l + 1] @ W[l].T if l < L else error.copy()
            if l > 1:
                a += lam[l - 1] @ W[l - 1]
            a *= inv_d[l]
            if l < L:
                a *= free[l]
            change = float(np.max(np.abs(a - lam[l]))) if a.size else 0.0
            lam[l] = a
            return change

        res = np.inf
        for sweep in range(1, self.spec.max_sweeps + 1):
            res = 0.0
            for l in odd:
                res = max(res, update(l))
            for l in even:
                res = max(res, update(l))
            scale = max(float(np.max(np.abs(lam[l]))) for l in range(1, L + 1))
            if res <= tol * (scale if scale > 0 else 1.0):
                break
        else:
            raise ConvergenceError(
                f"DRN adjoint did not reach tol = {tol:g} in max_sweeps = {self.spec.max_sweeps}; "
                f"raise DRNSpec.max_sweeps")
        return lam

    def loss_and_grad(self, x, y, state: DRNState | None = None, out: np.ndarray | None = None):
        """Batch-mean loss ``1/2 ||o - y||^2`` and its exact gradient (n_params,) by implicit
        differentiation with the active set frozen: ``dC/dg_ij = -mean_b (lam_i - lam_j)
        (v_i - v_j)`` (module docstring). Returns ``(loss, grad, state)``."""
        if state is None:
            state = self.relax(x)
        v, loss, lam = self._loss_adjoint(state, y)
        if out is None:
            out = np.empty_like(self.params)
        self._grad_from_adjoint(v, lam, out)
        return loss, out, state

    def _grad_from_adjoint(self, v, lam, out, skip_first: bool = False):
        """``out = dC/dparams`` from potentials ``v`` and adjoint ``lam`` (per layer)."""
        B = v[0].shape[0]
        o = 0
        for l, W in enumerate(self.weights):
            n = W.size
            G = out[o:o + n].reshape(W.shape)
            o += n
            if l == 0 and skip_first:
                continue
            # -mean (lam_i - lam_j)(v_i - v_j) = [V_i^T Lam_j + Lam_i^T V_j]/B - mean(lam_i v_i) - mean(lam_j v_j)
            np.matmul(v[l].T, lam[l + 1], out=G)
            if l > 0:
                G += lam[l].T @ v[l + 1]
                G -= np.mean(lam[l] * v[l], axis=0)[:, None] * B
            G -= np.mean(lam[l + 1] * v[l + 1], axis=0)[None, :] * B
            G /= B
        if self.biases:
            s = self.spec.bias
            for l, Gb in enumerate(self.biases, start=1):
                n = Gb.size
                G = out[o:o + n].reshape(Gb.shape)
                # source at +s: -mean(0 - lam)(s - v) = mean lam (s - v); at -s: mean lam (-s - v)
                G[0] = np.mean(lam[l] * (s - v[l]), axis=0)
                G[1] = np.mean(lam[l] * (-s - v[l]), axis=0)
                o += n
        return out

    # ------------------------------------------------------------------ general circuit
    def to_circuit(self, backend: str = "auto"):
        """The equivalent general :class:`~kirchnet.Circuit` and its edge scales ``g``.

        Nodes: 0 ground, then the ``2 n_0`` input nodes, the two bias sources (if any),
        the hidden layers and the outputs. Edges, in the order of :attr:`params`: the
        layer-to-layer conductances, the bias conductances, then one
        :class:`~kirchnet.elements.IdealDiode` per hidden node (ground -> node for a lower
        bound, node -> ground for an upper bound; scale 1, no gradient). Circuit inputs:
        the input nodes (clamped to :meth:`circuit_inputs`), the bias nodes and, when
        ``diode_bias != 0``, the diodes as series-source edges. Returns ``(circuit, g)``.
        Needs the nonlinear elements (``kirchnet.elements`` and ``Circuit(elements=...)``).
        """
        from . import circuit as _circuit
        from .network import Network
        try:
            from .elements import IdealDiode
        except ImportError as exc:  # pragma: no cover - depends on the installed version
            raise ParameterError("DRN.to_circuit needs kirchnet.elements (ideal diodes)") from exc
        import inspect
        if "elements" not in inspect.signature(_circuit.Circuit.__init__).parameters:
            raise ParameterError("DRN.to_circuit needs Circuit(..., elements=...) (the nonlinear "
                                 "circuit core); this kirchnet's Circuit has no elements argument")
        sizes, spec = self.spec.sizes, self.spec
        n_bias = 2 if spec.has_bias else 0
        layer_nodes, bias_nodes = self.circuit_nodes()
        nxt = int(layer_nodes[-1][-1]) + 1
        edges = []
        for l in range(len(sizes) - 1):
            A, Bm = np.meshgrid(layer_nodes[l], layer_nodes[l + 1], indexing="ij")
            edges.append(np.stack([A.ravel(), Bm.ravel()], axis=1))
        if n_bias:
            for l in range(1, len(sizes)):
                for k in range(2):
                    edges.append(np.stack([np.full(sizes[l], bias_nodes[k]), layer_nodes[l]], axis=1))
        diode_edges = []
        m = sum(len(e) for e in edges)
        for l in range(1, len(sizes) - 1):
            for j, node in enumerate(layer_nodes[l]):
                if j < spec.n_lower(l):   # ground -> node: w = -v + s <= 0, v >= s
                    edges.append(np.array([[0, node]]))
                else:                     # node -> ground: w = v + s <= 0, v <= -s
                    edges.append(np.array([[node, 0]]))
                diode_edges.append(m)
                m += 1
        E = np.concatenate(edges).astype(np.int64)
        pos = np.zeros((nxt, 2))
        pos[0] = ((len(sizes) - 1) / 2 + 0.37, -0.35)   # below, off the layer columns: diodes fan out
        for l, nodes in enumerate(layer_nodes):
            pos[nodes, 0] = l
            pos[nodes, 1] = np.linspace(0, 1, nodes.size) if nodes.size > 1 else 0.5
        if n_bias:
            pos[bias_nodes] = [[0.0, 1.1], [0.0, 1.2]]
        net = Network(nxt, E, positions=pos)
        inputs = [int(v) for v in layer_nodes[0]] + [int(v) for v in bias_nodes]
        if spec.diode_bias != 0.0:
            inputs += [_circuit.Edge(int(e)) for e in diode_edges]
        circ = _circuit.Circuit(net, ground=0, inputs=inputs,
                                outputs=[int(v) for v in layer_nodes[-1]], backend=backend,
                                elements={IdealDiode(): diode_edges})
        g = np.concatenate([self.params, np.ones(len(diode_edges))])
        mark_layered(circ, self.spec)
        return circ, g

    def circuit_potentials(self, xc, tol: float | None = None) -> np.ndarray:
        """All node potentials (batch, n_nodes) of :meth:`to_circuit`'s circuit for its
        input vector ``xc`` (batch, n_inputs), by the exact layered solver. The input-layer
        potentials may be any values (not only ``gain (x, -x)``); the bias and diode-source
        columns must equal the spec's (the layered solver has them built in). A hook for a
        general solver to dispatch layered diode circuits here (:func:`layered_spec`);
        ``tol`` that of :meth:`relax`."""
        xc = np.atleast_2d(np.asarray(xc, dtype=float))
        spec, sizes = self.spec, self.spec.sizes
        n_in = sizes[0] + (2 if spec.has_bias else 0)
        n_src = sum(sizes[1:-1]) if spec.diode_bias != 0.0 else 0
        if xc.ndim != 2 or xc.shape[1] != n_in + n_src:
            raise ShapeError(f"circuit inputs must have shape (batch, {n_in + n_src}) for this DRN, "
                             f"got {np.shape(xc)}")
        if not np.all(np.isfinite(xc)):
            raise ParameterError("circuit inputs contain NaN or infinite values")
        if spec.has_bias and not np.all(xc[:, sizes[0]:n_in] == [spec.bias, -spec.bias]):
            raise ParameterError(f"bias source columns {sizes[0]}..{n_in - 1} must be "
                                 f"({spec.bias}, {-spec.bias}) (DRNSpec.bias); build a DRN with "
                                 f"the bias voltage you apply")
        if n_src and not np.all(xc[:, n_in:] == spec.diode_bias):
            raise ParameterError(f"diode source columns must all equal DRNSpec.diode_bias = "
                                 f"{spec.diode_bias}")
        st = self.relax(context=self._context(v0=xc[:, :sizes[0]]), active=False, tol=tol)
        layers, bias_nodes = self.circuit_nodes()
        u = np.zeros((xc.shape[0], int(layers[-1][-1]) + 1))
        for nodes, v in zip(layers, st.potentials):
            u[:, nodes] = v
        if spec.has_bias:
            u[:, bias_nodes] = [spec.bias, -spec.bias]
        return u

    def circuit_nodes(self):
        """Node ids of :meth:`to_circuit`'s network: ``(layers, bias)``, ``layers[l]`` the
        nodes of layer ``l`` (``[0]`` the ``2 n_0`` inputs) and ``bias`` the two bias
        sources (empty without bias); node 0 is the ground."""
        sizes = self.spec.sizes
        n_bias = 2 if self.spec.has_bias else 0
        bias_nodes = np.arange(1 + sizes[0], 1 + sizes[0] + n_bias)
        start, nxt = [1], 1 + sizes[0] + n_bias
        for n in sizes[1:]:
            start.append(nxt)
            nxt += n
        return [np.arange(a, a + n) for a, n in zip(start, sizes)], bias_nodes

    def circuit_inputs(self, x) -> np.ndarray:
        """The input vector of :meth:`to_circuit`'s circuit for the batch ``x``:
        ``[gain x, -gain x, +bias, -bias, diode sources...]``."""
        v0 = self.input_potentials(x)
        parts = [v0]
        B = v0.shape[0]
        if self.spec.has_bias:
            parts.append(np.tile([self.spec.bias, -self.spec.bias], (B, 1)))
        if self.spec.diode_bias != 0.0:
            n_d = sum(self.spec.sizes[1:-1])
            parts.append(np.full((B, n_d), self.spec.diode_bias))
        return np.concatenate(parts, axis=1)


#: circuits built by :meth:`DRN.to_circuit` -> their spec (weak keys: no circuit kept alive)
def mark_layered(circuit, spec: "DRNSpec") -> None:
    """Mark ``circuit`` (built by :meth:`DRN.to_circuit` for ``spec``) as a layered diode
    circuit. The mark is an attribute of the circuit, so it survives pickling and copies;
    :func:`kirchnet.load` sets it again after checking the saved structure."""
    object.__setattr__(circuit, "_layered_spec", spec)


def layered_spec(circuit) -> DRNSpec | None:
    """The :class:`DRNSpec` of a circuit built by :meth:`DRN.to_circuit` (``None`` for any
    other circuit): lets a general solver recognize a layered diode circuit and use
    ``DRN(spec, g[:spec.n_params]).circuit_potentials(x)`` instead of its generic method."""
    spec = getattr(circuit, "_layered_spec", None)
    return spec if isinstance(spec, DRNSpec) else None


def deep_resistive_circuit(layers, seed: int = 0, init_scale: float = 1.0, backend: str = "auto",
                           **spec_kw):
    """The Circuit factory of a DRN: ``(drn, circuit, g)`` with ``drn = DRN(DRNSpec(layers,
    **spec_kw), seed=seed, init_scale=init_scale)`` and ``circuit, g = drn.to_circuit(backend)``.
    The circuit works with every rule, the Trainer, SPICE export and the plots; its inputs
    for features ``x`` are ``drn.circuit_inputs(x)``, and ``g[:drn.params.size]`` are the
    trainable conductances (the rest are the diodes' unit scales)."""
    drn = DRN(DRNSpec(layers=tuple(layers), **spec_kw), seed=seed, init_scale=init_scale)
    circuit, g = drn.to_circuit(backend=backend)
    return drn, circuit, g


# ---------------------------------------------------------------------- training
@dataclass
class FitHistory:
    """Per-epoch records of :func:`fit_drn`: ``loss`` (training, mean over the epoch's
    batches at the free state before each update), ``train_accuracy`` / ``val_accuracy``
    (classification, when labels are given), ``seconds`` (wall time of the epoch)."""

    loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)


@reraises_ctrl_c
def fit_drn(drn: DRN, x, y, epochs: int = 10, batch_size: int = 32, lr: float = 0.01,
            method: str = "ep", beta: float = 1.0, variant: str = "centered",
            optimizer=None, seed: int = 0, x_val=None, labels_val=None,
            callback: Callable | None = None, max_batches: int | None = None) -> FitHistory:
    """Train ``drn`` in place on ``(x, y)`` (targets (n, n_out)).

    ``method="ep"`` (EP, ``beta``, ``variant``) or ``"analytical"`` (exact gradient). Plain
    SGD in place (``params -= lr * grad``, then clipped to ``spec.g_min``) unless
    ``optimizer`` is a :class:`kirchnet.optim.Optimizer`. Batches are a seeded
    permutation per epoch. ``max_batches`` stops each epoch early (benchmarks).
    """
    import time
    if method not in ("ep", "analytical"):
        raise ParameterError(f"method must be 'ep' or 'analytical', got {method!r}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ShapeError(f"x and y must be (n, features) and (n, outputs) with the same n, got "
                         f"{x.shape} and {y.shape}")
    bs = int(batch_size)
    if bs < 1:
        raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    lr = _finite("lr", lr)
    if lr <= 0:
        raise ParameterError(f"lr must be positive, got {lr!r}")
    rng = np.random.default_rng(seed)
    hist = FitHistory()
    grad = np.empty_like(drn.params)
    gmin = drn.spec.g_min
    for epoch in range(int(epochs)):
        t0 = time.perf_counter()
        perm = rng.permutation(x.shape[0])
        losses = []
        for k, s in enumerate(range(0, x.shape[0], bs)):
            if max_batches is not None and k >= max_batches:
                break
            idx = perm[s:s + bs]
            if optimizer is None:  # fused in-place SGD
                loss = (drn.ep_step(x[idx], y[idx], lr, beta=beta, variant=variant) if method == "ep"
                        else drn.gradient_step(x[idx], y[idx], lr))
            else:
                if method == "ep":
                    loss, g, _ = drn.ep_gradient(x[idx], y[idx], beta=beta, variant=variant, out=grad)
                else:
                    loss, g, _ = drn.loss_and_grad(x[idx], y[idx], out=grad)
                drn.params[...] = optimizer.step(drn.params, g)
                np.maximum(drn.params, gmin, out=drn.params)
            losses.append(loss)
        hist.seconds.append(time.perf_counter() - t0)
        hist.loss.append(float(np.mean(losses)) if losses else float("nan"))
        if x_val is not None and labels_val is not None:
            hist.val_accuracy.append(float(np.mean(np.argmax(drn.predict(x_val), axis=1)
                                                   == np.asarray(labels_val))))
        if callback is not None:
            callback(epoch, drn, hist)
    return hist


class DRNClassifier:
    """scikit-learn style DRN classifier: features are used as given (scale them to about
    ``[-1, 1]`` or ``[0, 1]``), classes are one-hot target potentials ``target * e_c``,
    the prediction is ``argmax`` of the output potentials.

    ``hidden``: hidden layer sizes (int or tuple); other arguments as :class:`DRNSpec`
    and :func:`fit_drn` (``optimizer``: ``None`` for plain SGD, a name such as ``"adam"``
    with learning rate ``lr``, or a :class:`kirchnet.optim.Optimizer`). The defaults
    (gain 10, Adam 0.003, EP centered with beta 0.2, 30 epochs) train XOR, moons and
    digits to the accuracies in the README.
    """

    def __init__(self, hidden=32, gain: float = 10.0, diode_split: float = 0.5, bias: float = 0.0,
                 target: float = 1.0, epochs: int = 30, batch_size: int = 16, lr: float = 0.003,
                 method: str = "ep", beta: float = 0.2, variant: str = "centered",
                 optimizer="adam", init_scale: float = 1.0, seed: int = 0):
        self.hidden, self.gain, self.diode_split, self.bias = hidden, gain, diode_split, bias
        self.target, self.epochs, self.batch_size, self.lr = target, epochs, batch_size, lr
        self.method, self.beta, self.variant, self.optimizer = method, beta, variant, optimizer
        self.init_scale, self.seed = init_scale, seed

    def _targets(self, labels):
        return self.target * (labels[:, None] == np.arange(self.classes_.size)[None, :])

    @reraises_ctrl_c
    def fit(self, X, labels, X_val=None, labels_val=None):
        X = np.asarray(X, dtype=float)
        self.classes_, enc = np.unique(np.asarray(labels), return_inverse=True)
        hidden = (self.hidden,) if np.isscalar(self.hidden) else tuple(self.hidden)
        spec = DRNSpec(layers=(X.shape[1],) + hidden + (self.classes_.size,), gain=self.gain,
                       diode_split=self.diode_split, bias=self.bias)
        self.drn_ = DRN(spec, seed=self.seed, init_scale=self.init_scale)
        enc_val = None
        if labels_val is not None:
            enc_val = np.searchsorted(self.classes_, np.asarray(labels_val))
        opt = self.optimizer
        if isinstance(opt, str):
            from .optim import get_optimizer
            opt = get_optimizer(opt, self.lr)
        self.history_ = fit_drn(self.drn_, X, self._targets(enc), epochs=self.epochs,
                                batch_size=self.batch_size, lr=self.lr, method=self.method,
                                beta=self.beta, variant=self.variant, optimizer=opt,
                                seed=self.seed, x_val=X_val, labels_val=enc_val)
        return self

    def decision_function(self, X):
        return self.drn_.predict(np.asarray(X, dtype=float))

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, labels) -> float:
        return float(np.mean(self.predict(X) == np.asarray(labels)))
