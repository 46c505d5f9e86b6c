"""Learning rules: the exact gradient and two-phase (Hebbian) estimators."""

from .base import Analytical, Rule, RuleResult

__all__ = ["Rule", "RuleResult", "Analytical"]
