"""The model's own map from its input to a layer, as a residual against recorded features.

:class:`LayerMap` is what the joint solver inverts and what the certificate measures:
``x -> f_L(x)``, the model's own forward pass up to the layer (any ``nn.Module``, via
:func:`invert.nn.probe`), differentiable under ``torch.func.jvp``/``vjp``. What is
compared with the features depends on the layer's last module (the leaf whose output
*is* the layer's output):

==========  ==========================================================================
``CReLU``   the pre-activation ``z`` (the CReLU's input) against ``pos - neg``: exact,
            and linear in ``z`` (CReLU's own Jacobian would give the same ``J^T J``)
``ReLU``    ``z - y`` where the unit is active (``y > 0``: linear in ``z``, with a
            gradient even while the estimate has the unit off) and ``relu(z)`` where it
            is not (``z <= 0`` is all that is known); at ``z = f(x)`` these are the
            rows of the ReLU output's own Jacobian
other       the layer's output itself against the features
==========  ==========================================================================

Max-pooling (``nn.MaxPool2d`` modules): with ``pooling="recorded"`` each output is
replaced, by a forward hook, with the gather of its input at the switches recorded in
the features, so the map is the network with that selection held fixed (piecewise
linear for ReLU/CReLU nets); with ``"model"`` the network's own max decides. Every
sample is its own problem: the map of a batch is evaluated on any subset ``idx`` of the
images (``residual(x, idx)``).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp, vjp

from invert.linalg.switches import max_pool_with_switches
from invert.nn import eval_mode, probe
from invert.nn.activations import CReLU
from invert.nn.net import EVAL_IDENTITY, Normalize

from .features import Features, fingerprint, fingerprint_names

__all__ = ["LayerMap", "Linearization", "check_features"]

_POOLING = ("recorded", "model")


def check_features(model: nn.Module, feats: Features) -> None:
    """Refuse features that are not from ``model`` (as it is now) or are not finite."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(feats, Features):
        raise TypeError(f"expected Features from invert.reconstruction.features; got "
                        f"{type(feats).__name__}")  # fmt: skip
    modules = dict(model.named_modules())
    if feats.layer not in modules or any(s.name not in modules for s in feats.steps):
        raise ValueError("these features come from another model: its layers "
                         f"{feats.path} are not all in this one")  # fmt: skip
    names = fingerprint_names(feats.path, feats.chain)
    if fingerprint(model, names) != feats.fingerprint:
        raise ValueError(
            "these features come from another model (or its weights changed since); "
            "compute them with features(model, x, layer=...) on this model"
        )
    act = feats.activation
    if not isinstance(act, torch.Tensor) or not act.is_floating_point():
        raise TypeError("the features' activation must be a floating-point tensor")
    if not torch.isfinite(act).all():
        raise ValueError("the features' activation contains NaN or Inf; reconstruct from "
                         "finite features")  # fmt: skip


class Linearization:
    """The map at ``x`` for images ``idx``: residual ``r``, ``jvp(v) = J v``, ``vjp(u) = J^T u``."""

    def __init__(self, r, jvp_fn, vjp_fn):
        self.r, self._jvp, self._vjp = r, jvp_fn, vjp_fn

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return self._jvp(v)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self._vjp(u)[0]


def _linear_step(module: nn.Module, x: torch.Tensor, switches: torch.Tensor | None):
    """``v -> J v`` of one leaf module at its input ``x``: one conv for a conv, a mask for
    an activation, a gather for max-pooling; torch.func.jvp for anything else."""
    if isinstance(module, nn.Conv2d):
        weight = module.weight
        if module.padding_mode == "zeros":
            args = (module.stride, module.padding, module.dilation, module.groups)
            return lambda v: F.conv2d(v, weight, None, *args)
        return lambda v: module._conv_forward(v, weight, None)
    if isinstance(module, nn.ReLU):
        mask = (x > 0).to(x.dtype)
        return lambda v: v * mask
    if isinstance(module, CReLU):
        pos, neg = (x > 0).to(x.dtype), (x < 0).to(x.dtype)
        return lambda v: torch.cat((v * pos, -(v * neg)), module.dim)
    if isinstance(module, nn.LeakyReLU):
        slope = torch.where(x > 0, 1.0, module.negative_slope).to(x.dtype)
        return lambda v: v * slope
    if isinstance(module, nn.MaxPool2d) and x.dim() == 4:
        if switches is None:
            switches = max_pool_with_switches(x, module)[1]
        return lambda v: v.flatten(2).gather(2, switches.flatten(2)).view_as(switches)
    if isinstance(module, nn.BatchNorm2d) and not module.training and x.dim() == 4:
        if module.running_var is not None:
            gain = torch.rsqrt(module.running_var + module.eps)
            if module.weight is not None:
                gain = gain * module.weight
            return lambda v: v * gain.view(1, -1, 1, 1)
    if isinstance(module, Normalize):
        return lambda v: v / module.std.view(1, -1, *([1] * (v.dim() - 2)))
    if isinstance(module, EVAL_IDENTITY) and not module.training:
        return lambda v: v
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
        return module
    return lambda v: jvp(module, (x,), (v,))[1]


