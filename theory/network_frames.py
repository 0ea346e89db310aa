"""Frame bounds of a whole network at an input: the spectrum of ``J^T J`` up to a layer.

A conv layer ``T`` has frame bounds ``A ||x||^2 <= ||T x||^2 <= B ||x||^2``
(:mod:`theory.frames`). A stack of layers is not linear, but at an input ``x`` its map
``f_L`` to a layer has a Jacobian ``J``, and the same inequality for ``J`` defines the
*network frame bounds at x*: ``A`` and ``B`` are the smallest and largest eigenvalues of
``J^T J``. ``A > 0`` means ``f_L`` is locally injective at ``x``; ``B / A`` is the squared
condition number of recovering ``x`` from the features near ``x``. For a piecewise-linear
network (ReLU, CReLU, max-pooling with its switches held fixed) ``J`` is the matrix of the
affine map on the linear region of ``x``.

``J`` is the Jacobian of the map the joint solver inverts
(:class:`invert.reconstruction.layer_map.LayerMap`): for a CReLU layer the pre-activation
(whose ``J^T J`` equals that of the CReLU output), for a ReLU layer the active units
(the rows of the ReLU output's own Jacobian), otherwise the layer's output. Computed
matrix-free from ``jvp``/``vjp`` (:func:`invert.linalg.spectrum.extreme_eigenvalues`:
dense where its ``n`` products fit the Lanczos budget ``max_iter``, Lanczos beyond, as in
the certificate's :func:`~invert.reconstruction.certificate.jacobian_bounds`; ``A = 0`` by
counting where the chain passes through fewer values than the input has).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from invert.device import resolve_device
from invert.reconstruction import features
from invert.reconstruction.certificate import jacobian_bounds
from invert.reconstruction.layer_map import LayerMap
from invert.validation import check_dtype

__all__ = ["NetworkFrameBounds", "network_frame_bounds"]


@dataclass(frozen=True)
class NetworkFrameBounds:
    """Frame bounds of the map to ``layer`` at each image.

    Attributes
    ----------
    A, B, ratio : torch.Tensor
        ``(N,)`` float64: smallest and largest eigenvalues of ``J^T J`` and ``A / B``.
    method : list of str
        Per image: ``"dense"``, ``"lanczos"``, or either with ``"(A = 0 by counting)"``.
    resolved : list of bool
        Whether each ``A`` is exact, counted, or a converged Lanczos value.
    rank_bound : list of int
        Upper bound on ``rank(J)`` by counting.
    input_dim : int
        Number of unknowns ``n``.
    layer : str
    """

    A: torch.Tensor
    B: torch.Tensor
    ratio: torch.Tensor
    method: list[str]
    resolved: list[bool]
    rank_bound: list[int]
    input_dim: int
    layer: str


def network_frame_bounds(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str,
    pooling: str = "recorded",
    method: str = "auto",
    tol: float = 1e-2,
    max_iter: int = 500,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> NetworkFrameBounds:
    """Frame bounds ``A``, ``B`` of the whole stack up to ``layer`` at each image of ``x``.

    Parameters
    ----------
    model : nn.Module
        Any model autograd can differentiate up to the layer.
    x : torch.Tensor
        ``(N, C, H, W)`` inputs (for zoo models: images in [0, 1]).
    layer : str
        A module name.
    pooling : {"recorded", "model"}, optional
        Max-pooling at the switches of ``x`` (the same almost everywhere) or the model's max.
    method : {"auto", "dense", "lanczos"}, optional
        See the module notes.
    tol, max_iter : optional
        Lanczos: relative Ritz residual and iterations.
    dtype, device : optional
        float64 by default; ``device=None``: CUDA when available, else CPU.

    Returns
    -------
    NetworkFrameBounds

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from invert import CReLU
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), CReLU(),
    ...                     nn.Conv2d(8, 2, 3, padding=1)).double()  # 2 x 36 < 4 x 36
    >>> fb = network_frame_bounds(net, torch.rand(1, 1, 6, 6, dtype=torch.float64), layer="2")
    >>> bool(fb.A[0] > 0), bool(fb.B[0] >= fb.A[0]), fb.method
    (True, True, ['dense'])
    """
    check_dtype(dtype)
    feats = features(model, x, layer=layer)
    device = resolve_device(device)
    with LayerMap(model, feats, pooling=pooling, dtype=dtype, device=device) as lm:
        x = x.to(device=lm.device, dtype=lm.dtype)
        bounds = jacobian_bounds(lm, x, method=method, tol=tol, max_iter=max_iter)
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return NetworkFrameBounds(
        A=as_tensor(bounds.A), B=as_tensor(bounds.B), ratio=as_tensor(bounds.ratio),
        method=bounds.method, resolved=bounds.resolved, rank_bound=bounds.rank_bound,
        input_dim=bounds.input_dim, layer=layer,
    )  # fmt: skip
