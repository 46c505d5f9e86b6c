"""Linear solvers for the reduced Laplacian ``L_FF``: one interface, several backends.

``factorize(A, backend="auto")`` returns a :class:`Factorization`. Backends:

``"dense"``    LAPACK Cholesky; fastest below ~250 unknowns.
``"cholmod"``  CHOLMOD sparse Cholesky (scikit-sparse, optional); grids and planar graphs.
``"splu"``     scipy SuperLU with MMD ordering; dependency-free sparse fallback.
``"pcg"``      conjugate gradients, Jacobi preconditioner; expander-like graphs.
``"pcg-amg"``  conjugate gradients, pyamg smoothed-aggregation preconditioner (optional).

Every solve of every backend is checked (finiteness, an error bound from the residual,
iterative refinement, then :class:`~kirchnet.errors.IllConditionedError`): see
:mod:`kirchnet.solvers.base`.

``"auto"`` picks dense for small systems; otherwise it predicts the Cholesky fill
from a symbolic analysis (the envelope of a reverse Cuthill-McKee ordering, an upper
bound on ``nnz(L)``) and chooses a direct method when the fill is planar-like, CG when
it would explode (random/expander graphs).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from ..errors import SolverError
from . import cholmod as _cholmod_mod
from .base import Factorization, WoodburyFactorization
from .cholmod import CholmodCholesky, CholmodSymbolic
from .dense import DenseCholesky
from .pcg import PCG, pyamg_available
from .splu import SuperLU

BACKENDS = ("auto", "dense", "cholmod", "splu", "pcg", "pcg-amg")

#: systems up to this many unknowns use dense Cholesky under ``"auto"``. Measured on
#: lattices and random graphs (factorize + 64-sample solve, one BLAS thread): CHOLMOD
#: is as fast as dense LAPACK from ~150-200 unknowns and 15x faster at ~500 (0.5 vs
#: 8.7 ms); SuperLU (the fallback without CHOLMOD) overtakes dense at ~250-300 (issue 5).
DENSE_MAX = 250
#: predicted ``nnz(L)`` below which a direct method is always fine (~0.4 GB)
DIRECT_FILL_OK = 5e7


def cholmod_available() -> bool:
    """Whether the optional CHOLMOD backend (scikit-sparse) can be used."""
    return _cholmod_mod.AVAILABLE


def predicted_fill(matrix) -> dict:
    """Symbolic fill prediction for a sparse SPD matrix.

    Returns ``{"n", "nnz", "envelope", "mean_width"}`` where ``envelope`` is the
    number of entries in the lower profile under a reverse Cuthill-McKee ordering:
    an upper bound on ``nnz(L)`` of a Cholesky factor in that ordering.
    """
    A = sp.csr_matrix(matrix)
    n = A.shape[0]
    perm = reverse_cuthill_mckee(A, symmetric_mode=True)
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    Ap = A.tocoo()
    r, c = inv[Ap.row], inv[Ap.col]
    first = np.full(n, n, dtype=np.int64)
    np.minimum.at(first, r, c)
    width = np.arange(n) - np.minimum(first, np.arange(n)) + 1
    env = float(width.sum())
    return {"n": n, "nnz": int(A.nnz), "envelope": env, "mean_width": env / max(n, 1)}


def factor_memory(fill: dict, backend: str) -> float:
    """Estimated bytes of a sparse Cholesky factor from :func:`predicted_fill`.

    ``nnz(L)``: for planar-like patterns (mean envelope width at most ``4 sqrt(n)``)
    ``min(envelope, 8 n log2 n)`` (nested-dissection-like orderings fill ``O(n log n)``;
    measured AMD/MMD fill of lattices is below this), otherwise a quarter of the RCM
    envelope. 12 bytes per entry (value + index); SuperLU stores ``L`` and ``U``.
    """
    n = max(int(fill["n"]), 2)
    env = float(fill["envelope"])
    if fill["mean_width"] <= 4.0 * np.sqrt(n):
        nnz = min(env, 8.0 * n * np.log2(n))
    else:
        nnz = env / 4.0
    return 12.0 * (nnz + n) * (2 if backend == "splu" else 1)


def choose_backend(matrix) -> str:
    """The backend ``"auto"`` picks for this matrix (see the module docstring)."""
    n = matrix.shape[0]
    if n <= DENSE_MAX:
        return "dense"
    fill = predicted_fill(matrix)
    planar_like = fill["mean_width"] <= 4.0 * np.sqrt(n) or fill["envelope"] <= DIRECT_FILL_OK
    if planar_like:
        return "cholmod" if cholmod_available() else "splu"
    return "pcg"


def factorize(matrix, backend: str = "auto", *, symbolic: CholmodSymbolic | None = None,
              rtol: float = 1e-10, maxiter: int | None = None, check: bool = True) -> Factorization:
    """Factorize the SPD matrix with the named backend (see :data:`BACKENDS`).

    ``check=False`` turns off the verification of every solve (for benchmarks only).
    """
    if backend == "auto":
        backend = choose_backend(matrix)
    if backend == "dense":
        fac = DenseCholesky(matrix)
    elif backend == "cholmod":
        fac = symbolic.factorize(matrix) if symbolic is not None else CholmodCholesky(matrix)
    elif backend == "splu":
        fac = SuperLU(matrix)
    elif backend == "pcg":
        fac = PCG(matrix, "jacobi", rtol=rtol, maxiter=maxiter)
    elif backend == "pcg-amg":
        fac = PCG(matrix, "amg", rtol=rtol, maxiter=maxiter)
    else:
        raise SolverError(f"unknown solver backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    fac.check = bool(check)
    return fac


__all__ = [
    "BACKENDS", "Factorization", "WoodburyFactorization", "DenseCholesky", "CholmodCholesky",
    "CholmodSymbolic", "SuperLU", "PCG", "factorize", "choose_backend", "predicted_fill",
    "cholmod_available", "pyamg_available", "factor_memory",
]
