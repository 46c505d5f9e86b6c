"""Learning rules: the exact gradient, two-phase (Hebbian) estimators and the in-situ protocol.

Every rule maps ``(circuit, conductances, x, y)`` to a :class:`RuleResult` whose
``estimate`` (m,) satisfies: ``conductances - lr * estimate`` lowers the loss.
"""

from .base import Analytical, Rule, RuleResult
from .finite_difference import FiniteDifference
from .insitu import InSitu
from .twophase import (
    GEP,
    AdjointClampNudge,
    AdjointCoupledLearning,
    ClampNudge,
    CoupledLearning,
    CurrentNudge,
    EnergyNudge,
    EquilibriumPropagation,
    Nudge,
    NudgeContext,
    Nudged,
)

__all__ = [
    "Rule", "RuleResult", "Analytical", "EquilibriumPropagation", "CoupledLearning",
    "AdjointCoupledLearning", "GEP", "Nudge", "Nudged", "NudgeContext", "CurrentNudge",
    "EnergyNudge", "ClampNudge", "AdjointClampNudge", "FiniteDifference", "InSitu",
]
