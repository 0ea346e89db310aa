"""Linear algebra on tensors: the conv operator, least-squares solvers, pooling switches,
extreme eigenvalues of matrix-free operators.

Torch only: nothing here knows about models, data or files.
"""

from .operators import ConvOperator
from .solvers import (
    ConvergenceError,
    ConvergenceWarning,
    SolveInfo,
    bounded_least_squares,
    default_tol,
    fft_least_squares,
    least_squares,
)
from .spectrum import Spectrum, extreme_eigenvalues

__all__ = [
    "ConvOperator",
    "ConvergenceError",
    "ConvergenceWarning",
    "SolveInfo",
    "Spectrum",
    "bounded_least_squares",
    "default_tol",
    "extreme_eigenvalues",
    "fft_least_squares",
    "least_squares",
]
