"""How good a reconstruction is, and how much of the input was recoverable at all.

:func:`reconstruction_metrics` returns, per sample:

``relative_error``
    ``||x' - x|| / ||x||`` in image space.
``projection_error``, ``recoverable``
    The part of the input that Proposition 2.1 says is recoverable. For one conv +
    CReLU layer it is the projection of the input onto the span of the shifted filters,
    ``P x = T^+ T x``. For any path of layers we define it as (our definition): with
    ``u`` the input after the model's leading exactly invertible affine layers
    (``Normalize``, dropout/identity: the space the first conv reads) and ``J`` the
    Jacobian of the features with respect to ``u`` at ``x``, ``P u = J^+ J u``: the
    orthogonal projection of ``u`` onto the row space of ``J``, i.e. the component
    that the features determine to first order. It reduces to ``T^+ T u`` for one
    conv + CReLU layer (CReLU's Jacobian is injective), to the span of the active rows
    for ReLU, and of the switch rows under max-pooling. ``x_P`` is ``P u`` mapped back
    to image space; ``projection_error = ||x' - x_P|| / ||x_P||`` (0 when the
    reconstruction recovers exactly that part) and ``recoverable = ||P u|| / ||u||``.
    Through several non-injective layers the layer-by-layer walk of
    :func:`~invert.reconstruction.reconstruct_layerwise` can lose more than ``J`` does, and
    ``projection_error`` measures how much. ``P u`` is computed matrix-free with CGLS on
    ``J`` (the joint map's products, :class:`~.layer_map.LayerMap`), independently of the walk.
``feature_error``
    ``||f(x') - f|| / ||f||``: how well the reconstruction reproduces the features it
    was computed from.
``psnr``, ``ssim``
    :func:`skimage.metrics.peak_signal_noise_ratio` and
    :func:`skimage.metrics.structural_similarity` with the given ``data_range`` (1 for
    zoo models, which read images in [0, 1]). The number is not capped (a bit-exact
    reconstruction has PSNR ``inf``); text shows it with :func:`psnr_text`, which
    writes anything above :data:`PSNR_CAP` (100 dB: an RMS error below 1e-5 of the
    range, exact to float64 rounding for every purpose here) as ``> 100 dB``. SSIM
    uses a 7x7 window, smaller for smaller images, and is ``nan`` below 3x3.

Cost: ``projection`` (the recoverable part) is one more CGLS solve per sample, on the
Jacobian of the whole path, and often costs more than the reconstruction itself; the
command line computes it only with ``--projection``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from invert.display import PSNR_CAP, psnr_text  # noqa: F401 (re-exported: one convention)
from invert.errors import UserError, UserTypeError
from invert.linalg.solvers import least_squares
from invert.nn.net import EVAL_IDENTITY, Normalize

from .features import features, graph_of
from .result import Reconstruction

__all__ = ["PSNR_CAP", "psnr_text", "reconstruction_metrics", "recoverable_part"]


class _InputSpace:
    """``J_u = J_x diag(std)``: the Jacobian of the features with respect to ``u``, the input
    after a leading ``Normalize`` (``x = std u + mean``), from the map's own products."""

    def __init__(self, lin, std: torch.Tensor, shape):
        self.lin, self.std = lin, std
        self.in_shape, self.out_shape = tuple(shape), tuple(lin.r.shape[1:])

    def apply(self, v):
        return self.lin.jvp(v * self.std)

    def adjoint(self, w):
        return self.lin.vjp(w) * self.std


def _leading_normalize(model: nn.Module, feats) -> Normalize | None:
    """The ``Normalize`` that the path starts with (after identities), if any."""
    places = graph_of(model, feats).places
    for step in feats.steps:
        module = places[step.name].module
        if isinstance(module, Normalize):
            return module
        if not isinstance(module, EVAL_IDENTITY):
            return None
    return None


