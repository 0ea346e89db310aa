"""The paper's reconstruction, layer by layer (our Algorithm 1), with no learning.

:func:`reconstruct_layerwise` walks back from the activation to the input one place at a time
(Proposition 2.1 of the paper, applied layer by layer: our Algorithm 1). What each
operation's inverse is, is the "layer-wise" column of the one table of
:mod:`invert.reconstruction.rules` (CReLU exact, conv by minimum-norm least squares,
max-pooling by its switches, BatchNorm and Normalize exact, ReLU on its active units ...).
Functional ops count as their module equivalents (``F.relu`` is a ReLU), and in-place
ones run out of place. Places the table has no inverse for (``Linear``, ``add`` ...) raise
an error naming them. Exact recovery needs features computed in float64
(``model.double()``): float32 features carry a relative error of ~1e-7.
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.linalg.solvers import ConvergenceWarning, default_tol
from invert.nn.activations import AVR
from invert.validation import check_dtype

from .features import Features, check_images, fingerprint, graph_of
from .result import Note, Reconstruction
from .rules import LayerReport, _Context, _Target, rule_for
from .settings import LayerwiseSettings, feature_tol, settings_of

__all__ = ["LayerReport", "layer_notes", "reconstruct_layerwise", "walk_notes", "walk_start"]

_START_TOL = 1e-2  # CGLS tolerance of an underdetermined layer in the joint solve's start


# --- the walk back ---------------------------------------------------------------------------


def _plan(graph, steps, ctx: _Context) -> list:
    """The inverse of every step, or one error naming every layer that has none."""
    plan, refused = [], []
    for step in steps:
        module = graph.places[step.name].module
        fn = rule_for(module).invert
        if fn is None or len(step.in_shape) != 3 or len(step.out_shape) != 3:
            refused.append(f"{step.name!r} ({step.operation})")
        elif isinstance(module, AVR) and ctx.avr != "naive":
            fn(module, step, None, ctx)  # raises, naming the layer
        plan.append((step, module, fn))
    if refused:
        raise UserError(
            f"layer{'s' if len(refused) > 1 else ''} {', '.join(refused)} cannot be inverted "
            "layer by layer; supported: Conv2d, CReLU, ReLU, LeakyReLU, AVR (avr='naive'), "
            "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, Dropout, Identity, "
            "Normalize on (N, C, H, W) tensors (strategy='joint' takes any layer)"
        )
    return plan


def reconstruct_layerwise(
    model: nn.Module,
    feats: Features,
    *,
    layerwise: LayerwiseSettings | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Reconstruction:
    """Reconstruct the model input from :func:`features`, one layer at a time.

    Parameters
    ----------
    model : nn.Module
        The model the features came from (checked by fingerprint).
    feats : Features
        From :func:`features`; ``feats.activation`` may be edited (same shape).
    layerwise : LayerwiseSettings, optional
        How each layer is undone (ReLU mode, AVR, conv solver, CGLS iterations and
        tolerance per layer); default ``LayerwiseSettings()``.
    dtype : torch.dtype, optional
        Computation dtype (float64 by default: precision decides the answer here).
    device : optional
        ``None``: CUDA when available, else CPU.

    Returns
    -------
    Reconstruction
        With ``rec.layers`` (one report per operation) and ``rec.notes`` (layers whose
        solve stopped at ``cg_iterations``); no certificate (see :func:`reconstruct`).

    Examples
    --------
    >>> import torch
    >>> from invert import create_model, features
    >>> net = create_model("convpool_c_crelu", width=0.1).double()  # conv1: 10 filters
    >>> x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    >>> rec = reconstruct_layerwise(net, features(net, x, layer="conv1"), device="cpu")
    >>> [r.inverse for r in rec.layers]
    ['pos - neg', 'least squares: cgls', 'identity', 'exact']
    >>> float((rec.image - x).norm() / x.norm()) < 1e-8  # 10 filters on 3 channels: a frame
    True
    """
    return _layerwise(model, feats, settings_of(layerwise, LayerwiseSettings), dtype, device)


def walk_start(model, feats, settings: LayerwiseSettings, dtype, device) -> Reconstruction:
    """:func:`reconstruct_layerwise` as the start of the joint solve: a layer with fewer
    equations than unknowns (a conv under a ReLU's inactive units), and every layer below
    it, is solved to ``cg_tol`` ``1e-2`` unless ``settings`` gives one: its minimum-norm
    answer is not the input at any tolerance (the 1e-12 solve cost VGG-16 ``features.3`` at
    224 px 40 s of 41)."""
    start_tol = _START_TOL if settings.cg_tol is None else None
    return _layerwise(model, feats, settings, dtype, device, start_tol=start_tol)


def _layerwise(model, feats, settings, dtype, device, *, start_tol=None) -> Reconstruction:
    check_dtype(dtype)
    t0 = time.perf_counter()
    image, reports, ctx = _walk(model, feats, settings, dtype, resolve_device(device), start_tol)
    used = dict(settings.as_dict(), cg_tol=ctx.cg_tol, dtype=str(dtype), device=str(ctx.device))
    notes = layer_notes(reports, settings)
    if notes:
        worst = max((r.residual for r in reports if not r.converged and r.residual), default=0)
        warnings.warn(f"{notes[0]} (worst residual reached {worst:.3e})", ConvergenceWarning,
                      stacklevel=3)  # fmt: skip
    return Reconstruction(
        image=image, features=feats, strategy="layerwise",
        tol=feature_tol(None, feats.activation.dtype, dtype), layers=tuple(reports),
        notes=tuple(notes), settings=used, diagnostics=dict(inexact_start=ctx.inexact),
        seconds=dict(solve=time.perf_counter() - t0),
    )  # fmt: skip


def layer_notes(reports, settings: LayerwiseSettings) -> list[Note]:
    """A note for the layers whose least-squares solve stopped at ``cg_iterations``."""
    stopped = [r for r in reports if not r.converged]
    if not stopped:
        return []
    names = ", ".join(r.name for r in stopped)
    reached = max((r.residual for r in stopped if r.residual is not None), default=None)
    return [Note(
        f"the least-squares solve{'s' if len(stopped) > 1 else ''} of {names} stopped at "
        f"{settings.cg_iterations} CGLS iterations before the normal-equation residual cg_tol"
        + (f" (worst reached {reached:.1e})" if reached is not None else ""),
        option="layerwise.cg_iterations", advice="raise {option}",
    )]  # fmt: skip


def walk_notes(layer_rec, residual, tol, images) -> list[Note]:
    """A layer-wise result's notes: its solves stopped at ``cg_iterations``, and those of
    ``images`` whose walk misses the features (``residual`` above ``tol``) although every
    layer's solve converged."""
    notes = list(layer_rec.notes)
    missed = [i for i in images if float(residual[i]) > tol]
    if missed and all(r.converged for r in layer_rec.layers):
        worst = max(float(residual[i]) for i in missed)
        notes.append(Note(
            f"the layer-wise walk misses the features of {len(missed)} of {len(residual)} "
            f"images (feature residual {worst:.1e} > tol {tol:.0e}) although every layer's "
            "solve converged: a layer on the way is not invertible on its own (a ReLU's "
            "inactive units, fewer outputs than inputs)", option="strategy",
            advice="{option} solves through every layer at once"))  # fmt: skip
    return notes


def _walk(model, feats, settings, dtype, device, start_tol=None):
    """The walk back: the image, the per-operation reports and the context used."""
    if not isinstance(feats, Features):
        raise UserTypeError(f"expected Features from invert.reconstruction.features; got "
                            f"{type(feats).__name__}")  # fmt: skip
    if not feats.chain:
        raise UserError(
            f"the layers up to {feats.layer!r} are not a plain chain (a leaf does not read "
            "the previous one's output, e.g. a residual block): the layer-wise walk needs "
            "a plain chain of layers (e.g. nn.Sequential); use strategy='joint'"
        )
    graph = graph_of(model, feats)
    if any(step.name not in graph.places for step in feats.steps):
        raise UserError("these features come from another model: its layers "
                        f"{feats.path} are not all in this one")  # fmt: skip
    cg_tol = settings.cg_tol if settings.cg_tol is not None else default_tol(dtype)
    ctx = _Context(settings.relu, settings.avr, settings.conv_solver, cg_tol,
                   settings.cg_iterations, settings.strict, dtype, device,
                   feats.switches, start_tol)  # fmt: skip
    plan = _plan(graph, feats.steps, ctx)
    act = feats.activation
    _check_activation(act, feats, graph)
    target = _Target(act.to(device=device, dtype=dtype))
    reports: list[LayerReport] = []
    with warnings.catch_warnings():  # a stopped solve is in its report and rec.notes
        warnings.simplefilter("ignore", ConvergenceWarning)
        for index in range(len(plan) - 1, -1, -1):
            step, module, fn = plan[index]
            t0 = time.perf_counter()
            target, report = fn(module, step, target, ctx)
            if not report.seconds:
                report.seconds = time.perf_counter() - t0
            reports.append(report)
    image = target.values
    if target.mask is not None:  # nothing below fixes the unknown entries: minimum norm
        image = torch.where(target.mask.expand_as(image), image, 0)
    if target.lower is not None:
        image = torch.maximum(image, target.lower)
    if target.upper is not None:
        image = torch.minimum(image, target.upper)
    return image, reports, ctx


def _check_activation(act, feats, graph) -> None:
    check_images(act, "the features' activation")
    if tuple(act.shape[1:]) != feats.steps[-1].out_shape:
        raise UserError(
            f"the activation has shape {tuple(act.shape[1:])} per sample but layer "
            f"{feats.layer!r} outputs {feats.steps[-1].out_shape}; features of the wrong shape"
        )
    for name, idx in feats.switches.items():
        if idx.shape[0] != act.shape[0]:
            raise UserError(f"the activation has {act.shape[0]} samples but the switches of "
                            f"{name!r} {idx.shape[0]}")  # fmt: skip
    if fingerprint(graph, feats.place) != feats.fingerprint:
        raise UserError(
            "these features come from another model (or its weights changed since); "
            "compute them with features(model, x, layer=...) on this model"
        )
