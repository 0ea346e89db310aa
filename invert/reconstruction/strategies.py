"""The one entry point for reconstruction: :func:`reconstruct`, with a choice of strategy.

==============  ============================================================================
``"layerwise"`` the paper's Algorithm 1, one layer at a time
                (:func:`~invert.reconstruction.layerwise.reconstruct_layerwise`)
``"joint"``     every layer at once (:func:`~invert.reconstruction.joint.reconstruct_joint`)
``"auto"``      layer-wise, then a joint refinement started from it for the images whose
                relative feature residual is above ``tol``; each image gets the better of
                the two by feature residual (non-chains: joint only). A layer with fewer
                equations than unknowns makes the walk only a start, solved to ``1e-2``
                (:func:`~invert.reconstruction.layerwise.walk_start`); where the joint
                solve then neither reaches ``tol`` nor halves that start's residual, the
                full walk is run and compared instead
==============  ============================================================================

Every result of :func:`reconstruct` carries a certificate (one row per image, see
:mod:`invert.reconstruction.certificate`), the layer-wise one too: the frame bounds cost
a Lanczos run (about one more Gauss-Newton step), so the paper's function called by name,
:func:`~invert.reconstruction.layerwise.reconstruct_layerwise`, stays without one.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings

import torch
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.linalg.solvers import ConvergenceWarning
from invert.progress import say

from .features import Features
from .joint import check_bounds, check_options, finish, injectivity, solve_joint
from .layer_map import LayerMap
from .layerwise import reconstruct_layerwise, walk_start
from .result import Reconstruction
from .settings import JointSettings, LayerwiseSettings, settings_of

__all__ = ["STRATEGIES", "reconstruct", "reconstruct_joint"]

STRATEGIES = ("auto", "layerwise", "joint")


def _layerwise(model, feats, settings, dtype, device, *, start):
    """The layer-wise result, or (None, reason) where the walk cannot be taken; ``start``:
    the walk as the joint solve's start (:func:`~.layerwise.walk_start`)."""
    if not feats.chain:
        return None, "the layers are not a plain chain"
    try:
        with warnings.catch_warnings():  # its stopped solves are in its notes
            warnings.simplefilter("ignore", ConvergenceWarning)
            if start:
                return walk_start(model, feats, settings, dtype, device), None
            return reconstruct_layerwise(model, feats, layerwise=settings, dtype=dtype,
                                         device=device), None  # fmt: skip
    except UserError as error:
        return None, str(error)


def _residual(lm, x):
    with torch.no_grad():
        return lm.relative(lm.residual(x, lm.all), lm.all).cpu()