def recoverable_part(
    model: nn.Module,
    x: torch.Tensor,
    feats,
    *,
    cg_tol: float | None = None,
    cg_iterations: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_P`` and ``||P u|| / ||u||``: the part of ``x`` the features determine (see above).

    ``cg_tol``, ``cg_iterations``: of the CGLS solve on the Jacobian (normal-equation
    residual; default by dtype).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from invert.nn.activations import CReLU
    >>> from invert.reconstruction import features
    >>> model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), CReLU()).double()
    >>> x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    >>> x_p, frac = recoverable_part(model, x, features(model, x, layer="1"))
    >>> bool(frac < 1)  # two filters cannot see three channels
    True
    """
    from .layer_map import LayerMap

    norm = _leading_normalize(model, feats)
    ones = torch.ones(1, x.shape[1], 1, 1, dtype=x.dtype, device=x.device)
    std = norm.std.to(x).view(1, -1, 1, 1) if norm is not None else ones
    mean = norm.mean.to(x).view(1, -1, 1, 1) if norm is not None else 0 * ones
    with LayerMap(model, feats, dtype=x.dtype, device=x.device) as lm, torch.no_grad():
        lin = lm.linearize(x, lm.all)
        jac = _InputSpace(lin, std, x.shape[1:])
        u = (x - mean) / std
        pu, _ = least_squares(jac, jac.apply(u), tol=cg_tol, max_iter=cg_iterations)
        x_p = x - std * (u - pu)  # the discarded part, mapped back through the Normalize
    fraction = (pu.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)).double().cpu()
    return x_p, fraction


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return math.nan
    from skimage.metrics import structural_similarity  # imports scipy.stats: seconds

    return float(structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=win))


def reconstruction_metrics(
    model: nn.Module,
    x: torch.Tensor,
    rec: Reconstruction,
    *,
    data_range: float = 1.0,
    projection: bool = True,
    cg_tol: float | None = None,
    cg_iterations: int = 1000,
) -> list[dict]:
    """Quality metrics of a reconstruction, one dict per sample (see the module notes).

    Parameters
    ----------
    model : nn.Module
        The model the reconstruction inverted.
    x : torch.Tensor
        The original input, ``(N, C, H, W)``.
    rec : Reconstruction
        From :func:`invert.reconstruction.reconstruct`.
    data_range : float, optional
        Dynamic range of the images for PSNR and SSIM (1 for images in [0, 1]).
    projection : bool, optional
        Also compute the recoverable part (one CGLS solve on the Jacobian).
    cg_tol, cg_iterations : optional
        Of that solve: its normal-equation residual and CGLS iterations.

    Returns
    -------
    list of dict
        Keys ``relative_error``, ``projection_error``, ``recoverable``,
        ``feature_error``, ``psnr``, ``ssim`` (projection keys only with ``projection``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from invert.nn.activations import CReLU
    >>> from invert.reconstruction import features, reconstruct
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), CReLU()).double()
    >>> x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    >>> rec = reconstruct(model, features(model, x, layer="1"), device="cpu")
    >>> m = reconstruction_metrics(model, x, rec)[0]
    >>> m["relative_error"] < 1e-8, m["psnr"] > 100, round(m["recoverable"], 6)
    (True, True, 1.0)
    """
    from skimage.metrics import peak_signal_noise_ratio  # imports scipy.stats: seconds

    if not isinstance(rec, Reconstruction):
        raise UserTypeError(f"rec must be a Reconstruction; got {type(rec).__name__}")
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(rec.image.shape):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserError(f"x must have the reconstruction's shape {tuple(rec.image.shape)}; "
                         f"got {shape}")  # fmt: skip
    if not torch.isfinite(x).all():
        raise UserError("x contains NaN or Inf")
    if not data_range > 0:
        raise UserError(f"data_range must be positive; got {data_range}")
    feats = rec.features
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else x.dtype
    device = param.device if param is not None else x.device
    x_m = x.to(device=device, dtype=dtype)
    image = rec.image.detach().to(device=device, dtype=dtype)
    ref = x.detach().double().cpu()
    out = rec.image.detach().double().cpu()
    rows = [
        {"relative_error": float((o - r).norm() / r.norm()) if r.norm() > 0 else math.nan}
        for o, r in zip(out, ref)
    ]
    if projection:
        x_p, fraction = recoverable_part(
            model, x_m, feats, cg_tol=cg_tol, cg_iterations=cg_iterations
        )
        x_p = x_p.double().cpu()
        for row, o, p, f in zip(rows, out, x_p, fraction):
            row["projection_error"] = float((o - p).norm() / p.norm()) if p.norm() > 0 else math.nan
            row["recoverable"] = float(f)
    target = feats.activation.detach().double().cpu()
    again = features(model, image, layer=feats.layer).activation.double().cpu()
    for row, a, t in zip(rows, again, target):
        row["feature_error"] = float((a - t).norm() / t.norm()) if t.norm() > 0 else math.nan
    for row, o, r in zip(rows, out.numpy(), ref.numpy()):
        with np.errstate(divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # log10(inf) on exact images
            row["psnr"] = float(peak_signal_noise_ratio(r, o, data_range=data_range))
        row["ssim"] = _ssim(r, o, data_range)
    return rows