class LayerMap:
    """The residual ``r(x) = g(f_L(x)) - t`` of one layer's features, per image.

    Use as a context manager: inside, the model is in eval mode with frozen parameters
    and carries the switch hooks; everything is restored on exit. A model whose dtype or
    device differs from the requested ones is copied, never changed.

    Parameters
    ----------
    model : nn.Module
        The model the features came from.
    feats : Features
        From :func:`~invert.reconstruction.features`.
    pooling : {"recorded", "model"}
        Max-pooling held at the recorded switches, or the network's own max.
    dtype, device
        Of the computation.
    """

    def __init__(self, model, feats, *, pooling="recorded", dtype=torch.float64, device="cpu"):
        check_features(model, feats)
        if pooling not in _POOLING:
            raise ValueError(f"pooling must be one of {_POOLING}; got {pooling!r}")
        self.feats, self.pooling = feats, pooling
        self.dtype, self.device = dtype, torch.device(device)
        tensors = list(model.parameters()) + list(model.buffers())
        moved = any(t.is_floating_point() and (t.dtype != dtype or t.device != self.device)
                    for t in tensors)  # fmt: skip
        self.model = copy.deepcopy(model).to(self.device, dtype) if moved else model
        self.layer = feats.layer
        self.final = feats.steps[-1].name if feats.steps else None
        self.input_shape = tuple(feats.input_shape)
        self.n_images = feats.activation.shape[0]
        self._state = {"idx": None, "calls": defaultdict(int), "pre": None, "hold": True,
                       "record": None}  # fmt: skip
        self._switches: dict[str, list[torch.Tensor]] = defaultdict(list)
        if pooling == "recorded":
            for i in sorted(feats.switches):
                self._switches[feats.steps[i].name].append(feats.switches[i].to(self.device))
        self._handles, self._saved = [], None

    # --- context: eval mode, frozen parameters, hooks ----------------------------------------

    def __enter__(self) -> LayerMap:
        self._eval = eval_mode(self.model)
        self._eval.__enter__()
        self._saved = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self._saved:
            p.requires_grad_(False)
        modules = dict(self.model.named_modules())
        for name in self._switches:
            self._handles.append(modules[name].register_forward_hook(self._gather(name)))
        if self.final is not None:
            self._handles.append(modules[self.final].register_forward_pre_hook(self._keep_input))
        self._steps = [modules[step.name] for step in self.feats.steps]
        if self.feats.chain:
            for module in dict.fromkeys(self._steps):
                self._handles.append(module.register_forward_pre_hook(self._record))
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for p, flag in self._saved or ():
            p.requires_grad_(flag)
        self._saved = None
        self._eval.__exit__(None, None, None)

    def _gather(self, name):
        def hook(module, args, output):
            if not self._state["hold"]:
                return None
            calls = self._state["calls"]
            k = calls[name]
            calls[name] += 1
            idx = self._switches[name][k][self._state["idx"]]
            return args[0].flatten(2).gather(2, idx.flatten(2)).view_as(idx)

        return hook

    def _keep_input(self, module, args):
        self._state["pre"] = args[0] if args else None

    def _record(self, module, args):
        if self._state["record"] is not None:
            self._state["record"].append(args[0])

    # --- the map -----------------------------------------------------------------------------

    def _run(self, x: torch.Tensor, idx: torch.Tensor, *, output: bool = False) -> torch.Tensor:
        """The layer's output (``output=True``) or the compared quantity, for images ``idx``."""
        self._state["idx"], self._state["pre"] = idx, None
        self._state["calls"].clear()
        out = probe(self.model, x, outputs=[self.layer]).outputs[self.layer]
        if output or self.kind == "output":
            return out
        return self._state["pre"]

    def residual(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``r(x)`` for the images ``idx`` (differentiable; not divided by the scale)."""
        z = self._run(x, idx)
        if self.kind == "relu":
            active = self._active[idx]
            return torch.where(active, z - self.target[idx], torch.relu(z))
        return z - self.target[idx]

    def linearize(self, x: torch.Tensor, idx: torch.Tensor) -> Linearization:
        """The residual at ``x`` and its Jacobian products (``J^T`` reused from one pass).

        For a chain, ``J v`` replays the recorded pass leaf by leaf (one conv per conv,
        masks, gathers: a third of what ``torch.func.jvp`` costs, which recomputes the
        pass and convolves twice more); otherwise it is ``torch.func.jvp`` of the map.
        """

        def recorded(v):
            inputs = []
            self._state["record"] = inputs
            try:
                return self.residual(v, idx), inputs
            finally:
                self._state["record"] = None

        if not self.feats.chain:
            r, vjp_fn = vjp(lambda v: self.residual(v, idx), x)
            return Linearization(r, lambda v: self.jvp(x, idx, v), vjp_fn)
        r, vjp_fn, inputs = vjp(recorded, x, has_aux=True)
        if len(inputs) != len(self._steps):
            return Linearization(r, lambda v: self.jvp(x, idx, v), vjp_fn)
        return Linearization(r, self._replay(inputs, idx), vjp_fn)

    def _replay(self, inputs, idx):
        calls = defaultdict(int)
        fns = []
        last = len(self._steps) - (self.kind != "output")
        for step, module, x_k in zip(self.feats.steps[:last], self._steps, inputs):
            switches = None
            if step.name in self._switches:
                switches = self._switches[step.name][calls[step.name]][idx]
                calls[step.name] += 1
            fns.append(_linear_step(module, x_k, switches))
        on = (inputs[-1] > 0).to(inputs[-1].dtype) if self.kind == "relu" else None
        active = self._active[idx] if self.kind == "relu" else None

        def apply(v):
            for fn in fns:
                v = fn(v)
            return v if on is None else torch.where(active, v, v * on)

        return apply

    def jvp(self, x: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``J v`` at ``x`` by ``torch.func.jvp`` (any model)."""
        return jvp(lambda u: self.residual(u, idx), (x,), (v,))[1]

    def relative(self, r: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``||r|| / ||t||`` per image."""
        return torch.linalg.vector_norm(r.flatten(1), dim=1) / self.scale[idx]

    def model_residual(self, x: torch.Tensor) -> torch.Tensor:
        """Relative misfit of the *model's own* layer output at ``x`` (its own max-pooling)."""
        self._state["hold"] = False
        try:
            with torch.no_grad():
                out = self._run(x, self.all, output=True)
        finally:
            self._state["hold"] = True
        y = self.feats.activation.to(self.device, self.dtype)
        norm = torch.linalg.vector_norm(y.flatten(1), dim=1)
        diff = torch.linalg.vector_norm((out - y).flatten(1), dim=1)
        return (diff / torch.where(norm > 0, norm, torch.ones_like(norm))).cpu()

    def rank_bound(self) -> torch.Tensor:
        """Per image, an upper bound on the rank of ``J`` by counting (chains only: else n)."""
        n = math.prod(self.input_shape)
        rows = self._rows.clone()
        if not self.feats.chain:
            return torch.minimum(rows, torch.full_like(rows, n))
        narrowest = min([n] + [math.prod(s.out_shape) for s in self.feats.steps if s.out_shape])
        return torch.minimum(rows, torch.full_like(rows, narrowest))

    # --- set-up: what is compared, and can autograd differentiate it -------------------------

    def _setup(self) -> None:
        feats = self.feats
        self.all = torch.arange(self.n_images, device=self.device)
        y = feats.activation.to(self.device, self.dtype)
        probe_x = torch.zeros(1, *self.input_shape, dtype=self.dtype, device=self.device)
        self.kind = "output"
        modules = dict(self.model.named_modules())
        final = modules.get(self.final)
        if self._final_is_output(probe_x):
            if isinstance(final, CReLU) and final.dim == 1 and y.dim() >= 2:
                self.kind = "crelu"
            elif isinstance(final, nn.ReLU):
                self.kind = "relu"
        if self.kind == "crelu":
            k = y.shape[1] // 2
            self.target = y[:, :k] - y[:, k:]
        else:
            self.target = y
        self._active = y > 0 if self.kind == "relu" else None
        flat = self.target.flatten(1)
        norm = torch.linalg.vector_norm(flat, dim=1)
        self.scale = torch.where(norm > 0, norm, torch.ones_like(norm))
        if self.kind == "relu":
            self._rows = self._active.flatten(1).sum(1).cpu()
        else:
            self._rows = torch.full((self.n_images,), flat.shape[1], dtype=torch.long)
        self._check_differentiable(probe_x)

    def _final_is_output(self, x) -> bool:
        seen = {}

        def leaf(name, module, args, output):
            seen["last"] = output

        self._state["idx"] = torch.zeros(1, dtype=torch.long, device=self.device)
        self._state["calls"].clear()
        with torch.no_grad():
            out = probe(self.model, x, outputs=[self.layer], leaf=leaf).outputs[self.layer]
        return seen.get("last") is out

    def check_jacobian(self, x: torch.Tensor) -> None:
        """Refuse, naming it, a leaf that autograd differentiates as exactly zero at ``x``.

        ``torch.round``, ``sign``, ``floor``... have a zero derivative under autograd:
        the map is then flat to the solver and no step can move through that layer.
        """
        seen, names = [], {m: n for n, m in self.model.named_modules()}

        def after(module, args, output):
            ins = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            if ins and isinstance(output, torch.Tensor) and output.requires_grad:
                if any(a is output for a in ins):
                    return  # in place: no separate input gradient to compare
                for t in [*ins, output]:
                    t.retain_grad()
                seen.append((module, ins, output))

        leaves = [m for m in self.model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(after) for m in leaves]
        try:
            with torch.enable_grad():
                v = x.detach().clone().requires_grad_(True)
                r = self.residual(v, self.all[: x.shape[0]])
                r.backward(torch.randn_like(r))
        finally:
            for handle in handles:
                handle.remove()
        for module, ins, output in seen:
            flows = output.grad is not None and bool(output.grad.any())
            if flows and all(a.grad is None or not bool(a.grad.any()) for a in ins):
                raise ValueError(
                    f"layer {names[module]!r} ({type(module).__name__}) cannot be "
                    "differentiated: autograd gives it a zero Jacobian at the start point "
                    "(an op such as round, sign or argmax?), so the joint solver cannot "
                    f"move through it to reach {self.layer!r}"
                )

    def _check_differentiable(self, x) -> None:
        """One plain-autograd pass naming the first leaf that cuts the graph, then torch.func."""
        idx = torch.zeros(1, dtype=torch.long, device=self.device)
        current, culprit = {}, {}

        def carries(t):
            items = t if isinstance(t, (tuple, list)) else (t,)
            return any(isinstance(a, torch.Tensor) and a.requires_grad for a in items)

        def before(module, args):
            current["name"] = f"{names[module]!r} ({type(module).__name__})"

        def after(module, args, output):
            if not culprit and carries(args) and not carries(output):
                culprit["name"] = current["name"]

        names = {m: n for n, m in self.model.named_modules()}
        leaves = [m for m in self.model.modules() if not list(m.children())]
        handles = [m.register_forward_pre_hook(before) for m in leaves]
        handles += [m.register_forward_hook(after) for m in leaves]
        try:
            self._state["idx"] = idx
            self._state["calls"].clear()
            with torch.enable_grad():
                out = self._run(x.clone().requires_grad_(True), idx, output=True)
            if culprit or not carries(out):
                where = culprit.get("name", repr(self.layer))
                raise ValueError(
                    f"layer {where} cannot be differentiated by autograd (its output does "
                    f"not depend differentiably on its input), so the map to {self.layer!r} "
                    "has no Jacobian; joint inversion needs one (use strategy='layerwise' "
                    "for a chain)"
                )
            try:
                with torch.no_grad():
                    lin = self.linearize(x, idx)
                    lin.vjp(torch.ones_like(lin.r))
                    ones = torch.ones_like(x)
                    if not torch.allclose(lin.jvp(ones), self.jvp(x, idx, ones)):
                        raise RuntimeError("the replayed Jacobian disagrees with torch.func")
            except Exception as error:  # noqa: BLE001 - reported with the layer's name
                raise ValueError(
                    f"torch.func cannot differentiate the map to {self.layer!r} at layer "
                    f"{current.get('name', '?')}: {error}"
                ) from error
        finally:
            for handle in handles:
                handle.remove()
