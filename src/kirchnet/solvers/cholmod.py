"""CHOLMOD sparse Cholesky through scikit-sparse (optional ``fast`` extra).

The symbolic analysis (fill-reducing ordering, elimination tree) depends only on
the sparsity pattern; :class:`CholmodSymbolic` computes it once so that every later
factorization of a matrix with the same pattern is numeric only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import SolverError
from ._fpmode import flush_subnormals
from .base import Factorization, not_positive_definite
from . import symbolic

try:  # pragma: no cover - exercised when the extra is installed
    from sksparse import cholmod as _cholmod

    AVAILABLE = True
except ImportError:  # pragma: no cover
    _cholmod = None
    AVAILABLE = False

_MISSING = ("the CHOLMOD backend needs scikit-sparse (and Debian's libsuitesparse-dev to build it): "
            "pip install 'kirchnet[fast]', or use backend='splu' (scipy, always available)")


def _csc(matrix) -> sp.csc_matrix:
    A = sp.csc_matrix(matrix)
    A.sort_indices()
    return A


def _scaled_columns(C: sp.csc_matrix, keep: np.ndarray, scale: np.ndarray) -> sp.csc_matrix:
    """``C[:, keep] diag(scale)`` of a CSC matrix with sorted indices, gathered from its
    arrays (scipy's column slicing and product cost ~0.2 ms per update on a 10^4-node tangent)."""
    starts, counts = C.indptr[:-1][keep], np.diff(C.indptr)[keep]
    indptr = np.concatenate([[0], np.cumsum(counts)])
    take = np.repeat(starts - indptr[:-1], counts) + np.arange(indptr[-1])
    data = C.data[take] * np.repeat(scale, counts)
    return sp.csc_matrix((data, C.indices[take], indptr), shape=(C.shape[0], counts.size))


def _library_error(exc: Exception, n: int) -> SolverError:
    """A CHOLMOD library error (too large, out of memory, ...) as a kirchnet error with advice."""
    kind = type(exc).__name__
    if "TooLarge" in kind or "OutOfMemory" in kind or "memory" in str(exc).lower():
        return SolverError(
            f"CHOLMOD cannot factorize this {n:,} x {n:,} system ({kind}: {exc}): its Cholesky "
            f"factor is too large (the graph fills in like an expander); use backend='pcg' "
            f"(conjugate gradients, no fill) or backend='auto', which picks it for such graphs"
        )
    return SolverError(f"CHOLMOD failed on the {n:,} x {n:,} system ({kind}: {exc}); "
                       f"try backend='splu' or backend='pcg'")


def _cholmod_errors() -> tuple:
    """The exception classes of scikit-sparse's CHOLMOD wrapper (whatever this version has)."""
    names = ("CholmodError", "CholmodTooLargeError", "CholmodOutOfMemoryError", "CholmodWarning")
    found = tuple(c for c in (getattr(_cholmod, n, None) for n in names) if isinstance(c, type))
    return found + (MemoryError,)


def _not_pd_error():
    cls = getattr(_cholmod, "CholmodNotPositiveDefiniteError", None)
    return cls if isinstance(cls, type) else ()


#: supernodal factorization where the factor's work per entry, ``sum_j c_j^2 / sum_j c_j``
#: (``c_j`` its column counts), reaches this; simplicial below. CHOLMOD's own switch is 40
#: (tuned for a multi-threaded BLAS on large supernodes). Measured here, one BLAS thread,
#: numeric factorization simplicial / supernodal: lattices of 10^3 / 10^4 / 3x10^4 / 5x10^4
#: / 10^5 nodes (work per entry 20 / 60 / 98 / 119 / 161): 0.3 / 1.2, 7.6 / 11.4 (CHOLMOD's
#: "auto" took supernodal: 16 ms), 42 / 43, 91 / 66, 281 / 198 ms; random graphs of mean
#: degree 4, 10^3 / 3x10^3 nodes (119 / 396): 2.0 / 1.9, 43 / 14 ms. Simplicial solves are
#: 2-2.5x faster throughout (10^4 lattice 0.27 vs 0.68 ms)
SUPERNODAL_SWITCH = 100.0
#: patterns with more unknowns are analyzed supernodal first (the likelier mode; a wrong
#: guess costs a second analysis)
_SUPERNODAL_GUESS = 30_000


def _analyze(A, mode):
    try:
        return _cholmod.analyze(A, mode=mode)
    except _cholmod_errors() as exc:
        raise _library_error(exc, A.shape[0]) from exc


class CholmodSymbolic:
    """Reusable symbolic analysis of one sparsity pattern: the fill-reducing ordering and
    the factorization mode, simplicial or supernodal by the factor's column counts
    (:data:`SUPERNODAL_SWITCH`, :func:`kirchnet.solvers.symbolic.column_counts`; without
    numba CHOLMOD's own choice). :attr:`mode` says which, :attr:`lnz` the factor's size."""

    def __init__(self, matrix):
        if not AVAILABLE:
            raise SolverError(_MISSING)
        A = _csc(matrix)
        #: entries of the Cholesky factor and the flops of a numeric factorization,
        #: ``sum_j c_j^2`` (``None`` without numba)
        self.lnz = self.flops = None
        if not symbolic.AVAILABLE:  # no numba: CHOLMOD's own rule
            self._symbolic, self.mode = _analyze(A, "auto"), "auto"
            return
        guess = "supernodal" if A.shape[0] > _SUPERNODAL_GUESS else "simplicial"
        self._symbolic = _analyze(A, guess)
        c = symbolic.column_counts(A, self._symbolic.P()).astype(float)
        self.lnz, self.flops = int(c.sum()), float(c @ c)
        self.mode = "supernodal" if self.flops >= SUPERNODAL_SWITCH * self.lnz else "simplicial"
        if self.mode != guess:
            self._symbolic = _analyze(A, self.mode)

    def factorize(self, matrix) -> "CholmodCholesky":
        return CholmodCholesky(matrix, symbolic=self)


class CholmodCholesky(Factorization):
    name = "cholmod"

    def __init__(self, matrix, symbolic: CholmodSymbolic | None = None, _factor=None):
        super().__init__(matrix)
        if not AVAILABLE:
            raise SolverError(_MISSING)
        if _factor is not None:
            self._factor = _factor
            return
        A = _csc(matrix)
        try:
            with flush_subnormals():  # fill below 1e-308 (weights over many decades) is slow, not useful
                self._factor = (symbolic or CholmodSymbolic(A))._symbolic.cholesky(A)
        except _not_pd_error() as exc:
            raise not_positive_definite(f"CHOLMOD: {exc}", matrix) from exc
        except _cholmod_errors() as exc:
            raise _library_error(exc, A.shape[0]) from exc
        # CHOLMOD's simplicial LDL^T mode does not stop at a non-positive pivot: check D.
        if n_bad := int(np.count_nonzero(~(self._factor.D() > 0))):
            raise not_positive_definite(f"CHOLMOD: {n_bad} non-positive pivot(s)", matrix)

    def _solve_block(self, rhs):
        return self._factor.solve_A(np.asfortranarray(rhs))

    def updated(self, C, d, matrix=None):
        """Rank-k update/downdate: ``A + C diag(d) C^T`` (CHOLMOD ``updown``).

        A downdate that leaves a non-positive pivot raises :class:`SolverError` (the
        caller refactorizes); later solves that fail the accuracy check fall back to a
        fresh factorization (:attr:`derived`).
        """
        d = np.asarray(d, dtype=float)
        C = _csc(C)
        new = self._factor.copy()
        pos, neg = d > 0, d < 0
        try:
            if pos.any():
                new.update_inplace(_scaled_columns(C, pos, np.sqrt(d[pos])), subtract=False)
            if neg.any():
                new.update_inplace(_scaled_columns(C, neg, np.sqrt(-d[neg])), subtract=True)
        except _cholmod_errors() as exc:
            raise SolverError(f"CHOLMOD up/downdate failed ({exc}); refactorize") from exc
        if not np.all(new.D() > 0):
            raise SolverError("CHOLMOD downdate lost positive definiteness; refactorize")
        out = CholmodCholesky(self.updated_matrix(C, d, matrix), _factor=new)
        out.derived = True
        return out
