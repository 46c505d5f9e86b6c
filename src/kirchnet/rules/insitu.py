"""The in-situ analytical protocol: the exact gradient from two hardware runs (theory.md, 2).

No replica network and no readout beyond the output layer:

1. *voltage mode*: inputs on; each edge measures its current ``i_e``; the outputs ``o``
   are read and the output error ``delta = dC/do`` is computed off-chip;
2. *current mode*: inputs off (input/clamped nodes held at 0 V, series sources
   shorted), ``delta`` injected as currents ``J = P^T delta`` at the outputs; each edge
   measures its adjoint current ``i_adj_e`` (the adjoint potentials are ``lam``).

Each resistance then gets ``dC/dr_e = mean_s i_e i_adj_e`` (conductance space:
``dC/dg_e = -r_e^2 dC/dr_e``). The two runs may be *superposed*: the inputs driven at
frequency ``f1`` and the error injected at ``f2`` (the network is linear, so each edge
carries ``i cos(2 pi f1 t) + i_adj cos(2 pi f2 t)``); each edge samples its total current
``n_samples`` times over one period and demodulates by projecting on the two
cosines. Noise-free this equals the sequential protocol, which equals ``Analytical``.
"""

from __future__ import annotations

import numpy as np

from .. import parametrization as _param
from .._validation import check_int, check_real, check_seed
from ..errors import ParameterError
from ._ports import Ports
from . import _nonlinear
from .base import Rule, RuleResult


def _nonneg(name, v) -> float:
    return check_real(v, name, low=0.0)


