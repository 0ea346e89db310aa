"""The settings of the two solvers, each option with one meaning across the library.

Three kinds of tolerance and iteration count are in play; each has its own name:

================================  ============================================================
``tol``                           relative feature residual ``||r(x)|| / ||t||`` at which an
                                  image counts as reconstructed (every strategy, the
                                  certificate, ``crelu reconstruct --tol``)
``LayerwiseSettings.cg_tol``      relative normal-equation residual of each layer's
                                  least-squares solve (Python only)
``*.cg_iterations``               CGLS iterations per least-squares solve: per layer
                                  (``LayerwiseSettings``) or per Gauss-Newton step
                                  (``JointSettings``) (``--cg-iterations``)
``JointSettings.max_steps``       Gauss-Newton steps (``--max-steps``)
================================  ============================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from invert.errors import UserError, UserTypeError
from invert.validation import check_positive, check_positive_int

__all__ = ["JointSettings", "LayerwiseSettings", "feature_tol"]

RELU_MODES = ("naive", "active", "constrained")
CONV_SOLVERS = ("auto", "cg", "fft")
POOLINGS = ("recorded", "model")


def _choice(value, name: str, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {choices}; got {value!r}")


@dataclass(frozen=True)
class LayerwiseSettings:
    """How the layer-wise walk (the paper's Algorithm 1) undoes each layer.

    Parameters
    ----------
    relu : {"active", "constrained", "naive"}
        ReLU layers: the active units as equations (default), plus the inactive ones as
        inequalities (``"constrained"``, the most faithful, 10-100x the cost), or the
        output taken as the pre-activation (``"naive"``).
    avr : {None, "naive"}
        AVR layers are refused unless ``"naive"`` (``|z|`` taken as ``z``: lossy).
    conv_solver : {"auto", "cg", "fft"}
        Conv solves: FFT for circular padding and CGLS otherwise (``"auto"``), or force one.
    cg_iterations : int
        CGLS iterations per layer's least-squares solve.
    cg_tol : float, optional
        Relative normal-equation residual of each layer's solve (default 1e-12 in float64,
        1e-5 in float32). Not the feature residual ``tol``: a layer that is not a frame
        meets ``cg_tol`` and still misses the features.
    strict : bool
        Raise :class:`~invert.linalg.solvers.ConvergenceError` when a layer's solve stops
        at ``cg_iterations`` (default: report it in ``rec.layers``).

    Examples
    --------
    >>> LayerwiseSettings(relu="constrained").relu
    'constrained'
    >>> LayerwiseSettings(cg_iterations=0)
    Traceback (most recent call last):
    ...
    invert.errors.UserError: cg_iterations must be a positive int; got 0
    """

    relu: str = "active"
    avr: str | None = None
    conv_solver: str = "auto"
    cg_iterations: int = 1000
    cg_tol: float | None = None
    strict: bool = False

    def __post_init__(self):
        _choice(self.relu, "relu", RELU_MODES)
        _choice(self.avr, "avr", (None, "naive"))
        _choice(self.conv_solver, "conv_solver", CONV_SOLVERS)
        check_positive_int(self.cg_iterations, name="cg_iterations")
        if self.cg_tol is not None:
            check_positive(self.cg_tol, name="cg_tol")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JointSettings:
    """How the joint solve (every layer at once, projected Gauss-Newton) runs.

    Parameters
    ----------
    pooling : {"recorded", "model"}
        Max-pooling held at the switches recorded with the features (default: the map is
        piecewise linear) or decided by the network's own max; the certificate's map too.
    prior_weight : float
        Weight of the prior (``prior="tv"``) against the squared relative feature residual;
        the prior is measured in units of the image's side, so a weight means the same at
        any size (default 3e-4).
    max_steps : int, optional
        Gauss-Newton steps; default 50, and 5 without a prior where counting shows the map
        is not injective (no step count makes the image unique there).
    cg_iterations : int
        CGLS iterations per Gauss-Newton step.

    Examples
    --------
    >>> JointSettings(max_steps=10).max_steps
    10
    >>> JointSettings(pooling="max")
    Traceback (most recent call last):
    ...
    invert.errors.UserError: pooling must be one of ('recorded', 'model'); got 'max'
    """

    pooling: str = "recorded"
    prior_weight: float = 3e-4
    max_steps: int | None = None
    cg_iterations: int = 500

    def __post_init__(self):
        _choice(self.pooling, "pooling", POOLINGS)
        check_positive(self.prior_weight, name="prior_weight")
        check_positive_int(self.max_steps, name="max_steps", allow_none=True)
        check_positive_int(self.cg_iterations, name="cg_iterations")

    def as_dict(self) -> dict:
        return asdict(self)


def settings_of(value, cls):
    """``value`` if it is a ``cls``, ``cls()`` for None; a one-line error for anything else."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise UserTypeError(f"expected {cls.__name__} or None; got {type(value).__name__}")
    return value


def feature_tol(tol, feats_dtype: torch.dtype, dtype: torch.dtype) -> float:
    """The relative feature residual taken as converged: ``tol``, else ``1e-10`` when both
    the features and the computation are float64 and ``1e-5`` otherwise (float32 features
    carry ~1e-7 of rounding).

    Examples
    --------
    >>> f64, f32 = torch.float64, torch.float32
    >>> feature_tol(None, f64, f64), feature_tol(None, f32, f64)
    (1e-10, 1e-05)
    """
    if tol is None:
        exact = feats_dtype == torch.float64 and dtype == torch.float64
        return 1e-10 if exact else 1e-5
    return check_positive(tol, name="tol")
