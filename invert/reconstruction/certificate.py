"""The certificate of a reconstruction: feature residual and frame bounds of the map at it.

For each image, at the reconstruction ``x``:

* ``residual``: the relative feature residual ``||r(x)|| / ||t||`` of the map the joint
  solver inverts (:class:`~invert.reconstruction.layer_map.LayerMap`; max-pooling as
  the solve held it), and ``model_residual``: the same misfit for the model's own
  forward pass against the recorded activation (its own max-pooling);
* ``A`` and ``B``: the smallest and largest eigenvalues of ``J^T J``, ``J`` the Jacobian
  of that map at ``x`` (:func:`~invert.linalg.spectrum.extreme_eigenvalues`, the one
  eigenvalue engine; ``A = 0`` without a solve when counting shows ``rank(J) <= m < n``).
  Where the solver says no image converged, or a prior was used, nothing can be certified
  unique and the Lanczos run stops on ``B``: ``A`` is then the smallest Ritz value so far,
  marked not resolved (most of the cost is ``A``'s: VGG-16 ``features.15`` at 64 px,
  stalled, spent 26 s of 32 on it).
  A product with ``J^T J`` costs a pass through the network, so the dense matrix (``n``
  products) is built only where it costs no more than the Lanczos budget
  (``n <= max_iter``, 500); Lanczos beyond. A float64 run from a random start needs
  100-300 products on VGG-16 (0.6 s each at 224 px on 2 CPU cores), so a float32 run
  (a sixth of the cost there) goes first, to 3/4 of the tolerance, and its extreme Ritz
  vectors are checked in float64: their Rayleigh quotients and residuals (two products)
  are ``A``, ``B`` and their residuals when they meet the tolerance; else a float64
  Lanczos run starts from them. The float32 run's noise floor is ``16 eps32 B``: float32
  products of VGG-16 ``features.8`` at 224 px differ from float64 ones by ``2.3e-7`` of
  their size, and its Ritz residuals agree with the float64 ones to ``3e-6 A`` (2-core
  Xeon, 2026-12-06: :func:`jacobian_bounds` 30.6 s, against 33.1 s back to back for the
  float32 run stopped at ``sqrt(n) eps32 B`` (255 products) and 15 float64 ones; a start from
  the solver's last error directions in place of a random one took 240-320, no gain);
* ``unique``: the residual is at the tolerance, ``A`` was resolved, no prior was used,
  and ``A / B >= 1000 n eps`` (:func:`unique_threshold`). Float64 eigenvalues of
  ``J^T J`` carry an absolute error of about ``n eps B``; the threshold keeps ``A`` three
  orders of magnitude above that noise.

What ``unique = True`` proves, and what it does not:

* ``J`` has full column rank at ``x``, so ``x`` is a *locally* unique solution: no other
  input within a neighbourhood of ``x`` gives the same features (inverse function
  theorem; for a piecewise-linear net -- ReLU, CReLU, max-pooling at fixed switches --
  the neighbourhood is the linear region of ``x``, on which the map is affine with
  matrix ``J``). If the true input lies in that region, it *is* ``x`` up to an error of
  about ``||r|| / sqrt(A)`` (to first order).
* Nothing global: other inputs in other linear regions may give the same features.
  With ``pooling="recorded"`` the statement is about the network with those switches.
* A Lanczos ``A`` is the smallest Ritz value, an upper estimate of the smallest
  eigenvalue (see :mod:`invert.linalg.spectrum`); only the dense method is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from invert.linalg.spectrum import extreme_eigenvalues

from .layer_map import model_residual
from .result import Certificate, CertificateRow

__all__ = [
    "Certificate",
    "CertificateRow",
    "JacobianBounds",
    "certify",
    "jacobian_bounds",
    "unique_threshold",
]

_EPS = torch.finfo(torch.float64).eps
_FLOAT32_TOL = 1e-4  # the tightest Ritz tolerance a float32 run can meet
_FLOAT32_FLOOR = 16 * torch.finfo(torch.float32).eps  # its Ritz residuals' floor, x B


def unique_threshold(n: int) -> float:
    """The smallest ``A / B`` taken as resolved in float64 for ``n`` unknowns: ``1000 n eps``."""
    return 1000 * n * _EPS


@dataclass
class JacobianBounds:
    """``A``, ``B`` of ``J^T J`` per image, with how each ``A`` was obtained."""

    A: list[float]
    B: list[float]
    method: list[str]
    resolved: list[bool]
    rank_bound: list[int]
    input_dim: int
    iterations: int
    residual_A: list[float]
    residual: list[float]  # the relative feature residual at ``x`` (from the same pass)

    @property
    def ratio(self) -> list[float]:
        return [a / b if b > 0 else 0.0 for a, b in zip(self.A, self.B)]


def jacobian_bounds(layer_map, x, *, method="auto", tol=1e-2, max_iter=500,
                    need_A=None) -> JacobianBounds:  # fmt: skip
    """Extreme eigenvalues of ``J^T J`` at ``x`` for every image of an entered ``layer_map``.

    ``A = 0`` by counting where ``rank(J) <= m < n`` (no Lanczos run for it); otherwise
    :func:`~invert.linalg.spectrum.extreme_eigenvalues` (``tol``: relative Ritz residual);
    ``method="auto"``: dense where its ``n`` products are within the Lanczos budget
    ``max_iter``, else Lanczos. ``need_A``: per image, whether ``A`` is wanted (default:
    all); where no image wants it, Lanczos stops on ``B`` alone and ``A`` is the smallest
    Ritz value so far, marked not resolved.
    """
    n = math.prod(layer_map.input_shape)
    if method == "auto":  # each product is a pass through the network: count them
        method = "dense" if n <= max_iter else "lanczos"
    rank = layer_map.rank_bound().tolist()
    deficient = [r < n for r in rank]
    wanted = [True] * len(rank) if need_A is None else [bool(w) for w in need_A]
    smallest, start = any(w and not d for w, d in zip(wanted, deficient)), 0
    if method == "lanczos" and x.dtype == torch.float64 and tol >= _FLOAT32_TOL:
        start = _float32_ritz_vectors(layer_map, x, smallest=smallest, tol=tol, max_iter=max_iter)
    with torch.no_grad():
        lin = layer_map.linearize(x, layer_map.all)
        residual = layer_map.relative(lin.r, layer_map.all).cpu().tolist()
        spec = extreme_eigenvalues(
            lambda v: lin.vjp(lin.jvp(v)), layer_map.input_shape, batch=x.shape[0],
            method=method, smallest=smallest, tol=tol, max_iter=max_iter, dtype=x.dtype,
            device=x.device, start=start,
        )  # fmt: skip
    exact = spec.method == "dense"
    return JacobianBounds(
        A=[0.0 if d else float(a) for d, a in zip(deficient, spec.smallest)],
        B=spec.largest.tolist(),
        method=[f"{spec.method} (A = 0 by counting)" if d else spec.method if smallest or exact
                else f"{spec.method} (A not resolved: nothing to certify)" for d in deficient],
        resolved=[d or exact or (smallest and bool(c)) for d, c in zip(deficient, spec.converged)],
        rank_bound=rank, input_dim=n, iterations=spec.iterations,
        residual_A=[0.0 if d else float(r) for d, r in zip(deficient, spec.residual_smallest)],
        residual=residual,
    )  # fmt: skip


def _float32_ritz_vectors(layer_map, x, *, smallest, tol, max_iter) -> torch.Tensor:
    """The extreme Ritz vectors ``(N, 2, *shape)`` of a float32 run from a random start to
    3/4 of the tolerance, for the float64 run to check (float32 products cost a sixth)."""
    with layer_map.twin(torch.float32) as low, torch.no_grad():
        lin = low.linearize(x.to(torch.float32), low.all)
        pre = extreme_eigenvalues(
            lambda v: lin.vjp(lin.jvp(v)), layer_map.input_shape, batch=x.shape[0],
            method="lanczos", smallest=smallest, tol=0.75 * tol, max_iter=max_iter,
            floor=_FLOAT32_FLOOR, dtype=torch.float32, device=x.device,
        )  # fmt: skip
    return pre.vectors.to(x.device)


def certify(
    layer_map,
    x: torch.Tensor,
    *,
    tol: float,
    converged=None,
    notes=None,
    prior: str | None = None,
    method: str = "auto",
    eig_tol: float = 1e-2,
    max_iter: int = 500,
) -> Certificate:
    """The certificate of ``x`` for every image of ``layer_map`` (see the module notes).

    ``converged`` (per image, default: residual <= tol) and ``notes`` (per image, a
    reason the solve gives for not being certified, or None) come from the solver.
    """
    # A decides only for a converged solve without a prior (the Lanczos run for A is most
    # of the certificate's cost: VGG-16 features.15 at 64 px, stalled, 26 s of 32)
    need_A = None
    if converged is not None:
        need_A = [bool(c) and prior is None for c in converged]
    bounds = jacobian_bounds(layer_map, x, method=method, tol=eig_tol, max_iter=max_iter,
                             need_A=need_A)  # fmt: skip
    n = bounds.input_dim
    threshold = unique_threshold(n)
    residual = bounds.residual
    own = model_residual(layer_map, x).tolist()
    rows = []
    for i in range(len(residual)):
        ok = residual[i] <= tol if converged is None else bool(converged[i])
        a, b, ratio = bounds.A[i], bounds.B[i], bounds.ratio[i]
        note = notes[i] if notes is not None and notes[i] else None
        if note is None and prior is not None:
            note = f"prior {prior!r}: a regularised solution, not certified as the inverse"
        if note is None and not ok:
            note = f"not converged: residual {residual[i]:.1e} > tol {tol:.0e}"
        if note is None and bounds.rank_bound[i] < n:
            note = f"not injective at x: rank(J) <= {bounds.rank_bound[i]} < {n} unknowns"
        if note is None and not bounds.resolved[i]:
            note = (f"A not resolved by Lanczos in {bounds.iterations} products (Ritz "
                    f"residual {bounds.residual_A[i]:.1e})")  # fmt: skip
        if note is None and ratio < threshold:
            note = f"A/B = {ratio:.1e} below the float64 threshold {threshold:.1e}"
        unique = note is None
        rows.append(CertificateRow(
            residual=residual[i], model_residual=own[i], A=a, B=b, ratio=ratio,
            unique=unique, converged=ok, eigen_method=bounds.method[i],
            note="locally unique (A > 0, residual at tol)" if unique else note,
        ))  # fmt: skip
    return Certificate(rows, tol=tol, threshold=threshold)
