"""Linear algebra on tensors: the conv operator, least-squares solvers, pooling switches.

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

__all__ = [
    "ConvOperator",
    "ConvergenceError",
    "ConvergenceWarning",
    "SolveInfo",
    "bounded_least_squares",
    "default_tol",
    "fft_least_squares",
    "least_squares",
]
