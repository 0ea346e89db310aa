"""Minimum-norm least squares for convolution operators, matrix-free and by FFT.

Proposition 2.1 of the paper reconstructs the part of an input spanned by the shifts of
the filters: with ``z = T x + b`` known (exactly, from a CReLU output), the
reconstruction is ``x' = T^+ (z - b)``, the minimum-norm least-squares solution. Two
solvers compute it for a :class:`~invert.linalg.operators.ConvOperator` ``T``:

* :func:`least_squares`, matrix-free, for any padding and for a subset of the
  equations (a boolean ``mask`` over the outputs: the rows selected by max-pooling
  switches). It runs CGLS, i.e. conjugate gradients on the normal equations
  ``T^T M T x = T^T M t`` in the form that never forms ``T^T T`` and updates the
  data residual ``r = M (t - T x)`` (Bjorck's numerically preferred variant of
  CGNR; mathematically identical to LSQR, simpler to batch). Started from 0 every
  iterate lies in ``range(T^T M)``, so the limit is the *minimum-norm* solution.
* :func:`fft_least_squares`, direct, for circular padding: the operator is block
  diagonal in the Fourier basis (see :mod:`invert.linalg.operators`), so ``T^+`` is the
  pseudo-inverse of one small matrix ``K(w)`` per frequency.

The stopping rule is the relative residual of the normal equations,
``||T^T M (t - T x)|| / ||T^T M t||`` per sample, which is zero exactly at the
least-squares solutions whether or not the system is consistent. Since
``||x - x*|| / ||x*|| <= kappa^2 * residual`` on the recoverable part (``kappa`` the
condition number of ``T`` restricted to ``range(T^T)``), the default tolerances
(``1e-12`` in float64, ``1e-5`` in float32) give errors near ``kappa^2`` times that.
A solve that stops at ``max_iter`` before reaching the tolerance is reported, never
hidden: ``info.converged`` is ``False`` for that sample and a
:class:`ConvergenceWarning` names the residual reached, or, with ``strict=True``, a
:class:`ConvergenceError` is raised.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from invert.errors import UserError, UserTypeError

from .operators import ConvOperator

__all__ = [
    "least_squares",
    "fft_least_squares",
    "bounded_least_squares",
    "SolveInfo",
    "ConvergenceWarning",
    "ConvergenceError",
    "default_tol",
]


class ConvergenceWarning(RuntimeWarning):
    """A least-squares solve stopped before reaching its tolerance."""


class ConvergenceError(RuntimeError):
    """A least-squares solve stopped before reaching its tolerance (``strict=True``).

    The partial solution and its :class:`SolveInfo` are attached as ``.x`` and ``.info``.
    """

    def __init__(self, message: str, x: torch.Tensor, info: SolveInfo):
        super().__init__(message)
        self.x = x
        self.info = info


@dataclass
class SolveInfo:
    """What a least-squares solve did, per sample of the batch.

    Attributes
    ----------
    residual : torch.Tensor
        ``(N,)`` relative residual of the normal equations
        ``||T^T M (t - T x)|| / ||T^T M t||`` (absolute when the denominator is 0).
    data_residual : torch.Tensor
        ``(N,)`` relative data misfit ``||M (t - T x)|| / ||M t||``: 0 when the
        selected equations are consistent (exact features), positive otherwise.
    iterations : torch.Tensor
        ``(N,)`` iterations used (0 for the direct FFT solve).
    converged : torch.Tensor
        ``(N,)`` bool, ``residual <= tol``.
    equations : torch.Tensor
        ``(N,)`` number of equations (selected outputs).
    unknowns : int
        Number of unknowns per sample, ``prod(in_shape)``.
    method : str
        ``"cgls"`` or ``"fft"``.
    tol : float
        The tolerance the solve aimed at.
    rank : int or None
        Rank of ``T`` as seen by the solve (FFT path: number of singular values above
        the cutoff); ``None`` when not computed.
    violation : torch.Tensor or None
        ``(N,)`` largest violation of the bounds by ``T x`` relative to ``max |T x|``
        (bounded solves only).
    """

    residual: torch.Tensor
    data_residual: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    equations: torch.Tensor
    unknowns: int
    method: str
    tol: float
    rank: int | None = None
    violation: torch.Tensor | None = None

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def summary(self) -> dict:
        """Batch summary as plain Python numbers (worst sample where it matters)."""
        return {
            "method": self.method,
            "residual": float(self.residual.max()),
            "data_residual": float(self.data_residual.max()),
            "iterations": int(self.iterations.max()),
            "converged": self.all_converged,
            "equations": int(self.equations.min()),
            "unknowns": self.unknowns,
            "rank": self.rank,
            "violation": None if self.violation is None else float(self.violation.max()),
        }


def default_tol(dtype: torch.dtype) -> float:
    """Default relative normal-equation tolerance: 1e-12 in float64, 1e-5 otherwise."""
    return 1e-12 if dtype == torch.float64 else 1e-5


# --- validation -------------------------------------------------------------------------


def _check_target(op, target: torch.Tensor) -> None:
    if not isinstance(target, torch.Tensor):
        raise UserTypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
    if not target.is_floating_point():
        raise UserTypeError(f"target must be floating point; got {target.dtype}")
    shape = tuple(op.out_shape)
    if target.dim() != len(shape) + 1 or tuple(target.shape[1:]) != shape:
        raise UserError(
            f"target must have shape (N, {', '.join(map(str, shape))}) for this operator; "
            f"got {tuple(target.shape)}"
        )
    if not torch.isfinite(target).all():
        raise UserError("target contains NaN or Inf; reconstruct from finite features")


def _check_mask(mask, target: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise UserTypeError("mask must be a bool tensor selecting the equations (outputs) to use")
    if tuple(mask.shape) == tuple(target.shape[1:]):
        mask = mask.unsqueeze(0)
    elif tuple(mask.shape) != tuple(target.shape):
        raise UserError(
            f"mask must have the output shape {tuple(target.shape[1:])} or the target shape "
            f"{tuple(target.shape)}; got {tuple(mask.shape)}"
        )
    return mask.to(target.device)


def _prepare(op, target: torch.Tensor):
    _check_target(op, target)
    if hasattr(op, "to"):
        op = op.to(device=target.device, dtype=target.dtype)
    return op


def _norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def _sqnorms(t: torch.Tensor) -> torch.Tensor:
    flat = t.flatten(1)
    return (flat * flat).sum(1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _residuals(op, x, b, mask, ref=None):
    """Normal-equation and data residuals of x, relative, per sample (``ref``: the norms of
    ``T^T b`` where known)."""
    r = b - op.apply(x)
    if mask is not None:
        r = r * mask
    if ref is None:
        ref = _norms(op.adjoint(b))
        ref = torch.where(ref > 0, ref, torch.ones_like(ref))
    return _relative(op.adjoint(r), r, b, ref)


def _data_residual(r, b):
    """``|r| / |b|`` per sample (a zero ``b`` counts as 1)."""
    bn = _norms(b)
    return _norms(r) / torch.where(bn > 0, bn, torch.ones_like(bn))


def _relative(s, r, b, ref):
    """Normal-equation residual ``|s| / ref`` and data residual ``|r| / |b|``, per sample."""
    return _norms(s) / ref, _data_residual(r, b)


def _report(x, info: SolveInfo, strict: bool, what: str):
    if info.all_converged:
        return
    bad = (~info.converged).nonzero().flatten().tolist()
    worst = float(info.residual[bad].max())
    message = (
        f"{what} did not reach the relative normal-equation residual {info.tol:.1e} "
        f"for {len(bad)} of {len(info.converged)} samples (worst residual reached "
        f"{worst:.3e} after {int(info.iterations.max())} iterations); raise max_iter or tol"
    )
    if strict:
        raise ConvergenceError(message, x, info)
    warnings.warn(message, ConvergenceWarning, stacklevel=3)


# --- CGLS ----------------------------------------------------------------------------------


def _sample_tol(tol, target: torch.Tensor, name="tol"):
    """The tolerance as a float or a per-sample tensor, and its largest value."""
    if tol is None:
        tol = default_tol(target.dtype)
    if isinstance(tol, torch.Tensor) and tol.dim() == 1:
        if tol.shape[0] != target.shape[0] or not bool((tol > 0).all()):
            raise UserError(f"a {name} tensor must hold {target.shape[0]} positive values, "
                             "one per sample")  # fmt: skip
        tol = tol.to(device=target.device, dtype=torch.float64)
        return tol, float(tol.max())
    tol = float(tol)
    if not tol > 0:
        raise UserError(f"{name} must be positive; got {tol}")
    return tol, tol


def least_squares(
    op: ConvOperator,
    target: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    tol: float | torch.Tensor | None = None,
    max_iter: int = 1000,
    x0: torch.Tensor | None = None,
    residual_tol: float | torch.Tensor | None = None,
    strict: bool = False,
) -> tuple[torch.Tensor, SolveInfo]:
    """Minimum-norm solution of ``min_x ||M (T x) - M t||^2``, matrix-free (CGLS).

    Parameters
    ----------
    op : ConvOperator
        The operator ``T`` (any object with ``apply``, ``adjoint``, ``in_shape`` and
        ``out_shape`` works; the batch must not mix samples).
    target : torch.Tensor
        ``t``, shape ``(N, *op.out_shape)``, float32 or float64, on any device; the
        operator is moved to its device and dtype.
    mask : torch.Tensor, optional
        Bool, shape ``op.out_shape`` or ``target.shape``: the equations (outputs) to
        use, e.g. from :func:`invert.linalg.switches.switch_equations`. ``None``: all.
    tol : float or torch.Tensor, optional
        Stop a sample when ``||T^T M (t - T x)|| / ||T^T M t|| <= tol``; default
        :func:`default_tol` of the dtype. A ``(N,)`` tensor gives each sample its own
        (``info.tol`` is then the largest).
    max_iter : int, optional
        Iteration limit (each costs one ``T`` and one ``T^T``).
    x0 : torch.Tensor, optional
        Starting point. From 0 (default) the result is the minimum-norm solution;
        from ``x0`` it is the least-squares solution closest to ``x0``.
    residual_tol : float or torch.Tensor, optional
        Also stop a sample once its data residual ``||M (t - T x)|| / ||M t||`` is at
        ``residual_tol`` (a float, or one value per sample), as LSQR's ``btol`` does: a
        consistent system needs no more (e.g. a Gauss-Newton step whose linear model
        already meets the outer tolerance). Such a sample counts as converged.
    strict : bool, optional
        Raise :class:`ConvergenceError` instead of warning when a sample does not
        converge.

    Returns
    -------
    x : torch.Tensor
        ``(N, *op.in_shape)``.
    info : SolveInfo
        Residuals, iterations, convergence, equations and unknowns per sample.

    Examples
    --------
    >>> import torch
    >>> from invert.linalg.operators import ConvOperator
    >>> op = ConvOperator(torch.randn(8, 2, 3, 3, dtype=torch.float64), 6, padding=1)
    >>> x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    >>> x_rec, info = least_squares(op, op.apply(x))
    >>> bool(info.converged.all()), bool(torch.allclose(x_rec, x, atol=1e-8))
    (True, True)
    """
    op = _prepare(op, target)
    mask = _check_mask(mask, target)
    n = target.shape[0]
    tol, tol_value = _sample_tol(tol, target)
    btol = 0.0 if residual_tol is None else _sample_tol(residual_tol, target, "residual_tol")[0]
    if not isinstance(max_iter, int) or max_iter < 0:
        raise UserError(f"max_iter must be a non-negative int; got {max_iter!r}")

    def forward(v):
        y = op.apply(v)
        return y * mask if mask is not None else y

    b = target * mask if mask is not None else target

    def fits(r):  # the data residual at residual_tol (never without one: no extra norm)
        if residual_tol is None:
            return torch.zeros(n, dtype=torch.bool, device=target.device)
        return _data_residual(r, b) <= btol

    if x0 is None:
        x = torch.zeros(n, *op.in_shape, dtype=target.dtype, device=target.device)
    else:
        if tuple(x0.shape) != (n, *op.in_shape):
            raise UserError(f"x0 must have shape {(n, *op.in_shape)}; got {tuple(x0.shape)}")
        x = x0.to(device=target.device, dtype=target.dtype).clone()
    if x0 is None:  # from 0: r = b, and T^T b is both the first residual and the reference
        r, s = b, op.adjoint(b)
        ref = _norms(s)
    else:
        ref = _norms(op.adjoint(b))
        r = b - forward(x)
        s = op.adjoint(r)
    ref = torch.where(ref > 0, ref, torch.ones_like(ref))
    p = s.clone()
    gamma = _sqnorms(s)
    iterations = torch.zeros(n, dtype=torch.long, device=target.device)
    done = (torch.sqrt(gamma) / ref <= tol) | fits(r)
    restarts = torch.zeros(n, dtype=torch.long, device=target.device)
    # the true residuals of each sample at its current x, where computed (r and s are
    # exact at the start; later only the verification computes them)
    normal, data = _relative(s, r, b, ref)
    known = torch.ones(n, dtype=torch.bool, device=target.device)
    for _ in range(max_iter):
        if bool(done.all()):
            break
        active = ~done
        known = known & done
        q = forward(p)
        qq = _sqnorms(q)
        alpha = torch.where(active & (qq > 0), gamma / torch.where(qq > 0, qq, 1), 0)
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * q
        s = op.adjoint(r)
        gamma_new = _sqnorms(s)
        iterations += active.long()
        claim = active & ((torch.sqrt(gamma_new) / ref <= tol) | fits(r))
        if bool(claim.any()):
            # the recursive residual drifts from the true one: verify, restart if needed
            r_true = b - forward(x)
            s_true = op.adjoint(r_true)
            normal_true, data_true = _relative(s_true, r_true, b, ref)
            true_ok = (normal_true <= tol) | (data_true <= btol)
            done = done | (claim & true_ok)
            normal = torch.where(claim, normal_true, normal)
            data = torch.where(claim, data_true, data)
            known = known | claim
            redo = claim & ~true_ok
            if bool(redo.any()):
                restarts += redo.long()
                keep = _bcast(redo, r)
                r = torch.where(keep, r_true, r)
                s = torch.where(_bcast(redo, s), s_true, s)
                gamma_new = torch.where(redo, _sqnorms(s_true), gamma_new)
                gamma = torch.where(redo, torch.zeros_like(gamma), gamma)  # beta = 0
                done = done | (redo & (restarts > 5))  # stagnated at attainable accuracy
        beta = torch.where(gamma > 0, gamma_new / torch.where(gamma > 0, gamma, 1), 0)
        p = s + _bcast(beta, p) * p
        gamma = gamma_new

    if not bool(known.all()):  # stopped at max_iter: one more pass gives the true values
        normal, data = _residuals(op, x, b, mask, ref)
    equations = (
        mask.expand_as(target).flatten(1).sum(1)
        if mask is not None
        else torch.full((n,), target[0].numel(), device=target.device)
    )
    info = SolveInfo(
        residual=normal.detach().double().cpu(),
        data_residual=data.detach().double().cpu(),
        iterations=iterations.cpu(),
        converged=((normal <= tol) | (data <= btol)).cpu(),
        equations=equations.cpu(),
        unknowns=math.prod(op.in_shape),
        method="cgls",
        tol=tol_value,
    )
    _report(x, info, strict, "least_squares (CGLS)")
    return x, info


# --- FFT (circular padding) ----------------------------------------------------------------


def _rows_per_chunk(op: ConvOperator, itemsize: int, n: int) -> int:
    fw = op.polyphase_size[1] // 2 + 1
    cin = op.in_channels * op.stride[0] * op.stride[1]
    per_row = fw * (op.out_channels * cin * 3 + (op.out_channels + cin) * n) * itemsize
    return max(1, min(op.polyphase_size[0], (64 << 20) // max(per_row, 1)))


def fft_least_squares(
    op: ConvOperator,
    target: torch.Tensor,
    *,
    rcond: float | None = None,
    rows_per_chunk: int | None = None,
    tol: float | None = None,
    strict: bool = False,
) -> tuple[torch.Tensor, SolveInfo]:
    """Minimum-norm least squares ``x = T^+ t`` for circular padding, direct, by FFT.

    With the polyphase split and ``torch.fft.rfft2`` (see :mod:`invert.linalg.operators`),
    ``fft2(T x)(w) = K(w) fft2(polyphase(x))(w)``, and both maps are unitary up to a
    common scale, so ``T^+`` acts as ``K(w)^+`` on each frequency. Singular values of
    ``K(w)`` below ``rcond * sigma_max`` (``sigma_max`` = the largest over *all*
    frequencies, i.e. ``||T||``) are treated as zero, exactly as
    ``numpy.linalg.pinv(T_dense, rcond)``. Only the ``rfft2`` half of the frequencies
    is solved (``K(-w) = conj K(w)`` for real filters), ``rows_per_chunk`` rows at a time.

    Parameters
    ----------
    op : ConvOperator
        A circular-padding operator.
    target : torch.Tensor
        ``(N, *op.out_shape)``.
    rcond : float, optional
        Relative cutoff; default ``eps * max(C_out, C_in s_h s_w)``.
    rows_per_chunk : int, optional
        Frequency rows per batch of SVDs (default: about 64 MB of work per chunk).
    tol : float, optional
        Tolerance used to flag ``info.converged`` (default :func:`default_tol`).
    strict : bool, optional
        Raise :class:`ConvergenceError` instead of warning if the residual exceeds ``tol``.

    Returns
    -------
    x : torch.Tensor
        ``(N, *op.in_shape)``.
    info : SolveInfo
        ``method="fft"``, ``iterations`` 0, and ``rank``, the rank of ``T``.

    Examples
    --------
    >>> import torch
    >>> from invert.linalg.operators import ConvOperator
    >>> w = torch.randn(8, 2, 3, 3, dtype=torch.float64)
    >>> op = ConvOperator(w, 8, padding=1, padding_mode="circular")
    >>> x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    >>> x_rec, info = fft_least_squares(op, op.apply(x))
    >>> bool(torch.allclose(x_rec, x)), info.rank
    (True, 128)
    """
    if not isinstance(op, ConvOperator):
        raise UserTypeError(f"fft_least_squares needs a ConvOperator; got {type(op).__name__}")
    if op.padding_mode != "circular":
        raise UserError(
            "fft_least_squares needs circular padding; use least_squares for zero padding"
        )
    op = _prepare(op, target)
    tol = default_tol(target.dtype) if tol is None else float(tol)
    n = target.shape[0]
    (mh, mw), sh, sw = op.polyphase_size, *op.stride
    cin = op.in_channels * sh * sw
    if rcond is None:
        rcond = torch.finfo(target.dtype).eps * max(op.out_channels, cin)
    chunk = rows_per_chunk or _rows_per_chunk(op, target.element_size() * 2, n)
    if not isinstance(chunk, int) or chunk < 1:
        raise UserError(f"rows_per_chunk must be a positive int; got {rows_per_chunk!r}")
    starts = range(0, mh, chunk)

    def rows_of(start):
        return torch.arange(start, min(start + chunk, mh))

    # pass 1: the largest singular value over all frequencies sets the global cutoff
    sigma_max = 0.0
    for start in starts:
        sv = torch.linalg.svdvals(op.symbol(rows_of(start)))
        sigma_max = max(sigma_max, float(sv.max()) if sv.numel() else 0.0)
    cutoff = rcond * sigma_max

    spectrum = torch.fft.rfft2(target)  # (N, C_out, Mh, Fw)
    fw = spectrum.shape[-1]
    solution = torch.zeros(n, cin, mh, fw, dtype=spectrum.dtype, device=target.device)
    # every rfft column but w_w = 0 (and Mw/2 when Mw is even) stands for two frequencies
    weight = torch.full((fw,), 2, dtype=torch.long)
    weight[0] = 1
    if mw % 2 == 0:
        weight[-1] = 1
    rank = 0
    for start in starts:
        rows = rows_of(start)
        k = op.symbol(rows)  # (R, Fw, C_out, C_in')
        u, sv, vh = torch.linalg.svd(k, full_matrices=False)
        keep = sv > cutoff
        inv = torch.where(keep, 1 / torch.where(keep, sv, torch.ones_like(sv)), 0)
        y = spectrum[:, :, rows.to(target.device)].permute(2, 3, 1, 0)  # (R, Fw, C_out, N)
        coef = (u.mH @ y) * inv.to(y.dtype)[..., None]
        x_hat = vh.mH @ coef  # (R, Fw, C_in', N)
        solution[:, :, rows.to(target.device)] = x_hat.permute(3, 2, 0, 1)
        rank += int((keep.sum(-1).cpu() * weight).sum())
    xp = torch.fft.irfft2(solution, s=(mh, mw))
    x = op.unpolyphase(xp)

    normal, data = _residuals(op, x, target, None)
    info = SolveInfo(
        residual=normal.detach().double().cpu(),
        data_residual=data.detach().double().cpu(),
        iterations=torch.zeros(n, dtype=torch.long),
        converged=(normal <= tol).cpu(),
        equations=torch.full((n,), target[0].numel()),
        unknowns=math.prod(op.in_shape),
        method="fft",
        tol=tol,
        rank=rank,
    )
    _report(x, info, strict, "fft_least_squares")
    return x, info


# --- bounds on the outputs: augmented Lagrangian + semismooth Newton -------------------------


def _check_bound(bound, target: torch.Tensor, what: str) -> torch.Tensor | None:
    if bound is None:
        return None
    if not isinstance(bound, torch.Tensor) or not bound.is_floating_point():
        raise UserTypeError(f"{what} must be a floating-point tensor (use +-inf for no bound)")
    if tuple(bound.shape) == tuple(target.shape[1:]):
        bound = bound.unsqueeze(0)
    if tuple(bound.shape) != tuple(target.shape):
        raise UserError(f"{what} must have the target's shape {tuple(target.shape)}; "
                         f"got {tuple(bound.shape)}")  # fmt: skip
    if torch.isnan(bound).any():
        raise UserError(f"{what} contains NaN")
    return bound.to(device=target.device, dtype=target.dtype).expand_as(target)


class _RowWeighted:
    """``diag(sqrt(w)) T``: weighted least squares through the plain solver."""

    def __init__(self, op, sqrt_weight: torch.Tensor):
        self.op, self.sw = op, sqrt_weight
        self.in_shape, self.out_shape = op.in_shape, op.out_shape

    def apply(self, x):
        return self.sw * self.op.apply(x)

    def adjoint(self, y):
        return self.op.adjoint(self.sw * y)


class _AugmentedLagrangian:
    """The state of :func:`bounded_least_squares`: data rows, bounds, multipliers, penalty.

    Its subproblem at penalty ``rho`` is ``1/2 ||M(Tx - t)||^2 + rho/2 ||(Tx - u +
    lambda_u / rho)_+||^2 + rho/2 ||(l - Tx + lambda_l / rho)_+||^2`` on the rows that
    have a bound; all methods are batched over the samples.
    """

    def __init__(self, op, target, mask, lower, upper, tol, max_iter):
        self.op, self.target, self.tol, self.max_iter = op, target, tol, max_iter
        self.eq = mask.expand_as(target).to(target.dtype) if mask is not None else (
            torch.ones_like(target)
        )  # fmt: skip
        self.bounds = []  # (finite?, value, multiplier, sign): sign +1 for upper bounds
        for bound, sign in ((upper, 1.0), (lower, -1.0)):
            if bound is not None:
                finite = torch.isfinite(bound)
                value = torch.where(finite, bound, 0)
                self.bounds.append([finite, value, torch.zeros_like(target), sign])
        self.rho = 1.0
        self.tiny = torch.finfo(target.dtype).tiny
        self.scale = _norms(op.adjoint(self.eq * target))
        self.newton_steps = torch.zeros(target.shape[0], dtype=torch.long)
        self.grad_rel = torch.zeros(target.shape[0], dtype=target.dtype, device=target.device)

    def _excess(self, tx, finite, value, lam, sign):
        """``(sign (Tx - value) + lambda / rho)_+`` on the bounded rows."""
        return torch.where(finite, torch.relu(sign * (tx - value) + lam / self.rho), 0)

    def piece(self, tx):
        """Row weights and targets of the quadratic piece at the current violated sets."""
        weight, rhs = self.eq.clone(), self.eq * self.target
        for finite, value, lam, sign in self.bounds:
            active = (finite & (sign * (tx - value) + lam / self.rho > 0)) * self.rho
            weight, rhs = weight + active, rhs + active * (value - sign * lam / self.rho)
        return weight, rhs

    def objective(self, tx):
        total = _sqnorms(self.eq * (tx - self.target))
        for bound in self.bounds:
            total = total + self.rho * _sqnorms(self._excess(tx, *bound))
        return total / 2

    def gradient(self, tx):
        g = self.eq * (tx - self.target)
        for bound in self.bounds:
            g = g + bound[3] * self.rho * self._excess(tx, *bound)
        return self.op.adjoint(g)

    def relative_gradient(self, tx, rhs):
        """The subproblem's gradient at ``x``, relative to the data's scale."""
        level = torch.maximum(self.scale, _norms(self.op.adjoint(rhs)))
        return _norms(self.gradient(tx)) / torch.clamp(level, min=self.tiny)

    def violation(self, tx):
        """The largest bound violation of ``Tx``, relative to ``max |Tx|``."""
        over = torch.zeros_like(tx)
        for finite, value, _, sign in self.bounds:
            over = torch.maximum(over, torch.where(finite, sign * (tx - value), 0))
        level = torch.clamp(tx.flatten(1).abs().amax(1), min=self.tiny)
        return over.flatten(1).amax(1) / level

    def solve_piece(self, weight, rhs, x0=None):
        sw = torch.sqrt(weight)
        target = torch.where(weight > 0, rhs / torch.clamp(weight, min=1), 0)
        op = _RowWeighted(self.op, sw)
        return least_squares(op, sw * target, tol=self.tol, max_iter=self.max_iter, x0=x0)[0]

    def minimise(self, x, tx, max_newton):
        """Semismooth Newton on the subproblem from ``x``; returns the new ``(x, Tx)``."""
        solved = None  # weights of the piece whose minimiser x is
        for _ in range(max_newton):
            weight, rhs = self.piece(tx)
            self.grad_rel = self.relative_gradient(tx, rhs)
            same = solved is not None and bool(torch.equal(weight, solved))
            if bool((self.grad_rel <= self.tol).all()) or same:
                break  # x minimises the piece it lies on: a stationary point
            # the piece solved warm-started from x: the step of least norm (from 0 the
            # steps are long, the line search short and the iteration cycles)
            direction = self.solve_piece(weight, rhs, x0=x) - x
            # backtracking (Armijo) on the subproblem objective
            step, f0 = 1.0, self.objective(tx)
            slope = (self.gradient(tx) * direction).flatten(1).sum(1)
            for _ in range(30):
                cand = x + step * direction
                t_cand = self.op.apply(cand)
                if bool((self.objective(t_cand) <= f0 + 1e-4 * step * slope + 1e-14 * f0).all()):
                    break
                step /= 2
            x, tx = cand, t_cand
            self.newton_steps += 1
            solved = weight if step == 1.0 else None  # only a full step lands on the minimiser
        return x, tx

    def update_multipliers(self, tx, *, stiffen: bool) -> None:
        for bound in self.bounds:
            finite, value, lam, sign = bound
            bound[2] = torch.where(finite, torch.relu(lam + self.rho * sign * (tx - value)), 0)
        if stiffen:
            self.rho = min(self.rho * 10, 1e6)

    def least_norm_end(self, x, tx):
        """The minimum-norm minimiser of the final piece, for the samples where it loses
        nothing (as feasible, fits the data as well)."""
        weight, rhs = self.piece(tx)
        x_min = self.solve_piece(weight, rhs)
        t_min = self.op.apply(x_min)
        feas_tol = math.sqrt(self.tol)
        slack = feas_tol * _norms(self.eq * self.target)
        better = (self.violation(t_min) <= torch.clamp(self.violation(tx), min=feas_tol)) & (
            _norms(self.eq * (t_min - self.target)) <= _norms(self.eq * (tx - self.target)) + slack
        )
        if bool(better.any()):
            x = torch.where(_bcast(better, x), x_min, x)
            tx = torch.where(_bcast(better, tx), t_min, tx)
            self.grad_rel = torch.where(better, self.relative_gradient(tx, rhs), self.grad_rel)
        return x, tx

    def info(self, tx) -> SolveInfo:
        feas_tol = math.sqrt(self.tol)
        violation = self.violation(tx)
        b = self.eq * self.target
        bn = _norms(b)
        data = _norms(self.eq * tx - b) / torch.where(bn > 0, bn, torch.ones_like(bn))
        return SolveInfo(
            residual=self.grad_rel.detach().double().cpu(),
            data_residual=data.detach().double().cpu(),
            iterations=self.newton_steps,
            converged=((self.grad_rel <= feas_tol) & (violation <= feas_tol)).cpu(),
            equations=self.eq.flatten(1).sum(1).long().cpu(),
            unknowns=math.prod(self.op.in_shape),
            method="alm-newton",
            tol=self.tol,
            violation=violation.detach().double().cpu(),
        )


def bounded_least_squares(
    op: ConvOperator,
    target: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    max_newton: int = 30,
    max_outer: int = 30,
    strict: bool = False,
) -> tuple[torch.Tensor, SolveInfo]:
    """Least squares on selected outputs with bounds on the outputs.

    Solves ``min_x 1/2 ||M (T x - t)||^2`` subject to ``lower <= T x <= upper``
    (elementwise; ``+-inf`` or ``None`` for no bound): e.g. a ReLU layer's active units
    as equations and ``z <= 0`` on its inactive ones.

    Method: an augmented Lagrangian on the bounds (penalty ``rho``, starting at 1 and
    raised tenfold when the violation does not shrink fourfold; multipliers
    ``lambda >= 0``) whose subproblems ``min 1/2 ||M(Tx - t)||^2 + rho/2 ||(Tx - u +
    lambda / rho)_+||^2 + ...`` are convex, piecewise quadratic and C^1, minimised by
    semismooth Newton: on the current set of violated bounds the subproblem is an
    ordinary (row-weighted, masked) least-squares problem, solved exactly by
    :func:`least_squares` (warm-started CGLS), followed by a backtracking line search.
    This is an NNLS-style active-set method that needs only ``T`` and ``T^T``: each
    step is one exact matrix-free solve, and few steps are needed (the sets settle;
    with consistent data -- features computed by the model -- the first subproblem
    already is feasible and the multipliers stay 0). We preferred it to ADMM, which
    needs hundreds of such solves for the same accuracy, and to projected gradients,
    which cannot project onto ``{x : l <= T x <= u}``.

    Each Newton step solves its piece warm-started from the current ``x`` (the step of
    least norm; solving from 0 instead makes the steps long, the line search short and
    the Newton iteration cycle). Every step lies in ``range(T^T)``, and so does the
    result. At the end the final piece is solved once more from 0 and its minimum-norm
    minimiser replaces ``x`` for every sample where it is as feasible and fits the data
    as well: when no bound binds, the result is therefore exactly the minimum-norm
    solution of the constrained problem (for a ReLU layer: the minimum-norm solution of
    the active equations, which then satisfies every inactive bound); otherwise it is a
    solution in ``range(T^T)``, not necessarily the one of least norm.

    Returns ``(x, info)``; ``info.method`` is ``"alm-newton"``, ``info.iterations`` the
    Newton steps, ``info.residual`` the relative norm of the gradient of the last
    subproblem, ``info.violation`` the largest bound violation of ``T x`` relative to
    ``max |T x|``; converged means both are below ``sqrt(tol)`` (``tol`` defaults to
    :func:`default_tol`, which each inner solve uses: the penalty makes the outer
    iteration converge to about the square root of the inner accuracy).

    Examples
    --------
    >>> import torch
    >>> from invert.linalg.operators import ConvOperator
    >>> op = ConvOperator(torch.randn(6, 2, 3, 3, dtype=torch.float64), 6, padding=1)
    >>> x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    >>> z = op.apply(x)  # a ReLU layer sees relu(z): equations where z > 0, z <= 0 elsewhere
    >>> upper = torch.where(z > 0, float("inf"), 0.0)
    >>> x_rec, info = bounded_least_squares(op, z, mask=z > 0, upper=upper)
    >>> bool(info.converged.all()), float(info.data_residual) < 1e-9
    (True, True)
    """
    op = _prepare(op, target)
    mask = _check_mask(mask, target)
    lower = _check_bound(lower, target, "lower")
    upper = _check_bound(upper, target, "upper")
    if lower is not None and upper is not None and bool((lower > upper).any()):
        raise UserError("lower bounds exceed upper bounds: the constraints are infeasible")
    tol = default_tol(target.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise UserError(f"tol must be positive; got {tol}")
    problem = _AugmentedLagrangian(op, target, mask, lower, upper, tol, max_iter)
    feas_tol = math.sqrt(tol)
    x = torch.zeros(target.shape[0], *op.in_shape, dtype=target.dtype, device=target.device)
    tx = op.apply(x)
    last_violation = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # judged below
        for _ in range(max_outer):
            x, tx = problem.minimise(x, tx, max_newton)
            # stop once the bounds hold; else update the multipliers and, when the
            # violation does not shrink fast enough, stiffen the penalty
            violation = float(problem.violation(tx).max())
            if violation <= feas_tol:
                break
            problem.update_multipliers(tx, stiffen=violation > last_violation / 4)
            last_violation = violation
        x, tx = problem.least_norm_end(x, tx)
    info = problem.info(tx)
    _report(x, info, strict, "bounded_least_squares")
    return x, info
