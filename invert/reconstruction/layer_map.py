"""The model's own map from its input to a layer, as a residual against recorded features.

:class:`LayerMap` is what the joint solver inverts and what the certificate measures:
``x -> f_L(x)``, the model's own forward pass up to the layer's place, run on the model's
graph (:mod:`invert.nn.graph`: any traceable ``nn.Module``, in-place ops out of place),
differentiable under ``torch.func.jvp``/``vjp``. What is compared with the features is
the "compare" column of :mod:`invert.reconstruction.rules`, read for the layer's place:

==================  =====================================================================
``pre-activation``  (CReLU) the CReLU's input ``z`` against ``pos - neg``: exact, and
                    linear in ``z`` (CReLU's own Jacobian would give the same ``J^T J``)
``active units``    (ReLU, module or functional) ``z - y`` where the unit is active
                    (``y > 0``: linear in ``z``, with a gradient even while the estimate
                    has the unit off) and ``relu(z)`` where it is not (``z <= 0`` is all
                    that is known); at ``z = f(x)`` these are the rows of the ReLU
                    output's own Jacobian
``output``          anything else: the place's output itself against the features
==================  =====================================================================

Max-pooling places (``nn.MaxPool2d`` or ``F.max_pool2d``): with ``pooling="recorded"``
each output is replaced by the gather of its input at the switches recorded in the
features, so the map is the network with that selection held fixed (piecewise linear
for ReLU/CReLU nets); with ``"model"`` the network's own max decides. Every sample is its
own problem: the map of a batch is evaluated on any subset ``idx`` of the images.

Jacobian products: ``J^T u`` by ``torch.func.vjp`` of the recorded pass; ``J v`` by
walking the same recorded pass place by place with each op's linear rule (one conv per
conv, masks, gathers; ``torch.func.jvp`` of the op alone where the table has no rule), a
third of what ``torch.func.jvp`` of the whole map costs. Only for an untraceable model
that is not a chain does ``J v`` fall back to ``torch.func.jvp`` of the whole map.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import jvp, vjp

from invert.errors import UserError, UserTypeError
from invert.nn import eval_mode

from .features import Features, fingerprint, graph_of, tensors_used
from .rules import rule_for

__all__ = ["LayerMap", "Linearization", "check_features"]

_POOLING = ("recorded", "model")


def check_features(model: nn.Module, feats: Features) -> None:
    """Refuse features that are not from ``model`` (as it is now) or are not finite."""
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not isinstance(feats, Features):
        raise UserTypeError(f"expected Features from invert.reconstruction.features; got "
                        f"{type(feats).__name__}")  # fmt: skip
    graph = graph_of(model, feats)
    if feats.place not in graph.places or any(s.name not in graph.places for s in feats.steps):
        raise UserError("these features come from another model: its layers "
                         f"{feats.path} are not all in this one")  # fmt: skip
    if fingerprint(graph, feats.place) != feats.fingerprint:
        raise UserError(
            "these features come from another model (or its weights changed since); "
            "compute them with features(model, x, layer=...) on this model"
        )
    act = feats.activation
    if not isinstance(act, torch.Tensor) or not act.is_floating_point():
        raise UserTypeError("the features' activation must be a floating-point tensor")
    if not torch.isfinite(act).all():
        raise UserError("the features' activation contains NaN or Inf; reconstruct from "
                         "finite features")  # fmt: skip


def _copy_used(model: nn.Module, feats: Features, device, dtype) -> nn.Module:
    """A copy of ``model`` whose tensors on the path to the features' place are in ``dtype``
    on ``device``; the others (a classifier head: most of VGG-16's 138M parameters) are
    shared with ``model``, unconverted, as nothing runs them."""
    graph = graph_of(model, feats)
    used = dict(tensors_used(model, graph, [s.name for s in feats.steps]))
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    if len(used) == len(named):
        return copy.deepcopy(model).to(device, dtype)
    twin = copy.deepcopy(model, memo={id(t): t for path, t in named if path not in used})
    for prefix, module in twin.named_modules(remove_duplicate=False):
        for table in (module._parameters, module._buffers):
            for key, t in table.items():
                if t is None or f"{prefix}.{key}".lstrip(".") not in used:
                    continue
                moved = t.detach().to(device, dtype if t.is_floating_point() else t.dtype)
                is_param = table is module._parameters
                table[key] = nn.Parameter(moved, t.requires_grad) if is_param else moved
    return twin


class Linearization:
    """The map at ``x`` for images ``idx``: residual ``r``, ``jvp(v) = J v``, ``vjp(u) = J^T u``."""

    def __init__(self, r, jvp_fn, vjp_fn):
        self.r, self._jvp, self._vjp = r, jvp_fn, vjp_fn

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return self._jvp(v)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self._vjp(u)[0]


class LayerMap:
    """The residual ``r(x) = g(f_L(x)) - t`` of one layer's features, per image.

    Use as a context manager: inside, the model is in eval mode with frozen parameters;
    everything is restored on exit. A model whose dtype or device differs from the
    requested ones is copied, never changed.

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
            raise UserError(f"pooling must be one of {_POOLING}; got {pooling!r}")
        self.feats, self.pooling = feats, pooling
        self.dtype, self.device = dtype, torch.device(device)
        tensors = list(model.parameters()) + list(model.buffers())
        moved = any(t.is_floating_point() and (t.dtype != dtype or t.device != self.device)
                    for t in tensors)  # fmt: skip
        self.source = model
        self.model = _copy_used(model, feats, self.device, dtype) if moved else model
        self.graph = graph_of(self.model, feats)
        self.layer, self.place = feats.layer, feats.place
        self.input_shape = tuple(feats.input_shape)
        self.n_images = feats.activation.shape[0]
        self._switches = {}
        if pooling == "recorded":
            self._switches = {k: v.to(self.device) for k, v in feats.switches.items()}
        self._live = [s.name for s in feats.steps]
        self._saved = None

    def twin(self, dtype: torch.dtype) -> LayerMap:
        """This map in another dtype, from the same model (to be entered)."""
        return LayerMap(self.source, self.feats, pooling=self.pooling, dtype=dtype,
                        device=self.device)  # fmt: skip

    # --- context: eval mode, frozen parameters ------------------------------------------------

    def __enter__(self) -> LayerMap:
        self._eval = eval_mode(self.model)
        self._eval.__enter__()
        self._saved = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self._saved:
            p.requires_grad_(False)
        try:
            self._setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for p, flag in self._saved or ():
            p.requires_grad_(flag)
        self._saved = None
        self._eval.__exit__(None, None, None)

    # --- the map -----------------------------------------------------------------------------

    def _substitutes(self, idx, hold=True):
        if not hold:
            return {}

        def gather(name):
            def fn(inputs, output):
                switches = self._switches[name][idx]
                return inputs[0].flatten(2).gather(2, switches.flatten(2)).view_as(switches)

            return fn

        return {name: gather(name) for name in self._switches}

    def _run(self, x, idx, *, output=False, hold=True, record=None):
        """The layer's output (``output=True``) or the compared quantity, for images ``idx``."""
        seen = {}

        def keep(place, inputs, out):
            if place.name == self.place and inputs:
                seen["pre"] = inputs[0]
            if record is not None:
                record(place, inputs, out)

        out = self.graph.run(x, [self.place], substitute=self._substitutes(idx, hold),
                             record=keep)[self.place]  # fmt: skip
        if output or self.comparison == "output":
            return out
        return seen["pre"]

    def residual(self, x: torch.Tensor, idx: torch.Tensor, *, record=None) -> torch.Tensor:
        """``r(x)`` for the images ``idx`` (differentiable; not divided by the scale)."""
        z = self._run(x, idx, record=record)
        if self.comparison == "relu":
            active = self._active[idx]
            return torch.where(active, z - self.target[idx], torch.relu(z))
        return z - self.target[idx]

    def linearize(self, x: torch.Tensor, idx: torch.Tensor) -> Linearization:
        """The residual at ``x`` and its Jacobian products (``J^T`` reused from one pass).

        ``J v`` walks the recorded pass with each op's linear rule (see the module notes).
        """
        if self._replayable is False:
            r, vjp_fn = vjp(lambda v: self.residual(v, idx), x)
            return Linearization(
                r, lambda v: jvp(lambda u: self.residual(u, idx), (x,), (v,))[1], vjp_fn
            )
        places = []

        def recorded(v):
            values = []

            def record(place, inputs, out):
                if place.name in self._live_set:
                    places.append(place)
                    values.append([t if isinstance(t, torch.Tensor) else None for t in inputs])

            return self.residual(v, idx, record=record), values

        r, vjp_fn, values = vjp(recorded, x, has_aux=True)
        return Linearization(r, self._replay(places, values, idx), vjp_fn)

    def _replay(self, places, values, idx):
        fns = []
        for place, ins in zip(places, values):
            if place.name not in self._replay_set:
                continue
            live = [k for k, name in enumerate(place.inputs) if name in self._tangent_sources]
            fns.append((place.name, [place.inputs[k] for k in live],
                        self._linear(place, ins, live, idx)))  # fmt: skip
        z = None
        if self.comparison == "relu":
            z = values[[p.name for p in places].index(self.place)][0]
        on = (z > 0).to(z.dtype) if z is not None else None
        active = self._active[idx] if self.comparison == "relu" else None
        compared, origin = self._compared, self.graph.input

        def apply(v):
            tangent = {origin: v}
            for name, sources, fn in fns:
                tangent[name] = fn([tangent[s] for s in sources])
            out = tangent[compared]
            return out if on is None else torch.where(active, out, out * on)

        return apply

    def _linear(self, place, ins, live, idx):
        """``[tangents of the live inputs] -> tangent of the output`` of one recorded place."""
        if place.module is not None and live == [0]:
            rule = rule_for(place.module)
            switches = self._switches[place.name][idx] if place.name in self._switches else None
            fn = rule.linear(place.module, ins[0], switches) if rule.linear is not None else None
            if fn is not None:
                return lambda tangents: fn(tangents[0])
        graph = self.graph

        def generic(tangents):
            def f(*primals):
                env = dict(zip(place.inputs, ins))
                env.update({place.inputs[k]: p for k, p in zip(live, primals)})
                return graph.evaluate(place, env)

            return jvp(f, tuple(ins[k] for k in live), tuple(tangents))[1]

        return generic

    def relative(self, r: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``||r|| / ||t||`` per image."""
        return torch.linalg.vector_norm(r.flatten(1), dim=1) / self.scale[idx]

    def rank_bound(self) -> torch.Tensor:
        """Per image, an upper bound on the rank of ``J`` by counting: the compared rows, the
        input's size, and the size of every place all paths from the input pass through."""
        n = math.prod(self.input_shape)
        rows = self._rows.clone()
        sizes = {s.name: math.prod(s.out_shape) for s in self.feats.steps if s.out_shape}
        cut = [sizes[name] for name in self._dominators if name in sizes]
        return torch.minimum(rows, torch.full_like(rows, min([n, *cut])))

    # --- set-up: what is compared, and can autograd differentiate it -------------------------

    def _setup(self) -> None:
        feats, graph = self.feats, self.graph
        self.all = torch.arange(self.n_images, device=self.device)
        y = feats.activation.to(self.device, self.dtype)
        final = graph.places[self.place]
        compare = rule_for(final.module).compare
        self.comparison = "output"
        if y.dim() >= 2 and (final.inputs and final.inputs[0] != "?" or not graph.traced):
            self.comparison = {"pre-activation": "crelu", "active units": "relu"}.get(
                compare, "output"
            )
        if self.comparison == "crelu":
            k = y.shape[1] // 2
            self.target = y[:, :k] - y[:, k:]
        else:
            self.target = y
        self._active = y > 0 if self.comparison == "relu" else None
        flat = self.target.flatten(1)
        norm = torch.linalg.vector_norm(flat, dim=1)
        self.scale = torch.where(norm > 0, norm, torch.ones_like(norm))
        if self.comparison == "relu":
            self._rows = self._active.flatten(1).sum(1).cpu()
        else:
            self._rows = torch.full((self.n_images,), flat.shape[1], dtype=torch.long)
        self._plan_replay(final)
        probe_x = torch.zeros(1, *self.input_shape, dtype=self.dtype, device=self.device)
        _check_differentiable(self, probe_x)

    def _plan_replay(self, final) -> None:
        """Which places the ``J v`` walk visits, and which place's tangent it returns."""
        origin = self.graph.input
        self._live_set = set(self._live) | {origin}
        steps = self._live
        if self.graph.traced:
            self._compared = self.place if self.comparison == "output" else final.inputs[0]
        elif self.feats.chain:
            self._compared = self.place if self.comparison == "output" else (
                steps[-2] if len(steps) > 1 else origin)  # fmt: skip
        else:
            self._compared = None
        self._replayable = self._compared is not None
        if self._compared is not None:
            if self.graph.traced:
                needed = {p.name for p in self.graph.path(self._compared)}
            else:
                end = steps.index(self._compared) + 1 if self._compared in steps else 0
                needed = set(steps[:end])
            self._replay_set = (needed & self._live_set) - {origin}
            self._tangent_sources = self._replay_set | {origin}
        # dominators of the compared place: every path from the input passes through them
        dominators: dict[str, set[str]] = {origin: {origin}}
        order = [p for p in self.graph.places.values() if p.name in self._live_set]
        for p in order:
            if p.name == origin:
                continue
            sources = [dominators[i] for i in p.inputs if i in dominators]
            common = set.intersection(*sources) if sources and self.graph.traced else set()
            dominators[p.name] = {p.name} | common
        target = self._compared if self._compared in dominators else self.place
        self._dominators = dominators.get(target, set()) - {origin}


def check_jacobian(lm: LayerMap, x: torch.Tensor) -> None:
    """Refuse, naming it, a place that autograd differentiates as exactly zero at ``x``.

    ``torch.round``, ``sign``, ``floor``... have a zero derivative under autograd:
    the map is then flat to the solver and no step can move through that layer.
    """
    live = [p for n, p in lm.graph.places.items() if n in lm._live_set and n != lm.graph.input]
    if all(rule_for(p.module).linear is not None for p in live):
        return  # every op on the path has a linear rule: none is flat everywhere
    seen = []

    def record(place, inputs, out):
        ins = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
        if rule_for(place.module).linear is not None:
            return  # a known op: zero only where its units are off, which the solve moves
        if place.name in lm._live_set and ins and isinstance(out, torch.Tensor) \
                and out.requires_grad:  # fmt: skip
            for t in [*ins, out]:
                t.retain_grad()
            seen.append((place, ins, out))

    with torch.enable_grad():
        v = x.detach().clone().requires_grad_(True)
        r = lm.residual(v, lm.all[: x.shape[0]], record=record)
        r.backward(torch.randn_like(r))
    for place, ins, out in seen:
        flows = out.grad is not None and bool(out.grad.any())
        if flows and all(a.grad is None or not bool(a.grad.any()) for a in ins):
            raise UserError(
                f"layer {place.name!r} ({place.operation}) cannot be differentiated: autograd "
                "gives it a zero Jacobian at the start point (an op such as round, sign "
                f"or argmax?), so the joint solver cannot move through it to reach "
                f"{lm.layer!r}"
            )


def _check_differentiable(lm: LayerMap, x) -> None:
    """One plain-autograd pass naming the first place that cuts the graph."""
    idx = torch.zeros(1, dtype=torch.long, device=lm.device)
    culprit = []

    def carries(t):
        items = t if isinstance(t, (tuple, list)) else (t,)
        return any(isinstance(a, torch.Tensor) and a.requires_grad for a in items)

    def record(place, inputs, out):
        if not culprit and place.name in lm._live_set and carries(inputs) \
                and not carries(out):  # fmt: skip
            culprit.append(f"{place.name!r} ({place.operation})")

    with torch.enable_grad():
        out = lm._run(x.clone().requires_grad_(True), idx, output=True, record=record)
    if culprit or not carries(out):
        where = culprit[0] if culprit else repr(lm.layer)
        raise UserError(
            f"layer {where} cannot be differentiated by autograd (its output does "
            f"not depend differentiably on its input), so the map to {lm.layer!r} "
            "has no Jacobian; joint inversion needs one (use strategy='layerwise' "
            "for a chain)"
        )


def model_residual(lm: LayerMap, x: torch.Tensor) -> torch.Tensor:
    """Relative misfit of the *model's own* layer output at ``x`` (its own max-pooling)."""
    with torch.no_grad():
        out = lm._run(x, lm.all, output=True, hold=False)
    y = lm.feats.activation.to(lm.device, lm.dtype)
    norm = torch.linalg.vector_norm(y.flatten(1), dim=1)
    diff = torch.linalg.vector_norm((out - y).flatten(1), dim=1)
    return (diff / torch.where(norm > 0, norm, torch.ones_like(norm))).cpu()
