"""kirchnet: simulate and train resistive networks with exact gradients and physical learning rules.

Layers, bottom to top: :mod:`~kirchnet.errors` -> :mod:`~kirchnet.network` /
:mod:`~kirchnet.topologies` -> :mod:`~kirchnet.circuit` (boundary conditions, solve)
-> :mod:`~kirchnet.solvers` -> :mod:`~kirchnet.losses` / :mod:`~kirchnet.gradient`
(adjoint) and :mod:`~kirchnet.projector` (the paper's Omega form, dense reference)
-> :mod:`~kirchnet.rules` (exact and two-phase learning rules, in-situ protocol)
-> :mod:`~kirchnet.partial` / :mod:`~kirchnet.constraints` / :mod:`~kirchnet.optim`
-> :mod:`~kirchnet.training` -> :mod:`~kirchnet.estimators` (scikit-learn API)
-> :mod:`~kirchnet.tasks` / :mod:`~kirchnet.experiments` / :mod:`~kirchnet.sweep`
-> :mod:`~kirchnet.cli`.
"""

from . import constraints, defaults, optim, partial, projector, rules, solvers, tasks, topologies
from . import drn  # deep resistive networks (layered diode networks, exact fast solver)
from . import devices, memristive, memristive_projector  # memristive device models and network dynamics
from . import elements
from .circuit import Circuit, CircuitFactorization, Edge, Pair, State
from .elements import Diode, ElementMap, IdealDiode, Law, Rectifier, Resistor
from .config import TrainConfig
from .errors import (
    BoundaryConditionError,
    ConfigError,
    ConvergenceError,
    FloatingComponentError,
    FormatError,
    IllConditionedError,
    KirchnetError,
    KirchnetWarning,
    ParameterError,
    SaturationWarning,
    ShapeError,
    SolverError,
    TopologyError,
)
from .gradient import GradientResult, loss_and_grad
from .losses import CrossEntropy, Loss, SquaredError, get_loss
from .network import Network
from .persist import Saved, load, load_run, save
from .rules import (
    GEP,
    AdjointCoupledLearning,
    Analytical,
    CoupledLearning,
    EquilibriumPropagation,
    FiniteDifference,
    InSitu,
)
from .training import History, Trainer, TrainResult


def __getattr__(name):
    # scikit-learn is imported only when the estimators are used
    if name in ("ResistiveRegressor", "ResistiveClassifier", "estimators"):
        import importlib

        estimators = importlib.import_module(".estimators", __name__)
        return estimators if name == "estimators" else getattr(estimators, name)
    raise AttributeError(f"module 'kirchnet' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "Network", "Circuit", "CircuitFactorization", "State", "Edge", "Pair",
    "elements", "Law", "Resistor", "Diode", "Rectifier", "IdealDiode", "ElementMap",
    "loss_and_grad", "GradientResult", "Loss", "SquaredError", "CrossEntropy", "get_loss",
    "topologies", "solvers", "projector", "rules", "partial", "constraints", "optim",
    "Analytical", "EquilibriumPropagation", "CoupledLearning", "AdjointCoupledLearning", "GEP",
    "InSitu", "FiniteDifference", "Trainer", "TrainResult", "History",
    "ResistiveRegressor", "ResistiveClassifier", "tasks", "TrainConfig", "ConfigError",
    "KirchnetError", "TopologyError", "BoundaryConditionError", "FloatingComponentError",
    "ParameterError", "ShapeError", "SolverError", "ConvergenceError", "IllConditionedError", "FormatError", "KirchnetWarning",
    "SaturationWarning", "save", "load", "load_run", "Saved", "defaults", "__version__",
]