def reconstruct(
    model: nn.Module,
    feats: Features,
    *,
    strategy: str = "auto",
    prior: str | None = None,
    bounds=None,
    tol: float | None = None,
    joint: JointSettings | None = None,
    layerwise: LayerwiseSettings | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Reconstruction:
    """Reconstruct the model input from :func:`~invert.reconstruction.features`.

    Parameters
    ----------
    model : nn.Module
        The model the features came from (checked by fingerprint).
    feats : Features
        From :func:`~invert.reconstruction.features`.
    strategy : {"auto", "layerwise", "joint"}, optional
        See the module notes. ``"auto"`` (default) is never worse by feature residual than
        its layer-wise start, nor than ``"layerwise"`` where its joint solve gains less than
        half of the start's residual; with a ``prior`` it returns the joint result (the
        prior is what was asked for), with ``bounds`` the layer-wise images are first
        projected onto the box.
    prior, bounds : optional
        Of the joint solve (:func:`~invert.reconstruction.joint.reconstruct_joint`).
    tol : float, optional
        Relative feature residual taken as converged (default ``1e-10`` for float64
        features, ``1e-5`` for float32): when ``"auto"`` refines, when the joint solve
        stops, what the certificate calls converged.
    joint : JointSettings, optional
        The joint solve's settings (pooling, prior weight, steps, CGLS iterations per step).
    layerwise : LayerwiseSettings, optional
        The layer-wise walk's settings (ReLU mode, AVR, conv solver, CGLS per layer).
    dtype, device : optional
        float64 by default; ``device=None``: CUDA when available, else CPU.
    progress : bool, optional
        Show the Gauss-Newton steps on stderr.

    Returns
    -------
    Reconstruction
        ``rec.strategy`` says what made the images (``"joint"`` if the joint solve made
        any), ``rec.certificate`` has one row per image, ``rec.notes`` what to know and
        which setting acts on it, ``rec.diagnostics`` (``auto``) each strategy's residuals
        and the winner per image.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from invert import CReLU, features
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), CReLU(),  # 36 -> 144 values
    ...                     nn.Conv2d(8, 3, 3, padding=1), CReLU()).double()  # -> 108
    >>> x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    >>> rec = reconstruct(net, features(net, x, layer="3"), device="cpu")
    >>> rec.diagnostics["winner"], rec.certificate[0].unique
    (['joint'], True)
    >>> float((rec.image - x).norm() / x.norm()) < 1e-8
    True
    """
    if strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    options = dict(prior=prior, bounds=bounds, tol=tol, joint=joint, layerwise=layerwise,
                   dtype=dtype, device=device, progress=progress)  # fmt: skip
    return _reconstruct(model, feats, strategy, None, **options)


def _joint_defaults() -> dict:
    """``reconstruct``'s options that the joint solve takes, with their defaults."""
    joint = ("prior", "bounds", "tol", "joint", "dtype", "device", "progress")
    return {k: inspect.signature(reconstruct).parameters[k].default for k in joint}


def reconstruct_joint(model: nn.Module, feats: Features, *, x0=None, **options) -> Reconstruction:
    """:func:`reconstruct` with ``strategy="joint"``, optionally from a starting image.

    Parameters
    ----------
    model, feats
        As for :func:`reconstruct`; ``chain=False`` features work too.
    x0 : torch.Tensor, optional
        Starting image. Default: the layer-wise estimate when the features are a chain it
        can walk, else the mean of the model's :class:`~invert.nn.net.Normalize`, else
        zeros; where ``J = 0`` there (bias-free ReLU nets), plus seeded noise
        (``rec.start`` says which).
    **options
        ``prior``, ``bounds``, ``tol``, ``joint``, ``dtype``, ``device``, ``progress``:
        as for :func:`reconstruct`.

    Returns
    -------
    Reconstruction
        ``strategy="joint"``; ``rec.history`` has one row per Gauss-Newton step,
        ``rec.status`` how each image's solve ended.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from invert import CReLU, features
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), CReLU(),
    ...                     nn.Conv2d(8, 3, 3, padding=1), CReLU()).double()
    >>> x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    >>> near = x + 0.01 * torch.randn_like(x)
    >>> rec = reconstruct_joint(net, features(net, x, layer="3"), x0=near, device="cpu")
    >>> rec.start, float((rec.image - x).norm() / x.norm()) < 1e-8, rec.certificate.unique
    ('x0', True, [True, True])
    """
    defaults = _joint_defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UserTypeError(f"reconstruct_joint got unexpected options {unknown}; it takes "
                            f"x0 and {', '.join(defaults)}")  # fmt: skip
    return _reconstruct(model, feats, "joint", x0, **{**defaults, **options}, layerwise=None)


def _reconstruct(model, feats, strategy, x0, *, prior, bounds, tol, joint, layerwise, dtype,
                 device, progress):  # fmt: skip
    """:func:`reconstruct` (every option given), and the joint solve from ``x0`` (the
    layer-wise image by default)."""
    settings, tol = check_options(
        feats, prior=prior, tol=tol, joint=joint, dtype=dtype, progress=progress
    )
    walk = settings_of(layerwise, LayerwiseSettings)
    device = resolve_device(device)  # LayerMap checks the features against the model
    used = dict(strategy=strategy, prior=prior, bounds=bounds, joint=settings.as_dict(),
                layerwise=walk.as_dict(), dtype=str(dtype), device=str(device))  # fmt: skip
    run = dict(prior=prior, tol=tol, settings=used)
    with LayerMap(model, feats, pooling=settings.pooling, dtype=dtype, device=device) as lm:
        counted = injectivity(lm, prior=prior)[1] if strategy != "layerwise" else None
        if counted:  # said before the joint solve; the result's note says it again, in full
            say(progress, f"{lm.layer}: {counted.split('; ')[0]} (by counting, before the solve)")
        layer_rec, why = None, None
        if strategy != "joint":
            layer_rec, why = _layerwise(model, feats, walk, dtype, device, start=strategy == "auto")
            if layer_rec is None and strategy == "layerwise":
                raise UserError(why)
        if strategy == "layerwise":
            return finish(lm, layer_rec.image, strategy="layerwise", walk=layer_rec, **run)
        if strategy == "joint" or layer_rec is None:
            solve = solve_joint(lm, model, x0=x0, bounds=bounds, prior=prior, tol=tol,
                                settings=settings, progress=progress)  # fmt: skip
            diagnostics = dict(winner=["joint"] * lm.n_images, layerwise=why)
            return finish(lm, solve.x, strategy="joint", solve=solve, diagnostics=diagnostics,
                          **run)  # fmt: skip
        exact = functools.partial(_layerwise, model, feats, walk, dtype, device, start=False)
        return _auto(lm, model, layer_rec, exact, bounds, settings, progress, run)


def _auto(lm, model, layer_rec, exact, bounds, settings, progress, run):
    """Layer-wise, then the joint solve from it for the images it leaves above ``tol``;
    each image gets the better of the two by feature residual. ``exact()``: the layer-wise
    result itself, where ``layer_rec`` is only the start (:func:`~.layerwise.walk_start`)."""
    tol, prior = run["tol"], run["prior"]
    lo, hi = check_bounds(bounds, lm)

    def clamped(rec):
        return rec.image if lo is None else torch.clamp(rec.image, lo, hi)

    image = clamped(layer_rec)
    layer_res = _residual(lm, image)
    refine = (layer_res > tol).tolist() if prior is None else [True] * len(layer_res)
    diagnostics = dict(layerwise_residual=layer_res.tolist(), joint_residual=None,
                       winner=["layerwise"] * len(layer_res))  # fmt: skip
    if not any(refine):
        return finish(lm, image, strategy="layerwise", walk=layer_rec, diagnostics=diagnostics,
                      **run)  # fmt: skip
    solve = solve_joint(lm, model, x0=image, bounds=bounds, prior=prior, tol=tol,
                        settings=settings, progress=progress)  # fmt: skip
    joint_res = _residual(lm, solve.x)
    weak = (joint_res > tol) & (joint_res > 0.5 * layer_res)
    if layer_rec.diagnostics.get("inexact_start") and bool(weak.any()):
        layer_rec = exact()[0]  # the joint solve may lose to the walk itself, not its start
        image = clamped(layer_rec)
        layer_res = _residual(lm, image)
        diagnostics.update(layerwise_residual=layer_res.tolist())
    better = [j <= l or prior is not None for j, l in zip(joint_res, layer_res)]
    pick = torch.tensor(better, device=image.device).view(-1, *([1] * (image.dim() - 1)))
    status, reasons = list(solve.status), list(solve.notes)
    for i, b in enumerate(better):
        if not b:  # the layer-wise image stands: its own residual decides
            done = bool(layer_res[i] <= tol)
            status[i] = "converged" if done else "layerwise"
            reasons[i] = None if done else f"not converged: residual {layer_res[i]:.1e}"
    diagnostics.update(joint_residual=joint_res.tolist(),
                       winner=["joint" if b else "layerwise" for b in better])  # fmt: skip
    return finish(
        lm, torch.where(pick, solve.x, image), strategy="joint" if any(better) else "layerwise",
        walk=layer_rec, walk_images=[i for i, b in enumerate(better) if not b],
        solve=dataclasses.replace(solve, status=status, notes=reasons), diagnostics=diagnostics,
        **run,
    )  # fmt: skip
