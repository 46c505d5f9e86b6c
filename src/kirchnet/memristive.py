"""Memristive networks in time: quasi-static Kirchhoff equilibria and device state equations.

Every edge of a :class:`~kirchnet.Circuit` is a memristor of one
:class:`~kirchnet.devices.MemristorModel` with state ``x_e in [0, 1]`` and conductance
``g_e = 1 / R(x_e)``. Circuits settle much faster than ions drift, so at every instant
the potentials are the equilibrium of the resistor network at ``g(x)`` under the
applied inputs ``u(t)`` (a factorization of ``L_FF(g)``; when few devices changed, as
below a threshold, :meth:`~kirchnet.CircuitFactorization.update` updates it by a
low-rank change instead of refactorizing), and the states follow

    ``dx_e/dt = model.rate(x_e, i_e, w_e)``

with the element current ``i_e`` and voltage ``w_e`` (edge direction ``a -> b``).

Integrators (``method`` of :meth:`MemristiveNetwork.simulate`):

* ``"euler"``: fixed step ``dt``, one equilibrium per step (the fast path for large
  networks; states clipped to ``[0, 1]`` after each step);
* ``"heun"``: Heun's method with the embedded Euler step as error estimate and an
  adaptive step (``rtol``, ``atol``), two equilibria per step;
* any :func:`scipy.integrate.solve_ivp` method (``"RK45"``, ``"DOP853"``, and the
  stiff-capable ``"LSODA"``, ``"BDF"``, ``"Radau"``: their finite-difference Jacobian costs
  one equilibrium per edge, so use them on small networks).

The result is a :class:`Trajectory` (times, states, currents, voltages, outputs).
:func:`plot_hysteresis` draws an element's pinched current-voltage loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import check_choice, check_int, check_positive, check_real
from .circuit import Circuit
from .devices import MemristorModel
from .errors import ConvergenceError, ParameterError, ShapeError

__all__ = ["MemristiveNetwork", "Trajectory", "plot_hysteresis", "IVP_METHODS"]

IVP_METHODS = ("RK45", "RK23", "DOP853", "LSODA", "BDF", "Radau")
METHODS = ("euler", "heun") + IVP_METHODS


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A simulated trajectory; the first axis of every array is time.

    ``times`` (T,), ``states`` (T, m), ``currents`` and ``voltages`` (T, m) (element
    current and resistor voltage, ``None`` when not recorded), ``outputs`` (T, k),
    ``inputs`` (T, n_inputs). ``info``: integrator counters (``n_steps``,
    ``n_equilibria``, ``n_factorizations``, ``n_low_rank_updates``, ``n_reused``, ...).
    """

    times: np.ndarray
    states: np.ndarray
    currents: np.ndarray | None
    voltages: np.ndarray | None
    outputs: np.ndarray
    inputs: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def final_state(self) -> np.ndarray:
        return self.states[-1]

    def charge(self) -> np.ndarray:
        """Charge through every element (T, m) by the trapezoidal rule, ``q(t) = int_0^t i dt``."""
        if self.currents is None:
            raise ParameterError("charge() needs the currents; simulate with record_currents=True")
        dq = 0.5 * (self.currents[1:] + self.currents[:-1]) * np.diff(self.times)[:, None]
        return np.vstack([np.zeros((1, self.currents.shape[1])), np.cumsum(dq, axis=0)])


