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
from dataclasses import dataclass, field

import torch
from torch import nn

from invert.device import resolve_device
from invert.linalg.solvers import default_tol
from invert.nn.activations import AVR

from .certificate import Certificate
from .features import Features, check_images, fingerprint, graph_of
from .rules import LayerReport, _Context, _Target, rule_for

__all__ = ["LayerReport", "Reconstruction", "reconstruct_layerwise"]

_RELU_MODES = ("naive", "active", "constrained")
_METHODS = ("auto", "cg", "fft")


# --- the walk back ---------------------------------------------------------------------------


@dataclass
class Reconstruction:
    """The result of :func:`~invert.reconstruction.reconstruct`, whatever the strategy.

    Attributes
    ----------
    image : torch.Tensor
        ``(N, C, H, W)`` estimate of the model input (normalization undone).
    layers : list of LayerReport
        The layer-wise walk: one report per step, from the layer down to the input
        (empty when no layer-wise walk made the image).
    features : Features
        The features it was computed from.
    options : dict
        The options used (joint: also ``start``, per-image ``status``, timings).
    strategy : str
        ``"layerwise"`` or ``"joint"``: what made ``image``.
    certificate : Certificate or None
        One row per image: feature residual, frame bounds ``A``, ``B`` of the map at the
        image and whether it is locally unique
        (:mod:`invert.reconstruction.certificate`); None from
        :func:`reconstruct_layerwise` called by name.
    history : list of dict
        The joint solve's Gauss-Newton steps (empty for layer-wise).
    diagnostics : dict
        From ``strategy="auto"``: the residual of each strategy and which won.
    """

    image: torch.Tensor
    layers: list[LayerReport]
    features: Features
    options: dict = field(default_factory=dict)
    strategy: str = "layerwise"
    certificate: Certificate | None = None
    history: list[dict] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether every image's feature residual reached its tol (and, for a layer-wise
        result, every layer's solve); a joint result does not depend on its start's solves."""
        rows = self.certificate.rows if self.certificate is not None else []
        layers = self.layers if self.strategy == "layerwise" else []
        return all(r.converged for r in layers) and all(r.converged for r in rows)

    def report(self) -> list[dict]:
        """The per-layer diagnostics as a list of dicts (for tables and JSON)."""
        return [r.as_dict() for r in self.layers]

    def __repr__(self) -> str:
        return (
            f"Reconstruction(layer={self.features.layer!r}, image={tuple(self.image.shape)}, "
            f"strategy={self.strategy!r}, converged={self.converged}, "
            f"certificate={self.certificate!r})"
        )


def _plan(graph, steps, ctx: _Context) -> list:
    """The inverse of every step, or one error naming every layer that has none."""
    plan, refused = [], []
    for step in steps:
        module = graph.places[step.name].module
        fn = rule_for(module).invert
        if fn is None or len(step.in_shape) != 3 or len(step.out_shape) != 3:
            refused.append(f"{step.name!r} ({step.kind})")
        elif isinstance(module, AVR) and ctx.avr != "naive":
            fn(module, step, None, ctx)  # raises, naming the layer
        plan.append((step, module, fn))
    if refused:
        raise ValueError(
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
    relu: str = "active",
    avr: str | None = None,
    method: str = "auto",
    tol: float | None = None,
    max_iter: int = 1000,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    strict: bool = False,
) -> Reconstruction:
    """Reconstruct the model input from :func:`features`, one layer at a time.

    Parameters
    ----------
    model : nn.Module
        The model the features came from (checked by fingerprint).
    feats : Features
        From :func:`features`; ``feats.activation`` may be edited (same shape).
    relu : {"active", "constrained", "naive"}, optional
        How ReLU layers are undone (see the module notes). ``"constrained"`` uses the
        inequalities too and is the most faithful, at 10-100 times the cost.
    avr : {None, "naive"}, optional
        AVR layers are refused unless ``"naive"``.
    method : {"auto", "cg", "fft"}, optional
        Conv solves: FFT for circular padding and CGLS otherwise (``"auto"``), or force one.
    tol, max_iter : optional
        Passed to the solvers (relative normal-equation residual; default by dtype).
    dtype : torch.dtype, optional
        Computation dtype (float64 by default: precision decides the answer here).
    device : optional
        ``None``: CUDA when available, else CPU.
    strict : bool, optional
        Raise :class:`~invert.linalg.solvers.ConvergenceError` when a solve does not converge
        (default: warn and report it in ``rec.layers``).

    Returns
    -------
    Reconstruction

    Examples
    --------
    >>> import torch
    >>> from invert import create_model, features
    >>> net = create_model("convpool_c_crelu", width=0.1).double()  # conv1: 10 filters
    >>> x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    >>> rec = reconstruct_layerwise(net, features(net, x, layer="conv1"), device="cpu")
    >>> [r.method for r in rec.layers]
    ['pos - neg', 'least squares: cgls', 'identity', 'exact']
    >>> float((rec.image - x).norm() / x.norm()) < 1e-8  # 10 filters on 3 channels: a frame
    True
    """
    if not isinstance(feats, Features):
        raise TypeError(f"expected Features from invert.reconstruction.features; got "
                        f"{type(feats).__name__}")  # fmt: skip
    if relu not in _RELU_MODES:
        raise ValueError(f"relu must be one of {_RELU_MODES}; got {relu!r}")
    if avr not in (None, "naive"):
        raise ValueError(f"avr must be None or 'naive'; got {avr!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    if not feats.chain:
        raise ValueError(
            f"the layers up to {feats.layer!r} are not a plain chain (a leaf does not read "
            "the previous one's output, e.g. a residual block): the layer-wise walk needs "
            "a plain chain of layers (e.g. nn.Sequential); use strategy='joint'"
        )
    graph = graph_of(model, feats)
    if any(step.name not in graph.places for step in feats.steps):
        raise ValueError("these features come from another model: its layers "
                         f"{feats.path} are not all in this one")  # fmt: skip
    device = resolve_device(device)
    ctx = _Context(relu, avr, method, tol, max_iter, strict, dtype, device, feats.switches)
    plan = _plan(graph, feats.steps, ctx)
    act = feats.activation
    check_images(act, "the features' activation")
    if tuple(act.shape[1:]) != feats.steps[-1].out_shape:
        raise ValueError(
            f"the activation has shape {tuple(act.shape[1:])} per sample but layer "
            f"{feats.layer!r} outputs {feats.steps[-1].out_shape}; features of the wrong shape"
        )
    for name, idx in feats.switches.items():
        if idx.shape[0] != act.shape[0]:
            raise ValueError(f"the activation has {act.shape[0]} samples but the switches of "
                             f"{name!r} {idx.shape[0]}")  # fmt: skip
    if fingerprint(graph, feats.place) != feats.fingerprint:
        raise ValueError(
            "these features come from another model (or its weights changed since); "
            "compute them with features(model, x, layer=...) on this model"
        )
    if tol is None:
        ctx.tol = default_tol(dtype)

    target = _Target(act.to(device=device, dtype=dtype))
    reports: list[LayerReport] = []
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
    options = dict(relu=relu, avr=avr, method=method, tol=ctx.tol, max_iter=max_iter,
                   dtype=str(dtype), device=str(device))  # fmt: skip
    return Reconstruction(image=image, layers=reports, features=feats, options=options)
