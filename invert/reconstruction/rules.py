"""One table of rules per operation: what the layer-wise walk and the joint map do with it.

Every place of a model's graph (:mod:`invert.nn.graph`) that a rule knows is computed by
a module, or by a functional op whose module equivalent the graph supplies (``F.relu``
is a ``ReLU``, ``torch.flatten`` a ``Flatten``). :func:`rule_for` finds its rule:

=========================  ===================================  ==============================
operation                  layer-wise inverse (Algorithm 1)     joint map: ``J v`` at input x
=========================  ===================================  ==============================
``CReLU``                  exact: ``z = pos - neg``             ``(v [x>0], -v [x<0])``; as
                                                                the layer: compare ``z``
``Conv2d``                 min-norm least squares               one conv of ``v``, no bias
                           ``x = T^+ (z - b)``: CGLS, or per
                           frequency (FFT) for circular padding
``MaxPool2d``              switches: each pooled value is an    gather of ``v`` at the switches
                           equation at its argmax               (recorded ones by default)
``BatchNorm2d`` (eval)     exact inverse of the affine map      ``v * gamma / sqrt(var + eps)``
``AvgPool2d``,             min-norm least squares of the        the pooling itself
``AdaptiveAvgPool2d``      depthwise averaging conv
``Normalize``              exact                                ``v / std``
``Dropout`` (eval),        identity                             identity
``Identity``
``ReLU``                   ``relu="active"``: equations on the  ``v [x > 0]``; as the layer:
                           active units (``"constrained"``:     ``z - y`` on active units,
                           with ``z <= 0`` on the others;       ``relu(z)`` on the others
                           ``"naive"``: ``z = y``)
``LeakyReLU`` (slope > 0)  exact                                ``v`` times the slope
``AVR``                    sign lost: ``avr="naive"`` only      ``torch.func.jvp``
``Flatten``                (not a conv layer: refused)          the flatten itself
anything else              refused, naming the layer            ``torch.func.jvp`` of the op
(``add``, ``cat``, ...)                                         alone, at its recorded inputs
=========================  ===================================  ==============================

Layer-wise, every solve is minimum-norm: the part of the input that no feature sees comes
back as 0 in the space the first conv reads. Between layers the estimate is carried as a
target on the layer's output (values, an optional mask of the entries that are known,
optional bounds), so max-pooling, activation and BatchNorm fold into the one masked solve
of the conv below them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

from invert.errors import UserError
from invert.linalg.operators import ConvOperator, as_pair
from invert.linalg.solvers import bounded_least_squares, fft_least_squares, least_squares
from invert.linalg.switches import (
    crelu_equations,
    max_pool_with_switches,
    unpool_switches,
    window_bounds,
)
from invert.nn.activations import AVR, CReLU
from invert.nn.net import EVAL_IDENTITY, Normalize

__all__ = ["RULES", "LayerReport", "Rule", "rule_for"]


@dataclass
class LayerReport:
    """Diagnostics of one step of the walk back (worst sample of the batch)."""

    name: str
    operation: str
    inverse: str
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
    conv_solver: str
    cg_tol: float
    cg_iterations: int
    strict: bool
    dtype: torch.dtype
    device: torch.device
    switches: dict[int, torch.Tensor]
    # the walk as the joint solve's start: a layer with fewer equations than unknowns is
    # solved only to this (its minimum-norm answer is not the input at any tolerance), and
    # so is every layer below it (their targets are then no closer than that)
    start_tol: float | None = None
    inexact: bool = False


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
        step.name, step.operation, "exact"
    )


def _invert_batchnorm(module: nn.BatchNorm2d, step, target, ctx):
    if module.running_mean is None or module.running_var is None:
        raise UserError(
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
    return new, LayerReport(step.name, step.operation, method)


def _invert_identity(module, step, target, ctx):
    return target, LayerReport(step.name, step.operation, "identity")


def _invert_crelu(module: CReLU, step, target, ctx):
    if module.dim != 1:
        raise UserError(f"layer {step.name!r} (CReLU) concatenates along dim {module.dim}; "
                         "only the channel axis (dim=1) is supported")  # fmt: skip
    mask, z = crelu_equations(target.values, target.mask)
    eq = None if mask is None else int(mask.flatten(1).sum(1).min())
    return _Target(z, mask), LayerReport(step.name, step.operation, "pos - neg", equations=eq)


def _invert_relu(module, step, target, ctx):
    y, mask = target.values, target.mask
    if ctx.relu == "naive":
        return _Target(y, mask), LayerReport(step.name, step.operation, "naive (z = relu(z))")
    known = torch.ones_like(y, dtype=torch.bool) if mask is None else mask.expand_as(y)
    active = known & (y > 0)
    new = _Target(torch.where(active, y, 0), active)
    if ctx.relu == "constrained":
        upper = torch.where(known & ~active, 0.0, math.inf).to(y.dtype)
        if target.upper is not None:  # relu(z) <= U (U >= 0) means z <= U
            upper = torch.minimum(upper, target.upper)
        new.upper = upper
    eq = int(active.flatten(1).sum(1).min())
    return new, LayerReport(step.name, step.operation, ctx.relu, equations=eq)


def _invert_leaky(module: nn.LeakyReLU, step, target, ctx):
    slope = module.negative_slope
    if not slope > 0:
        raise UserError(f"layer {step.name!r} (LeakyReLU) has slope {slope} <= 0: not invertible")

    def fn(t):
        return torch.where(t > 0, t, t / slope)

    return _elementwise(target, fn), LayerReport(step.name, step.operation, "exact")


def _invert_avr(module, step, target, ctx):
    if ctx.avr != "naive":
        raise UserError(
            f"layer {step.name!r} (AVR) keeps |z| and loses the sign; pass avr='naive' to "
            "take |z| as z (a lossy reconstruction)"
        )
    return _Target(target.values, target.mask), LayerReport(
        step.name, step.operation, "naive (z = |z|)"
    )


def _invert_maxpool(module: nn.MaxPool2d, step, target, ctx):
    idx = ctx.switches.get(step.name)
    if idx is None:
        raise UserError(f"no switches recorded for {step.name!r}; recompute the features")
    idx = idx.to(ctx.device)
    if idx.shape != target.values.shape:
        raise UserError(f"switches of {step.name!r} have shape {tuple(idx.shape)}, the "
                         f"features {tuple(target.values.shape)}")  # fmt: skip
    mask, values = unpool_switches(target.values, idx, step.in_shape, mask=target.mask)
    new = _Target(values, mask)
    if ctx.relu == "constrained":
        new.upper = window_bounds(target.values, module, step.in_shape, mask=target.mask)
    eq = int(mask.flatten(1).sum(1).min())
    return new, LayerReport(step.name, step.operation, "switches", equations=eq)


def _avgpool_operator(step, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    c, h, w = step.in_shape
    kernel, stride, padding = as_pair(kernel), as_pair(stride or kernel), as_pair(padding)
    weight = torch.full((c, 1, *kernel), 1.0 / (divisor or kernel[0] * kernel[1]))
    op = ConvOperator(weight.double(), (h, w), stride=stride, padding=padding, groups=c)
    if op.out_shape != step.out_shape:
        raise UserError(
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


def _solve_linear(op, bias, step, target, ctx, what):
    """Solve the (masked, bounded) least-squares problem of a conv-like layer."""
    t0 = time.perf_counter()
    values = target.values if bias is None else target.values - bias
    lower = target.lower - bias if target.lower is not None and bias is not None else target.lower
    upper = target.upper - bias if target.upper is not None and bias is not None else target.upper
    bounded = any(b is not None and bool(torch.isfinite(b).any()) for b in (lower, upper))
    circular = isinstance(op, ConvOperator) and op.padding_mode == "circular"
    if ctx.conv_solver == "fft" and not circular:
        raise UserError(f"conv_solver='fft' needs circular padding; layer {step.name!r} pads "
                         "with zeros")  # fmt: skip
    mask = target.mask
    if mask is not None:
        mask = mask.expand_as(values)
        values = torch.where(mask, values, 0)
    tol = ctx.cg_tol
    if ctx.start_tol is not None:
        equations = values[0].numel() if mask is None else int(mask.flatten(1).sum(1).max())
        ctx.inexact |= equations < math.prod(op.in_shape)
        if ctx.inexact:
            tol = max(tol, ctx.start_tol)
    if ctx.inexact and values.dtype == torch.float64:  # a start to 1e-2: float32 is plenty
        op, values = op.to(dtype=torch.float32), values.float()
        lower, upper = (None if b is None else b.float() for b in (lower, upper))
    kwargs = dict(tol=tol, strict=ctx.strict)
    if bounded:
        x, info = bounded_least_squares(
            op, values, mask=mask, lower=lower, upper=upper, max_iter=ctx.cg_iterations, **kwargs
        )
    elif mask is None and circular and ctx.conv_solver in ("auto", "fft"):
        x, info = fft_least_squares(op, values, **kwargs)
    else:
        x, info = least_squares(op, values, mask=mask, max_iter=ctx.cg_iterations, **kwargs)
    x = x.to(ctx.dtype)
    s = info.summary()
    report = LayerReport(
        step.name, step.operation, f"{what}: {s['method']}",
        residual=s["residual"], data_residual=s["data_residual"], iterations=s["iterations"],
        converged=s["converged"], equations=s["equations"], unknowns=s["unknowns"],
        rank=s["rank"], violation=s["violation"], seconds=time.perf_counter() - t0,
    )  # fmt: skip
    return _Target(x), report


def _invert_conv(module: nn.Conv2d, step, target, ctx):
    try:
        op = ConvOperator.from_conv(module, step.in_shape[1:])
    except ValueError as error:
        raise UserError(f"layer {step.name!r} (Conv2d): {error}") from None
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
        raise UserError(
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


# --- J v of one operation at its input ------------------------------------------------------


def _linear_conv(module: nn.Conv2d, x, switches):
    weight = module.weight
    if module.padding_mode == "zeros":
        args = (module.stride, module.padding, module.dilation, module.groups)
        return lambda v: F.conv2d(v, weight, None, *args)
    return lambda v: module._conv_forward(v, weight, None)


def _linear_relu(module, x, switches):
    mask = (x > 0).to(x.dtype)
    return lambda v: v * mask


def _linear_crelu(module: CReLU, x, switches):
    pos, neg = (x > 0).to(x.dtype), (x < 0).to(x.dtype)
    return lambda v: torch.cat((v * pos, -(v * neg)), module.dim)


def _linear_leaky(module: nn.LeakyReLU, x, switches):
    slope = torch.where(x > 0, 1.0, module.negative_slope).to(x.dtype)
    return lambda v: v * slope


def _linear_maxpool(module: nn.MaxPool2d, x, switches):
    if x.dim() != 4:
        return None
    if switches is None:
        switches = max_pool_with_switches(x, module)[1]
    return lambda v: v.flatten(2).gather(2, switches.flatten(2)).view_as(switches)


def _linear_batchnorm(module: nn.BatchNorm2d, x, switches):
    if module.training or module.running_var is None or x.dim() != 4:
        return None
    gain = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        gain = gain * module.weight
    return lambda v: v * gain.view(1, -1, 1, 1)


def _linear_normalize(module: Normalize, x, switches):
    return lambda v: v / module.std.view(1, -1, *([1] * (v.dim() - 2)))


def _linear_identity(module, x, switches):
    return None if module.training else (lambda v: v)


def _linear_itself(module, x, switches):
    return module


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What one kind of operation does in the layer-wise walk and in the joint map.

    ``invert(module, step, target, ctx)`` undoes it layer-wise (None: refused);
    ``linear(module, x, switches)`` returns ``v -> J v`` at its input ``x`` (None, or a
    None result: ``torch.func.jvp`` of the op); ``compare`` is what the joint map compares
    with the features when the layer ends with it.
    """

    types: tuple[type, ...]
    invert: Callable | None
    linear: Callable | None
    compare: str = "output"