class MemristiveNetwork:
    """A circuit whose every edge is a memristor of ``model``.

    ``x0``: initial states, a scalar or (m,) in ``[0, 1]``. The circuit's inputs (node
    potentials and series sources) are the applied sources: ``simulate(source, ...)``
    takes ``source(t) -> (n_inputs,)`` or a constant (n_inputs,) array. ``low_rank``:
    update the factorization by a low-rank change when at most
    ``circuit.default_max_rank`` devices changed (``True``), never (``False``), or
    ``"auto"``: except on the dense backend, where refactorizing is cheaper.
    """

    def __init__(self, circuit: Circuit, model: MemristorModel, x0=0.5, low_rank="auto"):
        if not isinstance(circuit, Circuit):
            raise TypeError(f"circuit must be a kirchnet.Circuit, got {type(circuit).__name__}")
        if not isinstance(model, MemristorModel):
            raise TypeError(f"model must be a kirchnet.devices.MemristorModel, got {type(model).__name__}")
        self.circuit = circuit
        self.model = model
        self.x0 = self._check_states(x0, "x0")
        if not (low_rank == "auto" or isinstance(low_rank, bool)):
            raise ParameterError(f"low_rank must be 'auto', True or False, got {low_rank!r}")
        self.low_rank = low_rank
        self._fac = None
        self.counters = {}
        self._reset_counters()

    def _check_states(self, x, name):
        m = self.circuit.network.n_edges
        x = np.asarray(x, dtype=float)
        if x.ndim == 0:
            x = np.full(m, float(x))
        if x.shape != (m,):
            raise ShapeError(f"{name} must be a scalar or have shape ({m},), got {x.shape}")
        bad = ~((x >= 0) & (x <= 1))
        if bad.any():
            e = int(np.flatnonzero(bad)[0])
            raise ParameterError(f"{name} must lie in [0, 1]; edge {e} has {x[e]!r}. Clip the states",
                                 edges=np.flatnonzero(bad)[:10])
        return x

    def _reset_counters(self):
        self.counters = {"n_equilibria": 0, "n_factorizations": 0, "n_low_rank_updates": 0, "n_reused": 0}

    def _use_low_rank(self, fac) -> bool:
        if self.low_rank == "auto":
            return not fac.backend.startswith("dense")
        return bool(self.low_rank)

    # ------------------------------------------------------------------ equilibrium
    def factorization(self, g):
        """The factorization at ``g``: reused if unchanged, low-rank updated if few
        conductances changed (at most ``circuit.default_max_rank``), else refactorized."""
        c = self.circuit
        fac = self._fac
        if fac is None:
            fac = c.factorize(g)
            self.counters["n_factorizations"] += 1
        else:
            n_changed = int(np.count_nonzero(g != fac.conductances))
            if n_changed == 0:
                self.counters["n_reused"] += 1
            elif n_changed <= c.default_max_rank and self._use_low_rank(fac):
                fac = fac.update(g)
                self.counters["n_low_rank_updates" if fac.low_rank_update else "n_factorizations"] += 1
            else:
                fac = c.factorize(g)
                self.counters["n_factorizations"] += 1
        self._fac = fac
        return fac

    def equilibrium(self, x, u):
        """``(currents, voltages, outputs)`` of one equilibrium at states ``x`` and inputs ``u``."""
        g = self.model.conductance(np.clip(x, 0.0, 1.0))
        st = self.factorization(g).solve(u)
        self.counters["n_equilibria"] += 1
        return st.currents[0], st.resistor_voltages[0], st.outputs[0]

    def rate(self, t, x, source) -> np.ndarray:
        """``dx/dt`` (m,) at time ``t`` and states ``x``."""
        xc = np.clip(x, 0.0, 1.0)
        i, w, _ = self.equilibrium(xc, self._inputs(source, t))
        return self.model.rate(xc, i, w)

    def _inputs(self, source, t):
        u = source(t) if callable(source) else source
        u = np.asarray(u, dtype=float).reshape(-1)
        if u.shape != (self.circuit.n_inputs,):
            raise ShapeError(f"source must give {self.circuit.n_inputs} input value(s), got shape {u.shape}")
        return u

    # ------------------------------------------------------------------ simulate
    def simulate(self, source, t_span, method: str = "euler", dt: float | None = None,
                 t_eval=None, rtol: float = 1e-6, atol: float = 1e-9, record_every: int = 1,
                 record_currents: bool = True, max_steps: int = 10_000_000) -> Trajectory:
        """Integrate the network from ``x0`` over ``t_span = (t0, t1)``.

        ``"euler"`` needs ``dt`` (the step; ``t1 - t0`` is rounded to whole steps) and
        records every ``record_every``-th step and the end; ``"heun"`` starts from ``dt``
        (default ``(t1 - t0) / 100``) and adapts it; ``solve_ivp`` methods record at
        ``t_eval`` (default: their own steps) with ``rtol``/``atol``.
        """
        check_choice(method, "method", METHODS)
        t0, t1 = (check_real(v, "t_span") for v in t_span)
        if not t1 > t0:
            raise ParameterError(f"t_span must be increasing, got {tuple(t_span)}")
        record_every = check_int(record_every, "record_every", minimum=1)
        self._reset_counters()
        self._fac = None
        rec = _Recorder(self, source, record_currents)
        if method == "euler":
            if dt is None:
                raise ParameterError("method='euler' needs dt (the fixed step), e.g. dt=(t1 - t0) / 1000")
            dt = check_positive(dt, "dt")
            n = max(1, int(round((t1 - t0) / dt)))
            dt = (t1 - t0) / n
            x = self.x0.copy()
            for k in range(n):
                t = t0 + k * dt
                i, w, o, u = rec.solve(t, x)
                if k % record_every == 0:
                    rec.add(t, x, i, w, o, u)
                x = np.clip(x + dt * self.model.rate(x, i, w), 0.0, 1.0)
            rec.record(t1, x)
            info = {"method": method, "n_steps": n, "dt": dt}
        elif method == "heun":
            info = self._heun(rec, t0, t1, dt, rtol, atol, record_every, max_steps)
        else:
            info = self._ivp(rec, source, t0, t1, method, t_eval, rtol, atol)
        info.update(self.counters)
        return rec.result(info)

    def _heun(self, rec, t0, t1, dt, rtol, atol, record_every, max_steps):
        rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
        h = (t1 - t0) / 100 if dt is None else check_positive(dt, "dt")
        t, x = t0, self.x0.copy()
        i, w, o, u = rec.solve(t, x)
        rec.add(t, x, i, w, o, u)
        k1 = self.model.rate(x, i, w)
        n_acc = n_rej = 0
        while t < t1:
            if n_acc + n_rej >= max_steps:
                raise ConvergenceError(f"heun: {max_steps} steps without reaching t1={t1} (at t={t}); "
                                       f"loosen rtol/atol or raise max_steps")
            h = min(h, t1 - t)
            x_e = np.clip(x + h * k1, 0.0, 1.0)
            i2, w2, _, _ = rec.solve(t + h, x_e)
            k2 = self.model.rate(x_e, i2, w2)
            x_h = np.clip(x + 0.5 * h * (k1 + k2), 0.0, 1.0)
            err = float(np.max(np.abs(x_h - x_e) / (atol + rtol * np.abs(x_h))))
            if err <= 1.0:
                t = t1 if t1 - (t + h) <= 1e-12 * max(abs(t1), 1.0) else t + h
                x = x_h
                n_acc += 1
                i, w, o, u = rec.solve(t, x)
                if n_acc % record_every == 0 or t >= t1:
                    rec.add(t, x, i, w, o, u)
                k1 = self.model.rate(x, i, w)
            else:
                n_rej += 1
            h *= min(5.0, max(0.2, 0.9 / np.sqrt(max(err, 1e-16))))
        return {"method": "heun", "n_steps": n_acc, "n_rejected": n_rej}

    def _ivp(self, rec, source, t0, t1, method, t_eval, rtol, atol):
        from scipy.integrate import solve_ivp

        sol = solve_ivp(lambda t, x: self.rate(t, x, source), (t0, t1), self.x0.copy(), method=method,
                        t_eval=None if t_eval is None else np.asarray(t_eval, dtype=float),
                        rtol=rtol, atol=atol)
        if not sol.success:
            raise ConvergenceError(f"solve_ivp({method!r}) failed at t={sol.t[-1]}: {sol.message}")
        for t, x in zip(sol.t, sol.y.T):
            rec.record(t, np.clip(x, 0.0, 1.0))
        return {"method": method, "n_steps": int(sol.t.size), "nfev": int(sol.nfev),
                "njev": int(getattr(sol, "njev", 0))}


