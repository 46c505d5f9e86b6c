"""The parameter an edge is trained in, and its chain rule: one object per choice.

* :data:`CONDUCTANCE` (``p = g``): the identity.
* :data:`RESISTANCE` (``p = r = 1/g``): ``g = 1/r`` and ``dC/dr = -g^2 dC/dg``
  (``dC/dg = -r^2 dC/dr``); the product ``-g^2 dC/dg`` is refused with a
  :class:`~kirchnet.errors.ParameterError` naming the edges where it overflows float64
  (``g > ~1e154``) instead of returning ``inf``.

Everything that converts between the two (the gradient's ``wrt``, the rules, the
Trainer's ``parametrization``, the in-situ protocol's ``dC/dr`` products) goes through
:func:`get` and these methods.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError

_NAMES = {"conductance": "conductance", "g": "conductance", "resistance": "resistance", "r": "resistance"}


class Parametrization:
    """``to_g(p)``, ``from_g(g)``, ``grad_from_g(dC/dg, g) = dC/dp`` and
    ``grad_to_g(dC/dp, g) = dC/dg`` (``g`` the conductances, broadcast over a batch)."""

    name: str = "?"

    def to_g(self, p) -> np.ndarray:
        raise NotImplementedError

    def from_g(self, g) -> np.ndarray:
        raise NotImplementedError

    def grad_from_g(self, grad, g) -> np.ndarray:
        raise NotImplementedError

    def grad_to_g(self, grad, g) -> np.ndarray:
        raise NotImplementedError

    def convert(self, grad, g, frm: "Parametrization") -> np.ndarray:
        """A gradient given in parametrization ``frm``, in this one (identity when equal)."""
        frm = get(frm)
        return grad if frm is self else self.grad_from_g(frm.grad_to_g(grad, g), g)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __reduce__(self):  # the module-level singletons survive pickling as themselves
        return (get, (self.name,))


class Conductance(Parametrization):
    """``p = g``."""

    name = "conductance"

    def to_g(self, p):
        return p

    def from_g(self, g):
        return g

    def grad_from_g(self, grad, g):
        return grad

    def grad_to_g(self, grad, g):
        return grad


class Resistance(Parametrization):
    """``p = r = 1/g``: ``dC/dr = -g^2 dC/dg``, ``dC/dg = -r^2 dC/dr``."""

    name = "resistance"

    def to_g(self, p):
        return 1.0 / np.asarray(p, dtype=float)

    def from_g(self, g):
        return 1.0 / np.asarray(g, dtype=float)

    def grad_from_g(self, grad, g):
        """``-g^2 dC/dg``, refusing overflow (``g^2`` beyond float64 for ``g > 1e154``)."""
        g = np.asarray(g, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            out = -(g ** 2) * grad
        if not np.isfinite(out).all():
            bad = np.flatnonzero(~np.isfinite(out.reshape(-1, g.size)).all(axis=0))
            raise ParameterError(
                f"the resistance gradient dC/dr = -g^2 dC/dg overflows float64 on edge(s) "
                f"{', '.join(map(str, bad[:10]))} (g up to {float(g[bad].max()):.3g}); use "
                f"wrt='conductance', or rescale the conductances (potentials are invariant to a "
                f"common factor on g)", edges=bad,
            )
        return out

    def grad_to_g(self, grad, g):
        """``dC/dg = -r^2 dC/dr = -dC/dr / g^2``."""
        g = np.asarray(g, dtype=float)
        return -grad / (g * g)


CONDUCTANCE = Conductance()
RESISTANCE = Resistance()


def get(wrt) -> Parametrization:
    """The parametrization named ``wrt`` (``"conductance"``/``"g"``, ``"resistance"``/``"r"``)
    or ``wrt`` itself when it is one."""
    if isinstance(wrt, Parametrization):
        return wrt
    name = _NAMES.get(wrt) if isinstance(wrt, str) else None
    if name is None:
        raise ParameterError(f"wrt must be 'conductance' or 'resistance', got {wrt!r}")
    return CONDUCTANCE if name == "conductance" else RESISTANCE