RULES: tuple[Rule, ...] = (
    Rule((Normalize,), _invert_normalize, _linear_normalize),
    Rule((nn.BatchNorm2d,), _invert_batchnorm, _linear_batchnorm),
    Rule(EVAL_IDENTITY, _invert_identity, _linear_identity),
    Rule((CReLU,), _invert_crelu, _linear_crelu, compare="pre-activation"),
    Rule((nn.ReLU,), _invert_relu, _linear_relu, compare="active units"),
    Rule((nn.LeakyReLU,), _invert_leaky, _linear_leaky),
    Rule((AVR,), _invert_avr, None),
    Rule((nn.Conv2d,), _invert_conv, _linear_conv),
    Rule((nn.MaxPool2d,), _invert_maxpool, _linear_maxpool),
    Rule((nn.AvgPool2d,), _invert_avgpool, _linear_itself),
    Rule((nn.AdaptiveAvgPool2d,), _invert_adaptive_avgpool, _linear_itself),
    Rule((nn.Flatten,), None, _linear_itself),
)

_NONE = Rule((), None, None)


def rule_for(module: nn.Module | None) -> Rule:
    """The rule of ``module`` (a place's module or module equivalent); an empty rule (no
    layer-wise inverse, ``torch.func.jvp`` in the joint map) when none applies.

    Examples
    --------
    >>> rule_for(nn.ReLU()).compare, rule_for(None).invert is None
    ('active units', True)
    """
    if module is not None:
        for rule in RULES:
            if isinstance(module, rule.types):
                if rule.compare == "pre-activation" and getattr(module, "dim", 1) != 1:
                    break
                return rule
    return _NONE


def linear_map(module, x, switches=None):
    """``v -> J v`` of ``module`` at its input ``x`` from its rule, else ``torch.func.jvp``."""
    rule = rule_for(module)
    fn = rule.linear(module, x, switches) if rule.linear is not None else None
    return fn if fn is not None else (lambda v: jvp(module, (x,), (v,))[1])
