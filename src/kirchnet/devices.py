"""Device models: continuous memristors and pulse-programmed conductances.

Two levels of description, each a frozen dataclass of parameters whose state lives in
explicit arrays (and, for random models, a seeded :class:`numpy.random.Generator` whose
state is saved by ``state_dict()``):

**Continuous memristors** (state ``x in [0, 1]`` per element, used by
:mod:`kirchnet.memristive` to simulate a network in time). Resistance

    ``R(x) = R_on (1 - x) + R_off x = R_on (1 + xi x)``,  ``xi = (R_off - R_on) / R_on``,

so ``x = 0`` is the low-resistance ("on") state. Polarity convention: a positive current
``i`` (or voltage ``w``) in the edge direction ``a -> b`` drives ``x`` up (towards
``R_off``); swap the edge to swap the device's polarity.

* :class:`LinearIonDrift` (HP / Strukov et al., Nature 453, 80, 2008), current driven:
  ``dx/dt = k i f(x, i) + alpha x`` with ``k = mu_v R_on / D^2``; windows
  ``f = 1`` (none), Joglekar ``f(x) = 1 - (2x - 1)^(2p)`` (Joglekar and Wolf, Eur. J.
  Phys. 30, 661, 2009) or Biolek ``f(x, i) = 1 - (x - stp(-i))^(2p)`` (Biolek et al.,
  Radioengineering 18, 210, 2009; ``stp(s) = 1`` for ``s >= 0`` else ``0``). ``alpha`` is
  the linear term of Caravelli's projector equation (``alpha < 0``: volatile relaxation
  towards ``x = 0``); it is 0 for the HP device.
* :class:`ThresholdMemristor` (in the spirit of VTEAM, Kvatinsky et al., IEEE TCAS-II 62,
  786, 2015), voltage driven: no change for ``v_on <= w <= v_off``, and
  ``dx/dt = k_off (w / v_off - 1)^a_off f`` for ``w > v_off > 0``,
  ``dx/dt = -k_on (w / v_on - 1)^a_on f`` for ``w < v_on < 0``, with a Biolek-type window.

**Pulse programming** (what training on hardware does: a number of identical SET or
RESET pulses per device and step).

* :class:`PulseDevice`: soft bounds, the step of one pulse depends on the present
  conductance (``z = (g - g_min) / (g_max - g_min)``):
  ``dg+ = a+ (1 - z)^gamma+`` (SET), ``dg- = -a- z^gamma-`` (RESET); asymmetric up/down,
  cycle-to-cycle noise ``dg <- dg (1 + c2c xi)`` per pulse, device-to-device variation
  of every parameter (``p_e = p exp(d2d xi_e)``, drawn once per device from the seed) and
  retention drift ``g(t) = g_prog (t / t0)^(-nu)`` after programming (PCM).
* :class:`DigitalPotentiometer`: a tapped resistor ladder, one pulse moves the wiper by
  one tap (preset: 40 ohm - 32 kohm in 100 steps, the X9C303-type parts of the
  coupled-learning hardware of Dillavou et al., PR Applied 18, 014040, 2022).
* :func:`preset`: named, documented parameter sets.
* :class:`PulseProgrammer`: converts an update (a learning rule's estimate, or the
  trainer's proposed conductances) into per-device pulse counts with the device's
  state-dependent step, applies them and returns the new conductances; it is a
  :class:`~kirchnet.constraints.Constraint`, so ``Trainer(constraints=[programmer])``
  trains through the device with masks and exact checkpoint resume. Its
  :meth:`~PulseProgrammer.in_situ` mode gives every edge one pulse whose amplitude is set
  by its two measured currents (``dC/dr_e = i_e i_adj_e``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np

from ._validation import check_choice, check_int, check_positive, check_real, check_seed
from .constraints import Constraint
from .errors import ParameterError, ShapeError

__all__ = [
    "MemristorModel", "LinearIonDrift", "ThresholdMemristor", "joglekar_window", "biolek_window",
    "PulseDevice", "DigitalPotentiometer", "DeviceArray", "PotentiometerArray", "PulseProgrammer",
    "PulseResult", "preset", "PRESETS", "local_currents",
]


# ============================================================================ windows
def joglekar_window(x, p: int = 1) -> np.ndarray:
    """Joglekar window ``f(x) = 1 - (2x - 1)^(2p)``: 1 at ``x = 1/2``, 0 at both bounds."""
    x = np.asarray(x, dtype=float)
    return 1.0 - (2.0 * x - 1.0) ** (2 * p)


def biolek_window(x, drive, p: int = 1) -> np.ndarray:
    """Biolek window ``f(x, i) = 1 - (x - stp(-i))^(2p)`` (``stp(s) = 1`` for ``s >= 0``).

    With the convention that a positive drive raises ``x``: zero at the bound the drive
    pushes towards (``x = 1`` for ``i > 0``, ``x = 0`` for ``i < 0``), one at the other, so
    a device at a bound can always leave it (Joglekar's window cannot).
    """
    x = np.asarray(x, dtype=float)
    step = (np.asarray(drive) <= 0).astype(float)  # stp(-i): 1 for i <= 0
    return 1.0 - (x - step) ** (2 * p)


def _check_window(window, p):
    check_choice(window, "window", (None, "joglekar", "biolek"))
    check_int(p, "p", minimum=1)


# ============================================================================ continuous models
class MemristorModel:
    """Interface of continuous memristors: ``R(x)``, ``g(x)`` and the state rate.

    ``drive`` is ``"current"`` or ``"voltage"``: which element quantity the state
    equation reads (both are passed to :meth:`rate`).
    """

    r_on: float
    r_off: float
    drive: str = "current"

    @property
    def xi(self) -> float:
        """``xi = (R_off - R_on) / R_on``, so ``R(x) = R_on (1 + xi x)``."""
        return (self.r_off - self.r_on) / self.r_on

    def resistance(self, x) -> np.ndarray:
        """``R(x) = R_on (1 - x) + R_off x``."""
        x = np.asarray(x, dtype=float)
        return self.r_on * (1.0 - x) + self.r_off * x

    def conductance(self, x) -> np.ndarray:
        """``g(x) = 1 / R(x)``."""
        return 1.0 / self.resistance(x)

    def state_from_resistance(self, r) -> np.ndarray:
        """Inverse of :meth:`resistance`: ``x = (R - R_on) / (R_off - R_on)``."""
        return (np.asarray(r, dtype=float) - self.r_on) / (self.r_off - self.r_on)

    def rate(self, x, current, voltage) -> np.ndarray:
        """``dx/dt`` per element for states ``x``, currents ``i`` and voltages ``w = R i``."""
        raise NotImplementedError

    def _check_resistances(self):
        check_positive(self.r_on, "r_on")
        check_positive(self.r_off, "r_off")
        if not self.r_off > self.r_on:
            raise ParameterError(f"r_off must exceed r_on, got r_on={self.r_on}, r_off={self.r_off}; "
                                 f"swap them (x = 0 is the low-resistance state)")


@dataclass(frozen=True)
class LinearIonDrift(MemristorModel):
    """HP linear ion drift, ``dx/dt = k i f(x, i) + alpha x`` with ``k = mu_v R_on / D^2``.

    Defaults are the TiO2 device values common in the HP-model literature: the ratio
    ``R_off / R_on = 160``, ``D = 10 nm`` and ``mu_v = 1e-14 m^2 / (V s)`` of Strukov et al.
    (Nature 453, 80, 2008) with ``R_on = 100 ohm`` (``R_off = 16 kohm``) as in the window
    papers of Joglekar and Wolf (2009) and Biolek et al. (2009); so ``k = 1e4 / (A s)``:
    0.1 mA moves the state by 1 per second. ``window``: None, ``"joglekar"`` or ``"biolek"`` with
    exponent ``p``. Without a window and with ``alpha = 0`` the state is a function of the
    charge, ``x(t) = x0 + k q(t)``, and under a voltage source ``v`` alone
    ``x(t) = (sqrt((1 + xi x0)^2 + 2 xi k phi(t) / R_on) - 1) / xi`` with the flux
    ``phi = int v dt`` (:meth:`closed_form_state`).
    """

    r_on: float = 100.0
    r_off: float = 16e3
    mobility: float = 1e-14
    thickness: float = 10e-9
    window: str | None = None
    p: int = 1
    alpha: float = 0.0
    drive: str = "current"

    def __post_init__(self):
        self._check_resistances()
        check_positive(self.mobility, "mobility")
        check_positive(self.thickness, "thickness")
        _check_window(self.window, self.p)
        check_real(self.alpha, "alpha")
        if self.drive != "current":
            raise ParameterError(f"LinearIonDrift is current driven; got drive={self.drive!r}")

    @classmethod
    def from_projector(cls, r_on: float, r_off: float, alpha: float, beta: float) -> "LinearIonDrift":
        """The device of Caravelli's equation ``dx/dt = alpha x - (1/beta)(I + xi Omega X)^{-1} Omega S``.

        That equation is ``dx/dt = alpha x + (R_on / beta) i`` per element, so
        ``k = R_on / beta`` (``mu_v = 1 / beta``, ``D = 1``), no window
        (see :mod:`kirchnet.memristive_projector`).
        """
        check_positive(beta, "beta")
        return cls(r_on=r_on, r_off=r_off, mobility=1.0 / beta, thickness=1.0, alpha=alpha)

    @property
    def k(self) -> float:
        """``k = mu_v R_on / D^2`` (1 / (A s))."""
        return self.mobility * self.r_on / self.thickness ** 2

    def window_value(self, x, current) -> np.ndarray:
        if self.window is None:
            return np.ones(np.shape(x))
        if self.window == "joglekar":
            return joglekar_window(x, self.p)
        return biolek_window(x, current, self.p)

    def rate(self, x, current, voltage=None) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        i = np.asarray(current, dtype=float)
        out = self.k * i * self.window_value(x, i)
        return out + self.alpha * x if self.alpha else out

    def closed_form_state(self, x0, flux) -> np.ndarray:
        """State under a voltage source alone (no window, ``alpha = 0``), from the flux ``phi``.

        ``R dx/dt = k v`` integrates to ``R_on (x + xi x^2 / 2) = R_on (x0 + xi x0^2 / 2) + k phi``.
        """
        if self.window is not None or self.alpha:
            raise ParameterError("closed_form_state holds without a window and with alpha = 0; "
                                 f"got window={self.window!r}, alpha={self.alpha}")
        y0 = 1.0 + self.xi * np.asarray(x0, dtype=float)
        return (np.sqrt(y0 ** 2 + 2.0 * self.xi * self.k * np.asarray(flux, dtype=float) / self.r_on) - 1.0) / self.xi


@dataclass(frozen=True)
class ThresholdMemristor(MemristorModel):
    """Voltage-driven threshold memristor in the spirit of VTEAM (Kvatinsky et al. 2015).

    ``dx/dt = k_off (w / v_off - 1)^a_off f(x, w)`` for ``w > v_off > 0``,
    ``dx/dt = -k_on (w / v_on - 1)^a_on f(x, w)`` for ``w < v_on < 0``, and 0 in between
    (sub-threshold reads do not disturb the state); ``f`` is the Biolek-type window with
    exponent ``p`` (``p=None``: no window). Rates ``k_on, k_off > 0`` in 1/s. Defaults
    are illustrative values of the order used in VTEAM's examples (thresholds of a few
    hundred millivolts, rates that switch a device in microseconds at about 1 V), not a
    fit to one device.
    """

    r_on: float = 1e3
    r_off: float = 100e3
    v_on: float = -0.3
    v_off: float = 0.3
    k_on: float = 1e5
    k_off: float = 1e5
    a_on: float = 3.0
    a_off: float = 3.0
    p: int | None = 1
    drive: str = "voltage"

    def __post_init__(self):
        self._check_resistances()
        if not (self.v_on < 0 < self.v_off):
            raise ParameterError(f"thresholds need v_on < 0 < v_off, got v_on={self.v_on}, v_off={self.v_off}")
        for name in ("k_on", "k_off", "a_on", "a_off"):
            check_positive(getattr(self, name), name)
        if self.p is not None:
            check_int(self.p, "p", minimum=1)
        if self.drive != "voltage":
            raise ParameterError(f"ThresholdMemristor is voltage driven; got drive={self.drive!r}")

    def rate(self, x, current, voltage) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        w = np.asarray(voltage, dtype=float)
        up = w > self.v_off
        down = w < self.v_on
        out = np.zeros(np.broadcast(x, w).shape)
        with np.errstate(invalid="ignore"):
            out = np.where(up, self.k_off * np.abs(w / self.v_off - 1.0) ** self.a_off, out)
            out = np.where(down, -self.k_on * np.abs(w / self.v_on - 1.0) ** self.a_on, out)
        if self.p is not None:
            out = out * biolek_window(x, w, self.p)
        return out


# ============================================================================ pulse devices
_D2D_FIELDS = ("g_min", "g_max", "step_up", "step_down", "gamma_up", "gamma_down", "drift_nu")


@dataclass(frozen=True)
class PulseDevice:
    """A pulse-programmed conductance with soft bounds (nominal parameters).

    One SET pulse (``+1``) changes ``g`` by ``a+ (1 - z)^gamma+``, one RESET pulse (``-1``)
    by ``-a- z^gamma-`` with ``z = (g - g_min) / (g_max - g_min)``; ``gamma = 0`` gives a
    constant step (then hard bounds at ``g_min`` / ``g_max``). Each pulse's step is
    multiplied by ``1 + c2c xi`` (``xi ~ N(0, 1)``, cycle to cycle). ``d2d`` is the
    log-normal spread of every parameter across devices (``p_e = p exp(d2d xi_e)``,
    drawn once per device). Retention: ``g(t) = g_prog (t / t0)^(-nu)`` for a device
    programmed ``t - t0`` seconds ago. Pulse amplitude response (in-situ mode): the
    step scales as ``((v - v_th) / (v_pulse - v_th))^amplitude_exponent`` above the
    threshold ``v_th``. Units: siemens and seconds (any consistent units work).

    Build the per-device arrays with :meth:`build` (a :class:`DeviceArray`).
    """

    g_min: float
    g_max: float
    step_up: float
    step_down: float
    gamma_up: float = 1.0
    gamma_down: float = 1.0
    c2c: float = 0.0
    d2d: float = 0.0
    drift_nu: float = 0.0
    drift_t0: float = 1.0
    v_pulse: float = 1.0
    v_threshold: float = 0.0
    amplitude_exponent: float = 1.0
    name: str = "custom"
    source: str = field(default="", repr=False)

    def __post_init__(self):
        check_positive(self.g_min, "g_min")
        check_positive(self.g_max, "g_max")
        if not self.g_max > self.g_min:
            raise ParameterError(f"g_max must exceed g_min, got g_min={self.g_min}, g_max={self.g_max}")
        for name in ("step_up", "step_down"):
            check_positive(getattr(self, name), name)
        for name in ("gamma_up", "gamma_down", "c2c", "d2d", "drift_nu", "v_threshold"):
            check_real(getattr(self, name), name, low=0.0)
        check_positive(self.drift_t0, "drift_t0")
        check_positive(self.amplitude_exponent, "amplitude_exponent")
        check_positive(self.v_pulse, "v_pulse")
        if not self.v_pulse > self.v_threshold:
            raise ParameterError(f"v_pulse must exceed v_threshold, got v_pulse={self.v_pulse}, "
                                 f"v_threshold={self.v_threshold}")

    def n_states(self) -> float:
        """Nominal number of SET pulses from ``g_min`` to ``g_max`` for constant steps
        (``(g_max - g_min) / step_up``; with soft bounds the top is approached, not reached)."""
        return (self.g_max - self.g_min) / self.step_up

    def build(self, n: int, seed: int = 0, rng: np.random.Generator | None = None) -> "DeviceArray":
        """``n`` devices with parameters drawn once (``d2d``), seeded by ``seed`` (or ``rng``)."""
        return DeviceArray(self, n, seed=seed, rng=rng)


@dataclass(frozen=True)
class DigitalPotentiometer:
    """A digital potentiometer: ``n_steps`` wiper taps between ``r_min`` and ``r_max``.

    A tapped resistor ladder, so the taps are equally spaced in resistance (``taper=
    "linear"``; ``"log"`` for log-taper parts): ``R_k = r_min + k (r_max - r_min) /
    (n_steps - 1)``. One pulse moves the wiper by one tap: ``+1`` one tap towards
    ``r_min`` (conductance up), ``-1`` towards ``r_max``; no noise, hard ends. ``d2d`` is
    the log-normal spread of each part's end-to-end resistance (datasheet tolerance,
    about 0.2 for the X9C series). Defaults: the X9C303-type parts (32 kohm, 100 taps,
    about 40 ohm wiper resistance) of Dillavou et al., PR Applied 18, 014040 (2022).
    """

    r_min: float = 40.0
    r_max: float = 32e3
    n_steps: int = 100
    taper: str = "linear"
    d2d: float = 0.0
    name: str = "digital_potentiometer"
    source: str = field(default="Dillavou, Stern, Liu, Durian, PR Applied 18, 014040 (2022): X9C303-type, "
                               "40 ohm - 32 kohm, 100 taps", repr=False)

    def __post_init__(self):
        check_positive(self.r_min, "r_min")
        check_positive(self.r_max, "r_max")
        if not self.r_max > self.r_min:
            raise ParameterError(f"r_max must exceed r_min, got r_min={self.r_min}, r_max={self.r_max}")
        check_int(self.n_steps, "n_steps", minimum=2)
        check_choice(self.taper, "taper", ("linear", "log"))
        check_real(self.d2d, "d2d", low=0.0)

    def resistance_levels(self) -> np.ndarray:
        """The nominal tap resistances (n_steps,), increasing."""
        if self.taper == "linear":
            return np.linspace(self.r_min, self.r_max, self.n_steps)
        return np.geomspace(self.r_min, self.r_max, self.n_steps)

    def conductance_levels(self) -> np.ndarray:
        """The nominal tap conductances (n_steps,), increasing."""
        return np.sort(1.0 / self.resistance_levels())

    @property
    def g_min(self) -> float:
        return 1.0 / self.r_max

    @property
    def g_max(self) -> float:
        return 1.0 / self.r_min

    def build(self, n: int, seed: int = 0, rng: np.random.Generator | None = None) -> "PotentiometerArray":
        return PotentiometerArray(self, n, seed=seed, rng=rng)


def _array(a):
    return np.array(a, dtype=float)


class DeviceArray:
    """``n`` :class:`PulseDevice` s: per-device parameters, drift state and the noise generator.

    ``params[name]`` (n,) holds every device's own parameters (``d2d`` variation drawn once
    at construction, the first draws of the generator). Drift state: ``g_prog`` (the
    conductance right after the last programming) and ``age`` (``t0`` plus the time since).
    ``state_dict()`` / ``load_state_dict()`` save and restore all of it exactly (numpy arrays
    and the generator's state; a trainer checkpoint puts the arrays into its npz).
    """

    def __init__(self, model: PulseDevice, n: int, seed: int = 0, rng: np.random.Generator | None = None):
        self.model = model
        self.n = check_int(n, "n", minimum=1)
        self.rng = rng if rng is not None else np.random.default_rng(check_seed(seed))
        self.params = {}
        for name in _D2D_FIELDS:
            base = np.full(self.n, float(getattr(model, name)))
            if model.d2d > 0:
                base = base * np.exp(model.d2d * self.rng.standard_normal(self.n))
            self.params[name] = base
        # a device's window must stay non-empty under variation
        self.params["g_max"] = np.maximum(self.params["g_max"], self.params["g_min"] * (1 + 1e-3))
        self.g_prog: np.ndarray | None = None
        self.age: np.ndarray | None = None

    # ------------------------------------------------------------------ steps
    @property
    def g_min(self) -> np.ndarray:
        return self.params["g_min"]

    @property
    def g_max(self) -> np.ndarray:
        return self.params["g_max"]

    def _z(self, g, idx):
        p = self.params
        return np.clip((g - p["g_min"][idx]) / (p["g_max"][idx] - p["g_min"][idx]), 0.0, 1.0)

    def step(self, g, direction, idx=None) -> np.ndarray:
        """Mean signed step of one pulse (``direction`` +1 SET, -1 RESET) at conductances ``g``."""
        idx = slice(None) if idx is None else idx
        p = self.params
        z = self._z(np.asarray(g, dtype=float), idx)
        up = p["step_up"][idx] * (1.0 - z) ** p["gamma_up"][idx]
        down = -p["step_down"][idx] * z ** p["gamma_down"][idx]
        return np.where(np.asarray(direction) > 0, up, down)

    def clip(self, g, idx=None) -> np.ndarray:
        idx = slice(None) if idx is None else idx
        return np.clip(g, self.params["g_min"][idx], self.params["g_max"][idx])

    def _noisy(self, dg, rng):
        c2c = self.model.c2c
        if c2c > 0 and dg.size:
            dg = dg * (1.0 + c2c * rng.standard_normal(dg.shape))
        return dg

    def pulse(self, g, pulses, rng: np.random.Generator | None = None, scale=None) -> np.ndarray:
        """Conductances after ``pulses`` (n,) signed integer pulses per device, applied one
        at a time (each with the step at the conductance it meets, and its own noise).
        ``scale`` (n,) multiplies each step (the amplitude response of in-situ pulses)."""
        rng = self.rng if rng is None else rng
        g = np.array(g, dtype=float)
        n = np.asarray(pulses)
        if g.shape != (self.n,) or n.shape != (self.n,):
            raise ShapeError(f"g and pulses must have shape ({self.n},), got {g.shape} and {n.shape}")
        mag = np.abs(n).astype(np.int64)
        sign = np.sign(n)
        for k in range(int(mag.max(initial=0))):
            idx = np.flatnonzero(mag > k)
            dg = self.step(g[idx], sign[idx], idx)
            if scale is not None:
                dg = dg * scale[idx]
            g[idx] = self.clip(g[idx] + self._noisy(dg, rng), idx)
        self._programmed(g, mag > 0)
        return g

    def _programmed(self, g, which):
        if self.g_prog is None:
            self.g_prog = np.array(g, dtype=float)
            self.age = np.full(self.n, self.model.drift_t0)
        self.g_prog[which] = g[which]
        self.age[which] = self.model.drift_t0

    def drift(self, g, dt: float) -> np.ndarray:
        """Let ``dt`` seconds pass: ``g = g_prog (age / t0)^(-nu)`` for every device.

        A device's first observed conductance counts as freshly programmed.
        """
        dt = check_real(dt, "dt", low=0.0)
        g = np.asarray(g, dtype=float)
        if self.g_prog is None:
            self._programmed(g, np.zeros(self.n, dtype=bool))
        if dt == 0 or not np.any(self.params["drift_nu"] > 0):
            return g
        self.age = self.age + dt
        return self.clip(self.g_prog * (self.age / self.model.drift_t0) ** (-self.params["drift_nu"]))

    def pulses_for(self, g, dg) -> np.ndarray:
        """Fractional number of pulses (n,) that the present step size predicts for ``dg``."""
        g = np.asarray(g, dtype=float)
        dg = np.asarray(dg, dtype=float)
        st = self.step(g, np.where(dg > 0, 1, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(dg != 0, dg / np.abs(st), 0.0)
        return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)  # at a bound: no step that way

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"n": self.n, "rng": self.rng.bit_generator.state,
                "params": {k: _array(v) for k, v in self.params.items()},
                "g_prog": None if self.g_prog is None else _array(self.g_prog),
                "age": None if self.age is None else _array(self.age)}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n"]) != self.n:
            raise ShapeError(f"device state is for {state['n']} devices, this array has {self.n}")
        self.rng.bit_generator.state = state["rng"]
        self.params = {k: np.asarray(v, dtype=float) for k, v in state["params"].items()}
        self.g_prog = None if state.get("g_prog") is None else np.asarray(state["g_prog"], dtype=float)
        self.age = None if state.get("age") is None else np.asarray(state["age"], dtype=float)


class PotentiometerArray:
    """``n`` :class:`DigitalPotentiometer` s; the state is the wiper tap of each part."""

    def __init__(self, model: DigitalPotentiometer, n: int, seed: int = 0,
                 rng: np.random.Generator | None = None):
        self.model = model
        self.n = check_int(n, "n", minimum=1)
        self.rng = rng if rng is not None else np.random.default_rng(check_seed(seed))
        scale = np.ones(self.n)
        if model.d2d > 0:
            scale = np.exp(model.d2d * self.rng.standard_normal(self.n))
        self.scale = scale  # per-part factor on the ladder (r_min + k dR) -> scale * (...)
        self.g_prog = self.age = None
        self._levels = None

    def levels(self) -> np.ndarray:
        """Tap resistances (n, n_steps) of every part."""
        if self._levels is None:
            self._levels = self.scale[:, None] * self.model.resistance_levels()[None, :]
        return self._levels

    @property
    def g_min(self):
        return 1.0 / (self.scale * self.model.r_max)

    @property
    def g_max(self):
        return 1.0 / (self.scale * self.model.r_min)

    def taps(self, g) -> np.ndarray:
        """Nearest tap (n,) of conductances ``g`` (nearest in resistance)."""
        r = 1.0 / np.asarray(g, dtype=float)
        if self.model.taper == "linear":  # equally spaced: the nearest tap by arithmetic
            d_r = (self.model.r_max - self.model.r_min) / (self.model.n_steps - 1)
            k = np.rint((r / self.scale - self.model.r_min) / d_r)
            return np.clip(k, 0, self.model.n_steps - 1).astype(np.int64)
        return np.abs(self.levels() - r[:, None]).argmin(axis=1)

    def conductance(self, taps) -> np.ndarray:
        return 1.0 / np.take_along_axis(self.levels(), np.asarray(taps)[:, None], axis=1)[:, 0]

    def pulse(self, g, pulses, rng=None, scale=None) -> np.ndarray:
        n = np.asarray(pulses)
        if n.shape != (self.n,) or np.shape(g) != (self.n,):
            raise ShapeError(f"g and pulses must have shape ({self.n},), got {np.shape(g)} and {n.shape}")
        taps = np.clip(self.taps(g) - n.astype(np.int64), 0, self.model.n_steps - 1)  # +1: towards r_min
        return self.conductance(taps)

    def step(self, g, direction, idx=None) -> np.ndarray:
        taps = self.taps(g)
        new = np.clip(taps - np.where(np.asarray(direction) > 0, 1, -1), 0, self.model.n_steps - 1)
        return self.conductance(new) - self.conductance(taps)

    def pulses_for(self, g, dg) -> np.ndarray:
        """Fractional number of taps (n,) from ``g`` to ``g + dg`` (in resistance, +: towards r_min)."""
        g = np.asarray(g, dtype=float)
        target = np.clip(g + np.asarray(dg, dtype=float), self.g_min, self.g_max)
        d_r = (self.model.r_max - self.model.r_min) / (self.model.n_steps - 1) * self.scale
        if self.model.taper == "linear":
            return (1.0 / g - 1.0 / target) / d_r
        ratio = math.log(self.model.r_max / self.model.r_min) / (self.model.n_steps - 1)
        return np.log(target / g) / ratio

    def clip(self, g, idx=None):
        return np.clip(g, self.g_min, self.g_max)

    def drift(self, g, dt: float) -> np.ndarray:
        return np.asarray(g, dtype=float)  # a digital part does not drift

    def state_dict(self) -> dict:
        return {"n": self.n, "rng": self.rng.bit_generator.state, "scale": _array(self.scale)}

    def load_state_dict(self, state: dict) -> None:
        if int(state["n"]) != self.n:
            raise ShapeError(f"device state is for {state['n']} devices, this array has {self.n}")
        self.rng.bit_generator.state = state["rng"]
        self.scale = np.asarray(state["scale"], dtype=float)
        self._levels = None


# ============================================================================ presets
def _pcm():
    return PulseDevice(
        g_min=0.1e-6, g_max=25e-6, step_up=1.5e-6, step_down=25e-6, gamma_up=1.0, gamma_down=0.0,
        c2c=0.7, d2d=0.2, drift_nu=0.05, drift_t0=1.0, name="pcm",
        source=("phase-change cell after the statistical models of Nandakumar et al., J. Appl. Phys. "
                "124, 152135 (2018) and Boybat et al., Nat. Commun. 9, 2514 (2018): conductance "
                "0.1-25 uS, gradual SET of about 1.5 uS per pulse shrinking towards saturation after "
                "15-20 pulses, cycle-to-cycle spread comparable to the mean step, abrupt RESET "
                "(one pulse returns to g_min), drift exponent about 0.05; order-of-magnitude values, "
                "not a fit"))


def _rram():
    return PulseDevice(
        g_min=10e-6, g_max=100e-6, step_up=1.2e-6, step_down=1.2e-6, gamma_up=1.0, gamma_down=1.0,
        c2c=0.3, d2d=0.3, name="rram",
        source=("bidirectional analog RRAM with soft bounds; cycle-to-cycle and device-to-device "
                "spreads of 30 % as in the resistive processing unit specification of Gokmen and "
                "Vlasov, Front. Neurosci. 10, 333 (2016), but about 75 pulses across the window "
                "(the RPU asks for 1000 states; filamentary oxides reach tens to hundreds); the "
                "10-100 uS window is a typical filamentary-oxide range; illustrative"))


def _ideal():
    return PulseDevice(g_min=1e-6, g_max=1e-3, step_up=1e-6, step_down=1e-6, gamma_up=0.0,
                       gamma_down=0.0, name="ideal",
                       source="linear, symmetric, noise-free steps (a reference, not a device)")


PRESETS = {
    "digital_potentiometer": DigitalPotentiometer,
    "pcm": _pcm,
    "rram": _rram,
    "ideal": _ideal,
    "hp": LinearIonDrift,
    "vteam": ThresholdMemristor,
}


def preset(name: str, **overrides):
    """A named device model, with any parameter overridden (``preset("pcm", c2c=0)``).

    ``"digital_potentiometer"`` (40 ohm - 32 kohm, 100 taps; Dillavou et al. 2022),
    ``"pcm"`` (Nandakumar et al. 2018 / Boybat et al. 2018-type), ``"rram"`` (spreads of the Gokmen and
    Vlasov 2016 RPU specification), ``"ideal"``, and the continuous ``"hp"``
    (:class:`LinearIonDrift`, Strukov et al. 2008) and ``"vteam"``
    (:class:`ThresholdMemristor`). Each model's ``source`` (or docstring) says where
    its values come from.
    """
    check_choice(name, "preset name", tuple(PRESETS))
    model = PRESETS[name]()
    valid = {f.name for f in fields(model)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ParameterError(f"preset {name!r} has no parameter(s) {unknown}; valid: {sorted(valid)}")
    return replace(model, **overrides) if overrides else model


# ============================================================================ programming
class PulseResult(NamedTuple):
    conductances: np.ndarray  # (m,) after programming (and drift)
    pulses: np.ndarray  # (m,) signed pulse counts applied (+: SET)


def local_currents(circuit, conductances, x, y, loss="mse", factorization=None):
    """The two local measurements of the analytical rule: ``(i, i_adj, loss)``.

    ``i`` (b, m): edge currents of the voltage-mode run; ``i_adj = g * B^T lam`` (b, m):
    edge currents with the inputs off and the output error ``delta = dC/do`` injected at
    the outputs; ``mean_s i_e i_adj_e = dC/dr_e`` (theory.md, 2).
    """
    from .losses import get_loss

    fac = circuit.factorization_for(conductances, factorization).prepare()  # one multi-column solve
    free = fac.solve(x)
    values, delta = get_loss(loss)(free.outputs, y)
    i_adj = fac.conductances * (delta @ fac.adjoint_drops().T)
    return free.currents, i_adj, float(values.mean())


class PulseProgrammer(Constraint):
    """Program conductances with pulses through a device model (a trainer constraint).

    ``mode``: how an update ``dg`` becomes pulse counts ``n = dg / step(g)``:
    ``"round"`` (nearest integer, small updates are lost), ``"stochastic"`` (floor plus a
    Bernoulli of the remainder: unbiased, small updates accumulate on average) or
    ``"sign"`` (one pulse in the direction of the update where ``|n| >= threshold``, the
    Manhattan rule). ``max_pulses`` caps ``|n|`` per step. ``dt``: seconds that pass per
    programming step (retention drift of every device). Devices are built on first use
    from ``seed`` (one per edge).

    As a :class:`~kirchnet.constraints.Constraint`, ``apply(g_new, g_old)`` programs
    ``g_old -> g_new`` (the trainer's proposed update); :meth:`program` takes a learning
    rule's estimate directly (``g - lr * estimate``), :meth:`in_situ` the two measured
    currents. ``state_dict()`` holds the device parameters, their states and generator.

    ``protocol`` says how a :class:`~kirchnet.training.Trainer` uses it: ``"pulses"`` (the
    optimizer's proposed conductances are programmed, ``apply``) or ``"in_situ"`` (the
    optimizer is skipped; every tunable edge gets one pulse from its local product
    ``p_e = dC/dr_e = -g_e^2 dC/dg_e`` through :meth:`in_situ_products` with ``gain`` times
    the learning-rate schedule's factor, and ``v_max``). In both, frozen (non-tunable)
    edges receive no pulse but drift.
    """

    space = "conductance"

    def __init__(self, device, mode: str = "round", max_pulses: int = 100, threshold: float = 0.5,
                 dt: float = 0.0, seed: int = 0, protocol: str = "pulses", gain: float = 1.0,
                 v_max: float | None = None):
        if isinstance(device, str):
            device = preset(device)
        if not isinstance(device, (PulseDevice, DigitalPotentiometer)):
            raise ParameterError(f"device must be a PulseDevice, a DigitalPotentiometer or a preset name, "
                                 f"got {type(device).__name__}")
        self.device = device
        self.mode = check_choice(mode, "mode", ("round", "stochastic", "sign"))
        self.max_pulses = check_int(max_pulses, "max_pulses", minimum=1)
        self.threshold = check_real(threshold, "threshold", low=0.0)
        self.dt = check_real(dt, "dt", low=0.0)
        self.seed = check_seed(seed)
        self.protocol = check_choice(protocol, "protocol", ("pulses", "in_situ"))
        self.gain = check_positive(gain, "gain")
        self.v_max = None if v_max is None else check_positive(v_max, "v_max")
        self.devices = None
        self.total_pulses = 0

    def _devices(self, m: int):
        if self.devices is None:
            self.devices = self.device.build(m, seed=self.seed)
        elif self.devices.n != m:
            raise ShapeError(f"this programmer drives {self.devices.n} devices, got {m} conductances")
        return self.devices

    def pulses(self, g, dg, rng=None) -> np.ndarray:
        """Signed integer pulse counts (m,) for the update ``dg`` at conductances ``g``."""
        dev = self._devices(np.size(g))
        r = dev.pulses_for(g, dg)
        if self.mode == "round":
            n = np.rint(r)
        elif self.mode == "stochastic":
            rng = dev.rng if rng is None else rng
            lo = np.floor(r)
            n = lo + (rng.random(r.shape) < (r - lo))
        else:
            n = np.where(np.abs(r) >= self.threshold, np.sign(r), 0.0)
        return np.clip(n, -self.max_pulses, self.max_pulses).astype(np.int64)

    def program_to(self, g, target, rng=None) -> PulseResult:
        """Pulse ``g`` towards ``target`` (both (m,)), then let ``dt`` pass."""
        g = np.asarray(g, dtype=float)
        target = np.asarray(target, dtype=float)
        if target.shape != g.shape or g.ndim != 1:
            raise ShapeError(f"target must have the shape of g, {g.shape}, got {target.shape}")
        dev = self._devices(g.size)
        n = self.pulses(g, target - g, rng)
        g_new = dev.pulse(g, n, rng)
        g_new = dev.drift(g_new, self.dt)
        self.total_pulses += int(np.abs(n).sum())
        return PulseResult(g_new, n)

    def program(self, g, estimate, lr: float, rng=None) -> PulseResult:
        """Apply the update ``g - lr * estimate`` (``estimate = dC/dg``) as pulses."""
        lr = check_positive(lr, "lr")
        est = np.asarray(estimate, dtype=float)
        if est.shape != np.shape(g):
            raise ShapeError(f"estimate must have the shape of g, {np.shape(g)}, got {est.shape}")
        return self.program_to(g, np.asarray(g, dtype=float) - lr * est, rng)

    def in_situ(self, g, i, i_adj, gain: float, v_max: float | None = None, rng=None) -> PulseResult:
        """One pulse per edge with amplitude set by its two measured currents.

        ``p_e = mean_s i_e i_adj_e`` (``= dC/dr_e``); the pulse is a SET (raises ``g``,
        lowers ``r``) where ``p_e > 0`` and a RESET where ``p_e < 0``, of amplitude
        ``v_e = min(gain |p_e|, v_max)`` (``v_max`` defaults to ``v_pulse``); its step is the
        device's step at ``g`` times ``((v_e - v_th) / (v_pulse - v_th))^exponent`` above the
        threshold ``v_th`` and 0 below. A digital potentiometer has no amplitude response:
        it moves one tap where ``v_e`` exceeds half of ``v_max``.
        """
        g = np.asarray(g, dtype=float)
        i, i_adj = np.atleast_2d(i), np.atleast_2d(i_adj)
        if i.shape != i_adj.shape or i.shape[1] != g.size:
            raise ShapeError(f"i and i_adj must both have shape (batch, {g.size}), got {i.shape} and {i_adj.shape}")
        return self.in_situ_products(g, np.einsum("bm,bm->m", i, i_adj) / i.shape[0], gain, v_max, rng)

    def in_situ_products(self, g, products, gain: float, v_max: float | None = None, rng=None) -> PulseResult:
        """:meth:`in_situ` from the per-edge products ``p_e = mean_s i_e i_adj_e`` (m,), e.g. the
        estimate of ``InSitu(wrt="resistance")`` with its measurement noise."""
        g = np.asarray(g, dtype=float)
        prod = np.asarray(products, dtype=float)
        if prod.shape != g.shape or g.ndim != 1:
            raise ShapeError(f"products must have the shape of g, {g.shape}, got {prod.shape}")
        dev = self._devices(g.size)
        gain = check_positive(gain, "gain")
        if isinstance(self.device, DigitalPotentiometer):
            vmax = 1.0 if v_max is None else check_positive(v_max, "v_max")
            v = np.minimum(gain * np.abs(prod), vmax)
            n = np.where(v >= 0.5 * vmax, np.sign(prod), 0).astype(np.int64)
            g_new = dev.pulse(g, n, rng)
        else:
            d = self.device
            vmax = d.v_pulse if v_max is None else check_positive(v_max, "v_max")
            v = np.minimum(gain * np.abs(prod), vmax)
            resp = np.clip((v - d.v_threshold) / (d.v_pulse - d.v_threshold), 0.0, None) ** d.amplitude_exponent
            n = np.where(resp > 0, np.sign(prod), 0).astype(np.int64)
            g_new = dev.pulse(g, n, rng, scale=resp)
        g_new = dev.drift(g_new, self.dt)
        self.total_pulses += int(np.abs(n).sum())
        return PulseResult(g_new, n)

    # ------------------------------------------------------------ Constraint API
    def apply(self, g_new, g_old, parametrization: str = "conductance") -> np.ndarray:
        """Program ``g_old -> g_new`` with pulses; returns what the devices reached."""
        return self.program_to(np.asarray(g_old, dtype=float), np.asarray(g_new, dtype=float)).conductances

    __call__ = apply

    def satisfied(self, g, parametrization: str = "conductance") -> np.ndarray:
        g = np.asarray(g, dtype=float)
        if self.devices is None:
            return np.ones(g.shape, dtype=bool)
        tol = 1e-12 * np.abs(g)
        return (g >= self.devices.g_min - tol) & (g <= self.devices.g_max + tol)

    def state_dict(self) -> dict:
        return {"devices": None if self.devices is None else self.devices.state_dict(),
                "total_pulses": self.total_pulses}

    def load_state_dict(self, state: dict) -> None:
        dev_state = state.get("devices")
        if dev_state is None:
            self.devices = None
        else:
            self._devices(int(dev_state["n"])).load_state_dict(dev_state)
        self.total_pulses = int(state.get("total_pulses", 0))

    def __repr__(self):
        extra = f", gain={self.gain}, v_max={self.v_max}" if self.protocol == "in_situ" else ""
        return (f"PulseProgrammer({self.device!r}, mode={self.mode!r}, max_pulses={self.max_pulses}, "
                f"threshold={self.threshold}, dt={self.dt}, seed={self.seed}, protocol={self.protocol!r}{extra})")
