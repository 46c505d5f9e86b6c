"""The kirchnet exception hierarchy.

Every error kirchnet raises on purpose derives from :class:`KirchnetError`.
Errors caused by bad input also derive from :class:`ValueError` so that generic
callers (scikit-learn's checks, argument parsers) treat them as such.
"""

from __future__ import annotations


class KirchnetError(Exception):
    """Base class of every kirchnet error."""


class TopologyError(KirchnetError, ValueError):
    """The graph itself is invalid: empty, self-loops, unknown node ids."""


class BoundaryConditionError(KirchnetError, ValueError):
    """Inputs, outputs, ground or clamps are inconsistent."""


class FloatingComponentError(BoundaryConditionError):
    """A connected component has no clamped node, so its potentials are undetermined."""

    def __init__(self, message: str, nodes=()):
        super().__init__(message)
        self.nodes = tuple(int(v) for v in nodes)


class ParameterError(KirchnetError, ValueError):
    """A numeric argument is invalid: conductances or resistances non-positive, NaN or
    infinite (``edges`` names them), or a parameter that is not a number of the right kind
    or range (a fractional count, a negative seed, ``eta > 1``, a NaN learning rate, ...)."""

    def __init__(self, message: str, edges=()):
        super().__init__(message)
        self.edges = tuple(int(e) for e in edges)


class ShapeError(KirchnetError, ValueError):
    """An array has the wrong shape."""


class SolverError(KirchnetError, RuntimeError):
    """A linear solver failed (unknown backend, matrix not positive definite, ...)."""


class ConvergenceError(SolverError):
    """An iterative solver did not reach its tolerance."""


class IllConditionedError(SolverError):
    """A solve could not be certified accurate in float64 (the circuit is ill-conditioned:
    conductances spanning too many decades, near-shorts or near-opens)."""


class NetlistError(KirchnetError, ValueError):
    """A SPICE netlist is malformed or uses elements kirchnet cannot represent.

    ``line`` is the 1-based line number in the netlist text (the first physical line of
    a continued logical line), or ``None`` when the problem is not tied to one line.
    """

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class SimulatorError(SolverError):
    """An external circuit simulator (ngspice) is missing, failed or gave unreadable output."""


class ConfigError(KirchnetError, ValueError):
    """A configuration file or dict is malformed (unknown key, wrong type, impossible value)."""


class FormatError(KirchnetError, ValueError):
    """A saved network (:func:`kirchnet.load`) is malformed or of an unknown format version."""


class KirchnetWarning(UserWarning):
    """Base class of the warnings kirchnet issues (e.g. many conductances at a bound)."""


class SaturationWarning(KirchnetWarning):
    """More than the allowed fraction of tunable edges sits at a conductance bound."""
