"""The paper's reconstruction, layer by layer (our Algorithm 1), with no learning.

:func:`reconstruct_layerwise` walks back from the activation to the input one layer at a time
(Proposition 2.1 of the paper, applied layer by layer: our Algorithm 1):

========================  ==================================================================
layer                     inverse
========================  ==================================================================
``CReLU``                 exact: ``z = pos - neg``
``Conv2d``                minimum-norm least squares ``x = T^+ (z - b)``: CGLS
                          (:func:`~invert.linalg.solvers.least_squares`) or, with circular
                          padding, directly per frequency
                          (:func:`~invert.linalg.solvers.fft_least_squares`)
``MaxPool2d``             switches: each pooled value is an equation ``u(p) = v`` at its
                          switch (:mod:`invert.linalg.switches`); the equations pass through the
                          activation (``pos``/``neg`` rules for CReLU) and BatchNorm below
                          and the conv is solved once, on those rows only
``BatchNorm2d`` (eval)    exact inverse of the per-channel affine map
``AvgPool2d``,            minimum-norm least squares of the depthwise averaging conv
``AdaptiveAvgPool2d``     (adaptive: when the input size is a multiple of the output size)
``Normalize``             exact (zoo models: ``rec.image`` is in the model's input space)
``Dropout`` (eval),       identity
``Identity``
``ReLU`` (beyond the      ``relu="naive"``: take the output as the pre-activation;
paper)                    ``"active"`` (default): equations on the active units only;
                          ``"constrained"``: those equations and ``z <= 0`` on
                          the inactive units (``z <=`` the window maximum under
                          max-pooling), solved by
                          :func:`~invert.linalg.solvers.bounded_least_squares`
``LeakyReLU`` (slope>0)   exact
``AVR``                   sign lost: refused unless ``avr="naive"`` (``z = |z|``)
========================  ==================================================================

Every solve is minimum-norm: the part of the input that no feature sees comes back as
0 in the space the first conv reads (after the model's ``Normalize``, i.e. the mean
image in pixel space). Between layers the estimate is carried as a target on the
layer's output (values, an optional mask of the entries that are known, optional
bounds), so max-pooling, activation and BatchNorm fold into the one masked solve of
the conv below them. Other layer types (``Linear``, ``Flatten``, ...) raise an error
naming the layer. Exact recovery needs features computed in float64
(``model.double()``): float32 features carry a relative error of ~1e-7.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from invert.device import resolve_device
from invert.linalg.operators import ConvOperator, as_pair
from invert.linalg.solvers import (
    bounded_least_squares,
    default_tol,
    fft_least_squares,
    least_squares,
)
from invert.linalg.switches import (
    crelu_equations,
    unpool_switches,
    window_bounds,
)
from invert.nn.activations import AVR, CReLU
from invert.nn.net import EVAL_IDENTITY, Normalize

from .certificate import Certificate
from .features import Features, check_images, fingerprint, fingerprint_names

__all__ = ["LayerReport", "Reconstruction", "reconstruct_layerwise"]

_RELU_MODES = ("naive", "active", "constrained")
_METHODS = ("auto", "cg", "fft")


# --- the walk back ---------------------------------------------------------------------------


@dataclass
class LayerReport:
    """Diagnostics of one step of the walk back (worst sample of the batch)."""

    name: str
    kind: str
    method: str
    residual: float | None = None
    data_residual: float | None = None
    iterations: int | None = None
    converged: bool = True
    equations: int | None = None
    unknowns: int | None = None
    rank: int | None = None
    violation: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


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


@dataclass
class _Target:
    """Knowledge about a tensor: values where ``mask`` (all if None), optional bounds."""

    values: torch.Tensor
    mask: torch.Tensor | None = None
    lower: torch.Tensor | None = None
    upper: torch.Tensor | None = None

    def without_bounds(self) -> _Target:
        return _Target(self.values, self.mask)


@dataclass
class _Context:
    relu: str
    avr: str | None
    method: str
    tol: float | None
    max_iter: int
    strict: bool
    dtype: torch.dtype
    device: torch.device
    switches: dict[int, torch.Tensor]


def _elementwise(target: _Target, fn, *, slope=None, keep=None) -> _Target:
    """Push a target through an invertible elementwise map (``fn`` maps output to input).

    ``slope`` (broadcastable) gives the sign of the map, to swap bounds where it is
    negative; ``keep`` marks the entries whose map is invertible (the rest become unknown).
    """
    values = fn(target.values)
    lower = fn(target.lower) if target.lower is not None else None
    upper = fn(target.upper) if target.upper is not None else None
    if slope is not None and bool((slope < 0).any()):
        neg = (slope < 0).expand_as(values)
        lo = lower if lower is not None else torch.full_like(values, -math.inf)
        hi = upper if upper is not None else torch.full_like(values, math.inf)
        lower, upper = torch.where(neg, hi, lo), torch.where(neg, lo, hi)
    mask = target.mask
    if keep is not None and not bool(keep.all()):
        keep = keep.expand_as(values)
        mask = keep if mask is None else mask & keep
        values = torch.where(keep, values, 0)
        lower = torch.where(keep, lower, -math.inf) if lower is not None else None
        upper = torch.where(keep, upper, math.inf) if upper is not None else None
    return _Target(values, mask, lower, upper)


def _channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _invert_normalize(module: Normalize, step, target, ctx):
    mean = _channel(module.mean.to(ctx.device, ctx.dtype))
    std = _channel(module.std.to(ctx.device, ctx.dtype))
    return _elementwise(target, lambda t: t * std + mean), LayerReport(
        step.name, step.kind, "exact"
    )


def _invert_batchnorm(module: nn.BatchNorm2d, step, target, ctx):
    if module.running_mean is None or module.running_var is None:
        raise ValueError(
            f"layer {step.name!r} (BatchNorm2d without running statistics) normalises with "
            "batch statistics and cannot be inverted; use track_running_stats=True"
        )
    to = dict(device=ctx.device, dtype=ctx.dtype)
    mean, var = module.running_mean.to(**to), module.running_var.to(**to)
    gamma = module.weight.detach().to(**to) if module.weight is not None else torch.ones_like(mean)
    beta = module.bias.detach().to(**to) if module.bias is not None else torch.zeros_like(mean)
    slope = gamma / torch.sqrt(var + module.eps)
    ok = slope != 0
    safe = torch.where(ok, slope, torch.ones_like(slope))
    offset = beta - slope * mean
    new = _elementwise(
        target,
        lambda t: (t - _channel(offset)) / _channel(safe),
        slope=_channel(slope),
        keep=_channel(ok),
    )
    method = "exact" if bool(ok.all()) else f"exact ({int((~ok).sum())} zero-gain channels lost)"
    return new, LayerReport(step.name, step.kind, method)


def _invert_identity(module, step, target, ctx):
    return target, LayerReport(step.name, step.kind, "identity")


def _invert_crelu(module: CReLU, step, target, ctx):
    if module.dim != 1:
        raise ValueError(f"layer {step.name!r} (CReLU) concatenates along dim {module.dim}; "
                         "only the channel axis (dim=1) is supported")  # fmt: skip
    mask, z = crelu_equations(target.values, target.mask)
    eq = None if mask is None else int(mask.flatten(1).sum(1).min())
    return _Target(z, mask), LayerReport(step.name, step.kind, "pos - neg", equations=eq)


def _invert_relu(module, step, target, ctx):
    y, mask = target.values, target.mask
    if ctx.relu == "naive":
        return _Target(y, mask), LayerReport(step.name, step.kind, "naive (z = relu(z))")
    known = torch.ones_like(y, dtype=torch.bool) if mask is None else mask.expand_as(y)
    active = known & (y > 0)
    new = _Target(torch.where(active, y, 0), active)
    if ctx.relu == "constrained":
        upper = torch.where(known & ~active, 0.0, math.inf).to(y.dtype)
        if target.upper is not None:  # relu(z) <= U (U >= 0) means z <= U
            upper = torch.minimum(upper, target.upper)
        new.upper = upper
    eq = int(active.flatten(1).sum(1).min())
    return new, LayerReport(step.name, step.kind, ctx.relu, equations=eq)


def _invert_leaky(module: nn.LeakyReLU, step, target, ctx):
    slope = module.negative_slope
    if not slope > 0:
        raise ValueError(f"layer {step.name!r} (LeakyReLU) has slope {slope} <= 0: not invertible")

    def fn(t):
        return torch.where(t > 0, t, t / slope)

    return _elementwise(target, fn), LayerReport(step.name, step.kind, "exact")


def _invert_avr(module, step, target, ctx):
    if ctx.avr != "naive":
        raise ValueError(
            f"layer {step.name!r} (AVR) keeps |z| and loses the sign; pass avr='naive' to "
            "take |z| as z (a lossy reconstruction)"
        )
    return _Target(target.values, target.mask), LayerReport(step.name, step.kind, "naive (z = |z|)")


def _invert_maxpool(module: nn.MaxPool2d, step, target, ctx, index):
    idx = ctx.switches.get(index)
    if idx is None:
        raise ValueError(f"no switches recorded for {step.name!r}; recompute the features")
    idx = idx.to(ctx.device)
    if idx.shape != target.values.shape:
        raise ValueError(f"switches of {step.name!r} have shape {tuple(idx.shape)}, the "
                         f"features {tuple(target.values.shape)}")  # fmt: skip
    mask, values = unpool_switches(target.values, idx, step.in_shape, mask=target.mask)
    new = _Target(values, mask)
    if ctx.relu == "constrained":
        new.upper = window_bounds(target.values, module, step.in_shape, mask=target.mask)
    eq = int(mask.flatten(1).sum(1).min())
    return new, LayerReport(step.name, step.kind, "switches", equations=eq)


def _avgpool_operator(step, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    c, h, w = step.in_shape
    kernel, stride, padding = as_pair(kernel), as_pair(stride or kernel), as_pair(padding)
    weight = torch.full((c, 1, *kernel), 1.0 / (divisor or kernel[0] * kernel[1]))
    op = ConvOperator(weight.double(), (h, w), stride=stride, padding=padding, groups=c)
    if op.out_shape != step.out_shape:
        raise ValueError(
            f"layer {step.name!r} (ceil_mode pooling with partial windows) is not supported; "
            "use ceil_mode=False or an input size the windows tile"
        )
    rows = None
    if not count_include_pad and divisor is None and any(padding):
        # the divisor counts only the in-range entries of each window
        ones = torch.ones(1, 1, h, w, dtype=torch.float64)
        counts = F.avg_pool2d(ones, kernel, stride, padding, count_include_pad=False)
        full = F.avg_pool2d(ones, kernel, stride, padding, count_include_pad=True)
        rows = (counts / full)[0]  # y = (4 / n_in) * (sum / 4)
    return op, rows


class _ScaledRows:
    """``diag(s) T`` for a ConvOperator ``T``: pooling with per-window divisors."""

    def __init__(self, op: ConvOperator, scale: torch.Tensor):
        self.op, self.scale = op, scale
        self.in_shape, self.out_shape = op.in_shape, op.out_shape

    def to(self, **kwargs):
        return _ScaledRows(self.op.to(**kwargs), self.scale.to(**kwargs))

    def apply(self, x):
        return self.scale * self.op.apply(x)

    def adjoint(self, y):
        return self.op.adjoint(self.scale * y)


def _solve_linear(op, bias, step, target, ctx, kind_method):
    """Solve the (masked, bounded) least-squares problem of a conv-like layer."""
    t0 = time.perf_counter()
    values = target.values if bias is None else target.values - bias
    lower = target.lower - bias if target.lower is not None and bias is not None else target.lower
    upper = target.upper - bias if target.upper is not None and bias is not None else target.upper
    bounded = any(b is not None and bool(torch.isfinite(b).any()) for b in (lower, upper))
    circular = isinstance(op, ConvOperator) and op.padding_mode == "circular"
    if ctx.method == "fft" and not circular:
        raise ValueError(f"method='fft' needs circular padding; layer {step.name!r} pads "
                         "with zeros")  # fmt: skip
    mask = target.mask
    if mask is not None:
        mask = mask.expand_as(values)
        values = torch.where(mask, values, 0)
    kwargs = dict(tol=ctx.tol, strict=ctx.strict)
    if bounded:
        x, info = bounded_least_squares(
            op, values, mask=mask, lower=lower, upper=upper, max_iter=ctx.max_iter, **kwargs
        )
    elif mask is None and circular and ctx.method in ("auto", "fft"):
        x, info = fft_least_squares(op, values, **kwargs)
    else:
        x, info = least_squares(op, values, mask=mask, max_iter=ctx.max_iter, **kwargs)
    s = info.summary()
    report = LayerReport(
        step.name, step.kind, f"{kind_method}: {s['method']}",
        residual=s["residual"], data_residual=s["data_residual"], iterations=s["iterations"],
        converged=s["converged"], equations=s["equations"], unknowns=s["unknowns"],
        rank=s["rank"], violation=s["violation"], seconds=time.perf_counter() - t0,
    )  # fmt: skip
    return _Target(x), report


def _invert_conv(module: nn.Conv2d, step, target, ctx):
    try:
        op = ConvOperator.from_conv(module, step.in_shape[1:])
    except ValueError as error:
        raise ValueError(f"layer {step.name!r} (Conv2d): {error}") from None
    op = op.to(device=ctx.device, dtype=ctx.dtype)
    bias = None if module.bias is None else _channel(module.bias.detach().to(ctx.device, ctx.dtype))
    return _solve_linear(op, bias, step, target, ctx, "least squares")


def _invert_avgpool(module: nn.AvgPool2d, step, target, ctx):
    op, rows = _avgpool_operator(
        step, module.kernel_size, module.stride, module.padding, module.ceil_mode,
        module.count_include_pad, module.divisor_override,
    )  # fmt: skip
    op = op.to(device=ctx.device, dtype=ctx.dtype)
    if rows is not None:
        op = _ScaledRows(op, rows.to(device=ctx.device, dtype=ctx.dtype))
    return _solve_linear(op, None, step, target, ctx, "least squares")


def _invert_adaptive_avgpool(module: nn.AdaptiveAvgPool2d, step, target, ctx):
    (h, w), (oh, ow) = step.in_shape[1:], step.out_shape[1:]
    if h % oh or w % ow:
        raise ValueError(
            f"layer {step.name!r} (AdaptiveAvgPool2d) maps {h}x{w} to {oh}x{ow}, which is not "
            "a plain average pooling; only sizes that divide the input are supported"
        )
    k = (h // oh, w // ow)
    op, _ = _avgpool_operator(step, k, k, 0, False, True, None)
    op = op.to(device=ctx.device, dtype=ctx.dtype)
    return _solve_linear(op, None, step, target, ctx, "least squares")


_HANDLERS: list[tuple[type, Callable]] = [
    (Normalize, _invert_normalize),
    (nn.BatchNorm2d, _invert_batchnorm),
    (EVAL_IDENTITY, _invert_identity),
    (CReLU, _invert_crelu),
    (nn.ReLU, _invert_relu),
    (nn.LeakyReLU, _invert_leaky),
    (AVR, _invert_avr),
    (nn.Conv2d, _invert_conv),
    (nn.AvgPool2d, _invert_avgpool),
    (nn.AdaptiveAvgPool2d, _invert_adaptive_avgpool),
]


def _plan(modules: dict, steps, ctx: _Context) -> list:
    """The inverse of every step, or one error naming every layer that has none."""
    plan, refused = [], []
    for step in steps:
        module = modules[step.name]
        fn = "maxpool" if isinstance(module, nn.MaxPool2d) else None
        for types, handler in _HANDLERS:
            if fn is None and isinstance(module, types):
                fn = handler
        if fn is None or len(step.in_shape) != 3 or len(step.out_shape) != 3:
            refused.append(f"{step.name!r} ({type(module).__name__})")
        elif fn is _invert_avr and ctx.avr != "naive":
            _invert_avr(module, step, None, ctx)  # raises, naming the layer
        plan.append((step, module, fn))
    if refused:
        raise ValueError(
            f"layer{'s' if len(refused) > 1 else ''} {', '.join(refused)} cannot be inverted; "
            "supported: Conv2d, CReLU, ReLU, LeakyReLU, AVR (avr='naive'), MaxPool2d, "
            "AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, Dropout, Identity, Normalize on "
            "(N, C, H, W) tensors"
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
    modules = dict(model.named_modules())
    if any(step.name not in modules for step in feats.steps):
        raise ValueError("these features come from another model: its layers "
                         f"{feats.path} are not all in this one")  # fmt: skip
    device = resolve_device(device)
    ctx = _Context(relu, avr, method, tol, max_iter, strict, dtype, device, feats.switches)
    plan = _plan(modules, feats.steps, ctx)
    act = feats.activation
    check_images(act, "the features' activation")
    if tuple(act.shape[1:]) != feats.steps[-1].out_shape:
        raise ValueError(
            f"the activation has shape {tuple(act.shape[1:])} per sample but layer "
            f"{feats.layer!r} outputs {feats.steps[-1].out_shape}; features of the wrong shape"
        )
    for i, idx in feats.switches.items():
        if idx.shape[0] != act.shape[0]:
            raise ValueError(f"the activation has {act.shape[0]} samples but the switches of "
                             f"{feats.steps[i].name!r} {idx.shape[0]}")  # fmt: skip
    if fingerprint(model, fingerprint_names(feats.path, feats.chain)) != feats.fingerprint:
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
        if fn == "maxpool":
            target, report = _invert_maxpool(module, step, target, ctx, index)
        else:
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
