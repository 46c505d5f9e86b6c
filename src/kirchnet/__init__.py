"""kirchnet: simulate and train resistive networks with exact gradients and physical learning rules.

Layers, bottom to top: :mod:`~kirchnet.errors` -> :mod:`~kirchnet.network` /
:mod:`~kirchnet.topologies` -> :mod:`~kirchnet.circuit` (boundary conditions, solve)
-> :mod:`~kirchnet.solvers` -> :mod:`~kirchnet.losses` / :mod:`~kirchnet.gradient`
(adjoint) and :mod:`~kirchnet.projector` (the paper's Omega form, dense reference).
"""

from . import projector, solvers, topologies
from .circuit import Circuit, CircuitFactorization, Edge, Pair, State
from .errors import (
    BoundaryConditionError,
    ConvergenceError,
    FloatingComponentError,
    KirchnetError,
    ParameterError,
    ShapeError,
    SolverError,
    TopologyError,
)
from .gradient import GradientResult, loss_and_grad
from .losses import CrossEntropy, Loss, SquaredError, get_loss
from .network import Network

__version__ = "0.1.0"

__all__ = [
    "Network", "Circuit", "CircuitFactorization", "State", "Edge", "Pair",
    "loss_and_grad", "GradientResult", "Loss", "SquaredError", "CrossEntropy", "get_loss",
    "topologies", "solvers", "projector",
    "KirchnetError", "TopologyError", "BoundaryConditionError", "FloatingComponentError",
    "ParameterError", "ShapeError", "SolverError", "ConvergenceError", "__version__",
]
