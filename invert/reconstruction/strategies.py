"""The one entry point for reconstruction: :func:`reconstruct`, with a choice of strategy.

==============  ============================================================================
``"layerwise"`` the paper's Algorithm 1, one layer at a time
                (:func:`~invert.reconstruction.layerwise.reconstruct_layerwise`)
``"joint"``     every layer at once (:func:`~invert.reconstruction.joint.reconstruct_joint`)
``"auto"``      layer-wise, then a joint refinement started from it for the images whose
                relative feature residual is above ``tol``; each image gets the better of
                the two by feature residual (non-chains: joint only)
==============  ============================================================================

Every result of :func:`reconstruct` carries a certificate (one row per image, see
:mod:`invert.reconstruction.certificate`), the layer-wise one too: the frame bounds cost
a Lanczos run (about one more Gauss-Newton step), so the paper's function called by name,
:func:`~invert.reconstruction.layerwise.reconstruct_layerwise`, stays without one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from invert.device import resolve_device
from invert.linalg.solvers import ConvergenceWarning

from .features import Features
from .joint import certified, check_bounds, check_options, solve_joint
from .layer_map import LayerMap
from .layerwise import Reconstruction, reconstruct_layerwise

__all__ = ["STRATEGIES", "reconstruct"]

STRATEGIES = ("auto", "layerwise", "joint")


def _layerwise(model, feats, *, relu, avr, method, max_iter, dtype, device):
    """The layer-wise result and its per-image residual, or (None, reason)."""
    if not feats.chain:
        return None, "the layers are not a plain chain"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            rec = reconstruct_layerwise(model, feats, relu=relu, avr=avr, method=method,
                                        max_iter=max_iter, dtype=dtype, device=device)  # fmt: skip
    except ValueError as error:
        return None, str(error)
    rec.options["warnings"] = [str(w.message) for w in caught]
    return rec, None


def _residual(lm, x):
    with torch.no_grad():
        return lm.relative(lm.residual(x, lm.all), lm.all).cpu()


def reconstruct(
    model: nn.Module,
    feats: Features,
    *,
    strategy: str = "auto",
    pooling: str = "recorded",
    bounds=None,
    prior: str | None = None,
    prior_weight: float = 1e-2,
    tol: float | None = None,
    max_steps: int | None = None,
    relu: str = "active",
    avr: str | None = None,
    method: str = "auto",
    max_iter: int = 1000,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    progress: Callable[[dict], None] | None = None,
) -> Reconstruction:
    """Reconstruct the model input from :func:`~invert.reconstruction.features`.

    Parameters
    ----------
    model : nn.Module
        The model the features came from (checked by fingerprint).
    feats : Features
        From :func:`~invert.reconstruction.features`.
    strategy : {"auto", "layerwise", "joint"}, optional
        See the module notes. ``"auto"`` (default) is never worse than ``"layerwise"`` by
        feature residual; with a ``prior`` it returns the joint result (the prior is what
        was asked for), with ``bounds`` the layer-wise images are first projected onto
        the box.
    pooling, bounds, prior, prior_weight, max_steps, progress : optional
        Of the joint solve (:func:`~invert.reconstruction.joint.reconstruct_joint`).
    tol : float, optional
        Relative feature residual taken as converged (default ``1e-10`` for float64
        features, ``1e-5`` for float32): when ``"auto"`` refines, when the joint solve
        stops, what the certificate calls converged.
    relu, avr, method : optional
        Of the layer-wise walk (:func:`~invert.reconstruction.layerwise.reconstruct_layerwise`).
    max_iter : int, optional
        CGLS iterations per least-squares solve (per layer, per Gauss-Newton step).
    dtype, device : optional
        float64 by default; ``device=None``: CUDA when available, else CPU.

    Returns
    -------
    Reconstruction
        ``rec.strategy`` says what made the images (``"joint"`` if the joint solve made
        any), ``rec.certificate`` has one row per image, ``rec.diagnostics`` (``auto``)
        each strategy's residuals and the winner per image.

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
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    tol = check_options(feats, prior=prior, prior_weight=prior_weight, tol=tol, dtype=dtype,
                        max_steps=max_steps, max_iter=max_iter, progress=progress)  # fmt: skip
    device = resolve_device(device)  # LayerMap checks the features against the model
    joint = dict(bounds=bounds, prior=prior, prior_weight=prior_weight, tol=tol,
                 max_steps=max_steps, max_iter=max_iter, progress=progress)  # fmt: skip
    with LayerMap(model, feats, pooling=pooling, dtype=dtype, device=device) as lm:
        layer_rec, why = None, None
        if strategy != "joint":
            layer_rec, why = _layerwise(model, feats, relu=relu, avr=avr, method=method,
                                        max_iter=max_iter, dtype=dtype, device=device)  # fmt: skip
            if layer_rec is None and strategy == "layerwise":
                raise ValueError(why)
        if strategy == "layerwise":
            return certified(lm, layer_rec, tol)
        if strategy == "joint" or layer_rec is None:
            solve = solve_joint(lm, model, x0=None, **joint)
            rec = Reconstruction(image=solve.x, layers=[], features=feats, strategy="joint",
                                 history=solve.history)  # fmt: skip
            rec.diagnostics = dict(winner=["joint"] * lm.n_images, layerwise=why)
            return certified(lm, rec, tol, solve=solve, prior=prior)
        return _auto(lm, model, layer_rec, tol, joint)


def _auto(lm, model, layer_rec, tol, joint):
    lo, hi = check_bounds(joint["bounds"], lm)
    image = layer_rec.image if lo is None else torch.clamp(layer_rec.image, lo, hi)
    layer_res = _residual(lm, image)
    refine = (layer_res > tol).tolist() if joint["prior"] is None else [True] * len(layer_res)
    diagnostics = dict(layerwise_residual=layer_res.tolist(), joint_residual=None,
                       winner=["layerwise"] * len(layer_res))  # fmt: skip
    rec = Reconstruction(image=image, layers=layer_rec.layers, features=layer_rec.features,
                         options=dict(layer_rec.options), strategy="layerwise")  # fmt: skip
    if not any(refine):
        rec.diagnostics = diagnostics
        return certified(lm, rec, tol)
    solve = solve_joint(lm, model, x0=image, **joint)
    joint_res = _residual(lm, solve.x)
    better = [j <= l or joint["prior"] is not None for j, l in zip(joint_res, layer_res)]
    pick = torch.tensor(better, device=image.device).view(-1, *([1] * (image.dim() - 1)))
    rec.image = torch.where(pick, solve.x, image)
    rec.history, rec.strategy = solve.history, "joint" if any(better) else "layerwise"
    diagnostics.update(joint_residual=joint_res.tolist(),
                       winner=["joint" if b else "layerwise" for b in better])  # fmt: skip
    rec.diagnostics = diagnostics
    for i, b in enumerate(better):
        if not b:  # the layer-wise image stands: its own residual decides
            done = bool(layer_res[i] <= tol)
            solve.status[i] = "converged" if done else "layerwise"
            solve.notes[i] = None if done else f"not converged: residual {layer_res[i]:.1e}"
    return certified(lm, rec, tol, solve=solve, prior=joint["prior"])