class InSitu(Rule):
    """Simulated hardware run of the two-run analytical protocol (module docstring).

    Measurement model, for every measured value ``v`` (edge currents of both runs, and
    outputs): ``v + rel * |v| * xi + abs * xi'`` (``xi, xi'`` standard normal, fresh for
    every measurement), then optionally an ADC with ``adc_bits`` bits: midtread rounding
    to steps ``q = FS / 2^(bits - 1)`` and clipping to ``[-FS, FS]``. ``current_range`` /
    ``output_range`` are the full scales ``FS`` (a number) or ``None`` for auto-ranging
    per channel (per edge / per output: the largest noise-free magnitude over the batch;
    in superposed mode the bound |i| + |i_adj|).

    Noise is zero-mean and independent between runs, so for squared error (``delta``
    linear in ``o``) the estimate is unbiased. Quantization is deterministic and biased
    (by at most about one step). In superposed mode relative noise scales with the
    instantaneous total current, which correlates the two demodulated currents: a
    relative bias of about ``2 rel^2 / n_samples``; absolute noise stays unbiased.

    ``wrt``: ``"conductance"`` (the :class:`Rule` convention) or ``"resistance"``
    (``dC/dr``). ``seed``: the random generator is created once, so consecutive calls
    draw fresh noise (reproducible as a sequence).

    Nonlinear circuits (``not circuit.is_linear``): the current-mode run keeps the inputs
    on and injects ``amplitude * P^T delta``; each element measures its voltage change
    (the small-signal adjoint drop), see :func:`kirchnet.rules._nonlinear._insitu`.
    """

    name = "insitu"

    def __init__(self, loss="mse", current_noise: float = 0.0, current_noise_abs: float = 0.0,
                 output_noise: float = 0.0, output_noise_abs: float = 0.0,
                 adc_bits: int | None = None, current_range: float | None = None,
                 output_range: float | None = None, mode: str = "sequential",
                 frequencies: tuple[int, int] = (1, 2), n_samples: int = 16,
                 wrt: str = "conductance", seed=None, amplitude: float = 1e-4):
        super().__init__(loss)
        self.current_noise = _nonneg("current_noise", current_noise)
        self.current_noise_abs = _nonneg("current_noise_abs", current_noise_abs)
        self.output_noise = _nonneg("output_noise", output_noise)
        self.output_noise_abs = _nonneg("output_noise_abs", output_noise_abs)
        self.adc_bits = None if adc_bits is None else check_int(adc_bits, "adc_bits", 2, 32)
        self.current_range = None if current_range is None else _nonneg("current_range", current_range)
        self.output_range = None if output_range is None else _nonneg("output_range", output_range)
        if mode not in ("sequential", "superposed"):
            raise ParameterError(f"mode must be 'sequential' or 'superposed', got {mode!r}")
        self.mode = mode
        try:
            f1, f2 = (check_int(f, "frequencies", 1) for f in frequencies)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"frequencies must be two integers, got {frequencies!r}") from exc
        n_samples = check_int(n_samples, "n_samples", 2)
        if mode == "superposed" and not (f1 != f2 and 0 < f1 < n_samples / 2 and 0 < f2 < n_samples / 2):
            raise ParameterError(
                f"frequencies must be two different integers in 1..{(n_samples - 1) // 2} "
                f"(below the Nyquist limit of n_samples={n_samples}), got {frequencies!r}")
        self.frequencies = (f1, f2)
        self.n_samples = n_samples
        _param.get(wrt)  # 'conductance' / 'resistance' (or 'g' / 'r'), else ParameterError
        self.wrt = wrt
        self.seed = None if seed is None else check_seed(seed)  # None: fresh entropy
        self._rng = np.random.default_rng(self.seed)
        #: nonlinear circuits only: relative size ``a`` of the current-mode injection ``a P^T delta``
        self.amplitude = float(amplitude)
        if not np.isfinite(self.amplitude) or self.amplitude <= 0:
            raise ParameterError(f"amplitude must be a finite positive number, got {amplitude!r}")

    # ----------------------------------------------------------- measurement
    def _measure(self, v, rel, absolute, full_scale, auto_scale=None):
        """Noisy, optionally quantized measurement of ``v`` (any shape, channels last)."""
        if not rel and not absolute and self.adc_bits is None:
            return v  # an ideal instrument
        out = np.zeros(v.shape)
        if rel:
            out = self._rng.standard_normal(v.shape)
            out *= np.abs(v)
            out *= rel
        if absolute:
            noise = self._rng.standard_normal(v.shape)
            noise *= absolute
            out += noise
        out += v
        if self.adc_bits is not None:
            if full_scale is None:
                fs = np.abs(v).max(axis=0) if auto_scale is None else auto_scale
            else:
                fs = np.full(v.shape[-1], full_scale)
            q = fs / 2.0 ** (self.adc_bits - 1)
            safe = np.where(q > 0, q, 1.0)
            out = np.where(q > 0, np.clip(np.round(out / safe) * safe, -fs, fs), 0.0)
        return out

    def _measure_currents(self, i, auto_scale=None):
        return self._measure(i, self.current_noise, self.current_noise_abs, self.current_range,
                             auto_scale)

    # ----------------------------------------------------------- protocol
    def adjoint_run(self, factorization, delta: np.ndarray) -> np.ndarray:
        """Current mode: potentials (b, n) with drivers off and ``J = P^T delta`` injected."""
        c = factorization.circuit
        return factorization.solve_currents(np.asarray((c.readout.T @ delta.T).T))

    def adjoint_currents(self, factorization, delta: np.ndarray) -> np.ndarray:
        """Edge currents (b, m) of the current-mode run: ``i_adj = g * B^T lam``.

        By linearity, a batch larger than the number of outputs is the superposition of
        one run per output with a unit current (k runs instead of b): their edge drops are
        ``W = B_F^T Z`` (:class:`._ports.Ports`, ``Z`` the factorization's adjoint basis).
        """
        c = factorization.circuit
        g = factorization.conductances
        if delta.shape[0] > c.n_outputs:
            return delta @ (g * Ports(factorization).W.T)
        lam = self.adjoint_run(factorization, delta)
        return g * np.asarray((c._BT @ lam.T).T)

    def estimate(self, circuit, conductances, x, y, factorization=None) -> RuleResult:
        if not circuit.is_linear:  # exact nonlinear phases (rules/_nonlinear.py)
            return _nonlinear.estimate(self, circuit, conductances, x, y, factorization)
        fac = circuit.factorization_for(conductances, factorization)
        g = fac.conductances
        # run 1: voltage mode
        free = fac.solve(x)
        o_meas = self._measure(free.outputs, self.output_noise, self.output_noise_abs,
                               self.output_range)
        values = self.loss(free.outputs, y)[0]
        m_values, m_delta = self.loss(o_meas, y)
        # run 2: current mode, the measured error injected at the outputs
        ideal = not (self.current_noise or self.current_noise_abs or self.adc_bits is not None)
        if self.mode == "sequential" and ideal and m_delta.shape[0] > circuit.n_outputs:
            dcdr = self._ideal_products(fac, free, m_delta)
        else:
            i_adj = self.adjoint_currents(fac, m_delta)
            i = free.currents
            if self.mode == "sequential":
                i_m = self._measure_currents(i)
                ia_m = self._measure_currents(i_adj)
            else:
                i_m, ia_m = self._superposed(i, i_adj)
            dcdr = np.einsum("bm,bm->m", i_m, ia_m) / i.shape[0]
        est = _param.get(self.wrt).convert(dcdr, g, _param.RESISTANCE)  # dC/dr -> the rule's wrt
        return RuleResult(est, float(values.mean()), free, {},
                          {"delta": m_delta, "measured_outputs": o_meas,
                           "measured_loss": float(m_values.mean()), "wrt": self.wrt,
                           "mode": self.mode})

    def _ideal_products(self, factorization, free, delta):
        """``mean_s i_e i_adj_e`` with ideal current sensors, without (b, m) arrays.

        ``i_adj = delta (g * W)^T`` (``W`` (m, k): edge drops of the k unit current-mode
        runs) and ``i = g * w``, so ``sum_s i_s,e i_adj_s,e = g_e^2 sum_k W_ek (w^T delta)_ek``
        (:meth:`._ports.Ports.drive_correlation`).
        """
        ports = Ports(factorization)
        g = factorization.conductances
        corr = np.einsum("ek,ek->e", ports.W, ports.drive_correlation(free, delta))
        return g * g * corr / delta.shape[0]

    def _superposed(self, i, i_adj):
        """Sample ``i cos(w1 t) + i_adj cos(w2 t)`` per edge, measure, demodulate both."""
        N = self.n_samples
        t = np.arange(N) / N
        c1 = np.cos(2 * np.pi * self.frequencies[0] * t)
        c2 = np.cos(2 * np.pi * self.frequencies[1] * t)
        auto = (np.abs(i) + np.abs(i_adj)).max(axis=0)  # bound on the total amplitude per edge
        acc1 = np.zeros_like(i)
        acc2 = np.zeros_like(i)
        for j in range(N):  # time samples (a handful), each vectorized over batch and edges
            s = self._measure_currents(i * c1[j] + i_adj * c2[j], auto_scale=auto)
            acc1 += c1[j] * s
            acc2 += c2[j] * s
        return (2.0 / N) * acc1, (2.0 / N) * acc2