class _Recorder:
    def __init__(self, net: MemristiveNetwork, source, record_currents: bool):
        self.net, self.source, self.keep_iw = net, source, record_currents
        self.t, self.x, self.i, self.w, self.o, self.u = [], [], [], [], [], []

    def solve(self, t, x):
        u = self.net._inputs(self.source, t)
        i, w, o = self.net.equilibrium(x, u)
        return i, w, o, u

    def add(self, t, x, i, w, o, u):
        self.t.append(t)
        self.x.append(np.array(x))
        self.o.append(o)
        self.u.append(u)
        if self.keep_iw:
            self.i.append(i)
            self.w.append(w)

    def record(self, t, x):
        self.add(t, x, *self.solve(t, x))

    def result(self, info) -> Trajectory:
        stack = (lambda a: np.array(a)) if self.keep_iw else (lambda a: None)
        return Trajectory(np.array(self.t), np.array(self.x), stack(self.i), stack(self.w),
                          np.array(self.o), np.array(self.u), info)


def plot_hysteresis(trajectory: Trajectory, edge: int = 0, path=None, title: str | None = None):
    """The current-voltage loop of ``edge`` (left) and its state in time (right).

    Returns a :class:`matplotlib.figure.Figure` (object-oriented, no pyplot state);
    saved to ``path`` when given. A memristor's loop is pinched at the origin
    (``i = 0`` whenever ``w = 0``) and its lobes shrink as the drive frequency grows.
    """
    from matplotlib.figure import Figure

    if trajectory.currents is None:
        raise ParameterError("plot_hysteresis needs the currents; simulate with record_currents=True")
    m = trajectory.states.shape[1]
    edge = check_int(edge, "edge", minimum=0, maximum=m - 1)
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax_iv, ax_x = fig.subplots(1, 2)
    w, i = trajectory.voltages[:, edge], trajectory.currents[:, edge]
    ax_iv.plot(w, i * 1e3, lw=1.2)
    ax_iv.axhline(0, color="0.6", lw=0.6)
    ax_iv.axvline(0, color="0.6", lw=0.6)
    ax_iv.set_xlabel("voltage w (V)")
    ax_iv.set_ylabel("current i (mA)")
    ax_iv.set_title(title or f"edge {edge}: pinched hysteresis")
    ax_x.plot(trajectory.times, trajectory.states[:, edge], lw=1.2)
    ax_x.set_xlabel("time t (s)")
    ax_x.set_ylabel("state x")
    ax_x.set_ylim(-0.02, 1.02)
    for ax in (ax_iv, ax_x):
        ax.grid(alpha=0.3)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
