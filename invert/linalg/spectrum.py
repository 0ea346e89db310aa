"""Extreme eigenvalues of a batch of symmetric positive semi-definite operators: the one
engine of the toolkit (frame bounds, pooling metrics and the certificate use it).

:func:`extreme_eigenvalues` takes a batched ``matvec``: ``matvec(v)`` maps ``(N, *shape)``
to ``(N, *shape)`` and applies operator ``i`` to ``v[i]`` (e.g. ``J_i^T J_i`` of a
network's Jacobian at image ``i``, from ``jvp``/``vjp``; or ``T^T T`` of a conv layer).
Two methods, with one threshold between them (``"auto"``: dense up to
:data:`DENSE_MAX_DIM` unknowns, Lanczos beyond):

* ``"dense"``: the matrix itself, column by column (``n`` products), and
  ``torch.linalg.eigvalsh`` in float64: exact up to rounding (absolute error about
  ``n eps lambda_max``); every eigenvalue comes back (:attr:`Spectrum.values`).
* ``"lanczos"``: Lanczos with full reorthogonalisation, one Krylov basis per sample, all
  samples advanced together (one ``matvec`` per iteration). The recurrence and the Ritz
  values are float64 whatever the precision of the products (``dtype``). The extreme Ritz
  values of the tridiagonal matrix are the estimates; each comes with its a-posteriori
  residual ``rho = ||M y - theta y||`` (``beta_k |s_k|``), so an eigenvalue of ``M`` lies
  within ``rho`` of it. A Ritz value never lies outside the spectrum: the smallest one is
  an *upper* estimate of the smallest eigenvalue (an eigenvector orthogonal to the whole
  Krylov space would stay unseen; a random start makes that unlikely, it does not
  exclude it). A sample stops when ``rho_max <= tol * theta_max`` and
  ``rho_min <= tol * theta_min + floor * theta_max`` (``floor``: by default the float64
  noise level ``16 sqrt(n) eps``, below which ``theta_min`` is indistinguishable from 0).
  Given approximate extreme eigenvectors (``start``), their Rayleigh quotients and
  residuals -- the same estimates, by the same test -- come first, from two products.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from invert.errors import UserError, UserTypeError

from .operators import DENSE_MAX_DIM

__all__ = ["DENSE_MAX_DIM", "Spectrum", "extreme_eigenvalues"]

_BASIS_BYTES = 1 << 30  # Lanczos basis memory cap
_CHECK_EVERY = 5
_METHODS = ("auto", "lanczos", "dense")


@dataclass
class Spectrum:
    """Smallest and largest eigenvalues, per sample.

    Attributes
    ----------
    smallest, largest : torch.Tensor
        ``(N,)`` float64 on the CPU.
    residual_smallest, residual_largest : torch.Tensor
        ``(N,)`` a-posteriori residual norms of the Ritz pairs (0 for ``"dense"``).
    converged : torch.Tensor
        ``(N,)`` bool.
    iterations : int
        Operator products used (per sample).
    method : str
        ``"lanczos"`` or ``"dense"``.
    values : torch.Tensor or None
        ``"dense"``: every eigenvalue, ``(N, n)`` float64 ascending (not clamped);
        ``None`` for ``"lanczos"``.
    vectors : torch.Tensor or None
        ``"lanczos"``: the Ritz vectors of the smallest and largest Ritz values,
        ``(N, 2, *shape)`` float64 (e.g. the start of a run in higher precision);
        ``None`` for ``"dense"``.
    """

    smallest: torch.Tensor
    largest: torch.Tensor
    residual_smallest: torch.Tensor
    residual_largest: torch.Tensor
    converged: torch.Tensor
    iterations: int
    method: str
    values: torch.Tensor | None = None
    vectors: torch.Tensor | None = None


def _dense(matvec, shape, n_samples, dtype, device) -> Spectrum:
    n = math.prod(shape)
    m = torch.empty(n_samples, n, n, dtype=torch.float64, device=device)
    for j in range(n):
        e = torch.zeros(n_samples, n, dtype=dtype, device=device)
        e[:, j] = 1
        m[:, :, j] = matvec(e.view(n_samples, *shape)).reshape(n_samples, n)
    values = torch.linalg.eigvalsh((m + m.mT) / 2).cpu()
    zero = torch.zeros(n_samples, dtype=torch.float64)
    return Spectrum(values[:, 0].clamp(min=0), values[:, -1], zero, zero.clone(),
                    torch.ones(n_samples, dtype=torch.bool), n, "dense", values)  # fmt: skip


def _ritz(alphas, betas, k):
    """Extreme Ritz values of the k x k tridiagonal matrices, with their residual bounds and
    their eigenvectors ``(N, 2, k)`` (smallest, largest)."""
    from scipy.linalg import eigh_tridiagonal

    a = torch.stack(alphas[:k], 1).cpu().numpy()
    b = torch.stack(betas[:k], 1).cpu().numpy()
    out = torch.zeros(4, a.shape[0], dtype=torch.float64)
    tri_vectors = torch.zeros(a.shape[0], 2, k, dtype=torch.float64)
    for i in range(a.shape[0]):
        for j, end in enumerate((0, k - 1)):
            if k == 1:
                theta, s = a[i, :1], np.ones((1, 1))
            else:
                theta, s = eigh_tridiagonal(a[i], b[i, : k - 1], select="i",
                                            select_range=(end, end))  # fmt: skip
            out[j, i] = float(theta[0])
            out[2 + j, i] = abs(float(b[i, k - 1] * s[-1, 0]))
            tri_vectors[i, j] = torch.from_numpy(np.ascontiguousarray(s[:, 0]))
    return out[0], out[1], out[2], out[3], tri_vectors


def _start(start, shape, n_samples, device) -> torch.Tensor:
    """Unit start vectors ``(N, n)`` in float64: given, or random from a seed."""
    n = math.prod(shape)
    if isinstance(start, torch.Tensor):
        q = start.reshape(n_samples, n).to(device, torch.float64)
    else:
        gen = torch.Generator(device="cpu").manual_seed(int(start))
        q = torch.randn(n_samples, n, generator=gen, dtype=torch.float64).to(device)
    return q / torch.linalg.vector_norm(q, dim=1, keepdim=True)


def _met(lo, hi, r_lo, r_hi, *, tol, floor, smallest) -> torch.Tensor:
    """Per sample, whether the Ritz pairs meet the tolerance (see the module notes)."""
    ok = r_hi <= tol * hi
    if smallest:
        ok = ok & (r_lo <= tol * lo.clamp(min=0) + floor * hi)
    return ok


def _rayleigh_ritz(matvec, vectors, shape, n_samples, dtype, device, **criterion):
    """The Rayleigh quotients and residuals of given (smallest, largest) vectors, with
    products in ``dtype``: a :class:`Spectrum` when every sample meets the tolerance, else
    ``None``. Two products in place of a Lanczos run (e.g. checking in float64 the Ritz
    vectors of a float32 run)."""
    n = math.prod(shape)
    y = vectors.reshape(n_samples, 2, n).to(device, torch.float64)
    y = y / torch.linalg.vector_norm(y, dim=2, keepdim=True)
    theta, rho = [], []
    for j in range(2):
        w = matvec(y[:, j].to(dtype).view(n_samples, *shape)).reshape(n_samples, n).double()
        theta.append(torch.linalg.vecdot(w, y[:, j]))
        rho.append(torch.linalg.vector_norm(w - theta[-1][:, None] * y[:, j], dim=1))
    lo, hi, r_lo, r_hi = (t.cpu() for t in (*theta, *rho))
    ok = _met(lo, hi, r_lo, r_hi, **criterion)
    if not bool(ok.all()):
        return None
    return Spectrum(lo.clamp(min=0), hi, r_lo, r_hi, ok, 2, "lanczos",
                    vectors=y.view(n_samples, 2, *shape).cpu())  # fmt: skip


def _lanczos(matvec, shape, n_samples, dtype, device, *, tol, floor, max_iter, start,
             smallest) -> Spectrum:  # fmt: skip
    n = math.prod(shape)
    if isinstance(start, torch.Tensor) and start.dim() == len(shape) + 2:  # Ritz vectors
        criterion = dict(tol=tol, floor=floor, smallest=smallest)
        checked = _rayleigh_ritz(matvec, start, shape, n_samples, dtype, device, **criterion)
        if checked is not None:
            return checked
        start = start[:, 0] + start[:, 1]
    itemsize = torch.finfo(dtype).bits // 8
    k_max = max(2, min(max_iter, n, _BASIS_BYTES // max(1, n_samples * n * itemsize)))
    q = _start(start, shape, n_samples, device)
    basis = torch.zeros(n_samples, k_max, n, dtype=dtype, device=device)
    alphas, betas = [], []
    alive = torch.ones(n_samples, dtype=torch.bool, device=device)
    prev = torch.zeros_like(q)
    beta_prev = torch.zeros(n_samples, dtype=torch.float64, device=device)
    converged = torch.zeros(n_samples, dtype=torch.bool)
    scale = torch.zeros(n_samples, dtype=torch.float64, device=device)
    k = 0
    for k in range(1, k_max + 1):
        basis[:, k - 1] = q
        w = matvec(q.to(dtype).view(n_samples, *shape)).reshape(n_samples, n)
        w = w.to(torch.float64, copy=True)  # ours to change in place
        # in place: on 3M-pixel inputs every temporary vector is 25 MB
        w.addcmul_(prev, beta_prev[:, None], value=-1)
        alpha = torch.linalg.vecdot(w, q)
        w.addcmul_(q, alpha[:, None], value=-1)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            coefficients = torch.einsum("nkd,nd->nk", basis[:, :k], w.to(dtype))
            w.sub_(torch.einsum("nk,nkd->nd", coefficients, basis[:, :k]))
        beta = torch.linalg.vector_norm(w, dim=1)
        scale = torch.maximum(scale, alpha.abs())
        broke = beta <= 1e-13 * torch.clamp(scale, min=torch.finfo(torch.float64).tiny)
        alive = alive & ~broke  # an invariant subspace: the Ritz values are exact
        alphas.append(torch.where(alive | broke, alpha, torch.zeros_like(alpha)))
        betas.append(torch.where(alive, beta, torch.zeros_like(beta)))
        if k % _CHECK_EVERY == 0 or k < _CHECK_EVERY or k == k_max or not bool(alive.any()):
            lo, hi, r_lo, r_hi, _ = _ritz(alphas, betas, k)
            ok = _met(lo, hi, r_lo, r_hi, tol=tol, floor=floor, smallest=smallest)
            converged = ok | ~alive.cpu()
            if bool(converged.all()):
                break
        prev, beta_prev = q, torch.where(alive, beta, torch.ones_like(beta))
        q = w.div_(beta_prev[:, None])
        q[~alive] = 0
    lo, hi, r_lo, r_hi, tri_vectors = _ritz(alphas, betas, k)
    vectors = torch.einsum("njk,nkd->njd", tri_vectors.to(device), basis[:, :k].to(torch.float64))
    return Spectrum(lo.clamp(min=0), hi, r_lo, r_hi, converged, k, "lanczos",
                    vectors=vectors.view(n_samples, 2, *shape).cpu())  # fmt: skip


def extreme_eigenvalues(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    *,
    batch: int = 1,
    method: str = "auto",
    smallest: bool = True,
    tol: float = 1e-3,
    floor: float | None = None,
    max_iter: int = 500,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    start: int | torch.Tensor = 0,
) -> Spectrum:
    """Smallest and largest eigenvalues of ``batch`` symmetric PSD operators.

    Parameters
    ----------
    matvec : callable
        ``matvec(v)``: ``(batch, *shape) -> (batch, *shape)``, operator ``i`` on ``v[i]``;
        symmetric positive semi-definite.
    shape : tuple of int
        Per-sample shape of the vectors (``n = prod(shape)`` unknowns).
    batch : int, optional
        Number of operators.
    method : {"auto", "lanczos", "dense"}, optional
        ``"auto"``: dense for ``n <= DENSE_MAX_DIM``, else Lanczos (see the module notes).
    smallest : bool, optional
        False when only the largest eigenvalue is wanted (Lanczos then stops on it alone;
        the smallest is still reported, unconverged).
    tol : float, optional
        Lanczos: relative residual of the Ritz values (see the module notes).
    floor : float, optional
        Lanczos: a residual of the smallest Ritz value up to ``floor * theta_max`` is
        accepted whatever its size (default: the float64 noise level ``16 sqrt(n) eps``).
    max_iter : int, optional
        Lanczos iterations (capped by ``n`` and by 1 GiB of basis).
    dtype, device : optional
        Of the vectors ``matvec`` sees (and of the Lanczos basis); the recurrence, the
        dense matrix and the eigenvalues are float64.
    start : int or torch.Tensor, optional
        Lanczos: the start vectors ``(batch, *shape)``, or the seed of random ones; or
        approximate extreme eigenvectors ``(batch, 2, *shape)`` (smallest, largest; e.g.
        :attr:`Spectrum.vectors` of a run in lower precision): their Rayleigh quotients
        and residuals come first (two products), and where every sample meets ``tol``
        they are the answer, with no Lanczos run; else Lanczos starts from their sum.

    Returns
    -------
    Spectrum

    Examples
    --------
    >>> import torch
    >>> m = torch.randn(2, 30, 20, dtype=torch.float64)
    >>> gram = m.mT @ m
    >>> spec = extreme_eigenvalues(lambda v: (gram @ v[..., None])[..., 0], (20,), batch=2,
    ...                            method="lanczos", tol=1e-10)
    >>> exact = torch.linalg.eigvalsh(gram)
    >>> bool(torch.allclose(spec.smallest, exact[:, 0])), bool(spec.converged.all())
    (True, True)
    >>> dense = extreme_eigenvalues(lambda v: (gram @ v[..., None])[..., 0], (20,), batch=2)
    >>> dense.method, bool(torch.allclose(dense.values, exact))
    ('dense', True)
    """
    if method not in _METHODS:
        raise UserError(f"method must be 'auto', 'lanczos' or 'dense'; got {method!r}")
    if not callable(matvec):
        raise UserTypeError("matvec must be callable: (batch, *shape) -> (batch, *shape)")
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise UserError(f"shape must be a non-empty tuple of positive ints; got {shape}")
    if not tol > 0 or not isinstance(max_iter, int) or max_iter < 1:
        raise UserError(f"tol must be > 0 and max_iter a positive int; got {tol}, {max_iter}")
    n = math.prod(shape)
    if method == "dense" or (method == "auto" and n <= DENSE_MAX_DIM):
        return _dense(matvec, shape, batch, dtype, device)
    if floor is None:
        floor = 16 * math.sqrt(n) * torch.finfo(torch.float64).eps
    return _lanczos(matvec, shape, batch, dtype, device, tol=tol, floor=floor,
                    max_iter=max_iter, start=start, smallest=smallest)  # fmt: skip
