"""The features of a layer, with what inverting them needs.

:func:`features` runs a model up to a place (:func:`~invert.nn.graph.model_graph`) and
keeps, besides the activation, what inverting it needs: the places on the way that
depend on the input, in execution order, their input and output shapes, the
max-pooling switches, and a fingerprint of those places (features from another model,
or from changed weights, are refused).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

from invert.errors import UserError, UserTypeError
from invert.linalg.switches import max_pool_with_switches
from invert.nn import eval_mode
from invert.nn.graph import ModelGraph, model_graph

__all__ = ["Features", "Step", "check_images", "features", "fingerprint"]


@dataclass(frozen=True)
class Step:
    """One place on the way to the layer: its name, operation, what it calls, per-sample shapes.

    ``operation`` is the type name of the module that computes it (``"Conv2d"``, ``"ReLU"``,
    also for ``F.relu``), else the function name (``"add"``); ``target`` the module path
    or the function name.
    """

    name: str
    operation: str
    target: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class Features:
    """A layer's activation and what inverting it needs.

    Attributes
    ----------
    activation : torch.Tensor
        ``(N, C, H, W)`` output of the layer; edit it freely (same shape) before
        reconstructing.
    layer : str
        The layer's name as asked (a place, or a container meaning its output).
    steps : tuple of Step
        The places from the input to the layer that depend on the input, in execution
        order (the input itself excluded).
    switches : dict of str to torch.Tensor
        Max-pooling switches, keyed by the place of the pooling.
    fingerprint : str
        SHA-256 of the places' ops, settings, parameters and buffers.
    chain : bool
        True when every step reads the previous one's output and nothing else that
        depends on the input: what the layer-wise walk needs. Otherwise (residual blocks,
        concatenations) only the joint solver can use the features.
    place : str
        The place of the graph that ``layer`` means.
    input_shape : tuple of int
        Per-sample shape of the model input.
    graph : ModelGraph
        The graph the features were computed on (for a model ``torch.fx`` cannot trace,
        the places seen on this input).
    """

    activation: torch.Tensor
    layer: str
    steps: tuple[Step, ...]
    switches: dict[str, torch.Tensor]
    fingerprint: str
    chain: bool = True
    place: str = ""
    input_shape: tuple[int, ...] = ()
    graph: ModelGraph | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.place = self.place or self.layer
        if not self.input_shape and self.steps:
            self.input_shape = self.steps[0].in_shape

    @property
    def path(self) -> list[str]:
        """Names of the places from the input to the layer."""
        return [s.name for s in self.steps]

    def __repr__(self) -> str:
        return (
            f"Features(layer={self.layer!r}, activation={tuple(self.activation.shape)}, "
            f"steps={len(self.steps)}, switches={len(self.switches)}, chain={self.chain})"
        )


def fingerprint(graph: ModelGraph, place: str) -> str:
    """SHA-256 of every place ``place`` depends on: op, settings, parameters, buffers."""
    digest = hashlib.sha256()

    def tensor(key, t):
        t = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    for p in graph.path(place):
        digest.update(f"{p.name}|{p.op}|{p.target}|{p.operation}".encode())
        if p.module is not None:
            digest.update(f"{type(p.module).__qualname__}|{p.module.extra_repr()}".encode())
        if p.op == "module":
            for key, t in [*p.module.named_parameters(), *p.module.named_buffers()]:
                if t is not None:
                    tensor(key, t)
        elif p.op == "attribute":
            obj = graph.evaluate(p, {})
            if isinstance(obj, torch.Tensor):
                tensor(p.target, obj)
        elif p.node is not None:
            digest.update(repr((p.node.args, p.node.kwargs)).encode())
    return digest.hexdigest()


def check_images(x, what="x") -> None:
    if not isinstance(x, torch.Tensor):
        raise UserTypeError(f"{what} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise UserError(f"{what} must be a floating (N, C, H, W) batch; got {x.dtype} "
                         f"{tuple(x.shape)}")  # fmt: skip
    if not torch.isfinite(x).all():
        raise UserError(f"{what} contains NaN or Inf")


def features(model: nn.Module, x: torch.Tensor, *, layer: str) -> Features:
    """Run ``model`` on ``x`` up to ``layer`` and keep what inversion needs.

    The model runs in evaluation mode (BatchNorm with running statistics, dropout off:
    the maps :func:`~invert.reconstruction.reconstruct` inverts), in-place ops out of
    place; the model and ``x`` are left as they were. Any module works. When the places
    up to the layer are a chain (each reads the previous one's output: an
    ``nn.Sequential``, a zoo :class:`~invert.nn.net.Net`, VGG, AlexNet ...) the features
    serve both strategies; otherwise (a residual block) ``chain`` is False and only the
    joint solver uses them.

    Parameters
    ----------
    model : nn.Module
        The network.
    x : torch.Tensor
        ``(N, C, H, W)`` input batch (for zoo models: images in [0, 1]).
    layer : str
        A place of the model's graph (:func:`~invert.nn.graph.model_graph`): a module
        path such as ``"conv3"`` or ``"features.4"``, a later call ``"layer1.0.relu_1"``,
        a functional op ``"layer1.0.add"``, or a container (``"layer2"``) for its output.

    Returns
    -------
    Features

    Examples
    --------
    >>> import torch
    >>> from invert.nn.zoo import create_model
    >>> net = create_model("convpool_c_crelu", width=0.1)
    >>> f = features(net, torch.rand(1, 3, 32, 32), layer="conv4")
    >>> f.place, f.path[:4], tuple(f.activation.shape)
    ('conv4.act', ['normalize', 'drop0', 'conv1.conv', 'conv1.act'], (1, 38, 16, 16))
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be an nn.Module; got {type(model).__name__}")
    check_images(x)
    if not isinstance(layer, str):
        raise UserTypeError(f"layer must be a place name (str); got {type(layer).__name__}")
    device = next((p.device for p in model.parameters()), x.device)
    x = x.to(device)
    graph = model_graph(model, x)
    place = graph.resolve(layer)
    live = {p.name for p in graph.input_dependent(graph.path(place))}
    for name, p in tensors_used(model, graph, live):
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise UserError(f"the model's {name} contains NaN or Inf")
    steps: list[Step] = []
    switches: dict[str, torch.Tensor] = {}

    def record(p, inputs, output):
        if p.name not in live or p.op == "input":
            return
        first = next((v for i, v in zip(p.inputs, inputs) if i in live), None)
        if isinstance(p.module, nn.MaxPool2d) and isinstance(first, torch.Tensor):
            switches[p.name] = max_pool_with_switches(first, p.module)[1]
        steps.append(Step(p.name, p.operation, p.target, _shape(first), _shape(output)))

    with eval_mode(model), torch.no_grad():
        out = graph.run(x, [place], record=record)[place]
    if not isinstance(out, torch.Tensor):
        raise UserError(f"the output of {layer!r} is a {type(out).__name__}, not a tensor; "
                         "pick a layer that outputs one")  # fmt: skip
    if not steps:
        raise UserError(f"{layer!r} is the model's input; pick a layer after it")
    if not torch.isfinite(out).all():
        raise UserError(f"the activation of {layer!r} contains NaN or Inf")
    return Features(
        activation=out.detach().clone(),
        layer=layer,
        steps=tuple(steps),
        switches=switches,
        fingerprint=fingerprint(graph, place),
        chain=graph.is_chain(place),
        place=place,
        input_shape=tuple(x.shape[1:]),
        graph=graph,
    )


def tensors_used(model: nn.Module, graph: ModelGraph, places) -> list[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for the parameters and buffers that computing ``places`` reads:
    those of their modules and attributes (all of the model's when it runs through hooks,
    which may call modules off the path)."""
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    if not graph.traced:
        return named
    used = [graph.places[n].target for n in places if graph.places[n].op in ("module", "attribute")]

    def on_path(path):
        return any(path == u or path.startswith(u + ".") for u in used)

    return [(path, t) for path, t in named if on_path(path)]


def graph_of(model: nn.Module, feats: Features) -> ModelGraph:
    """The graph of ``model`` for these features: theirs, bound to ``model`` (a copy of
    their model, e.g. in another dtype), or traced anew."""
    if feats.graph is not None:
        return feats.graph.rebind(model)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    to = dict(dtype=param.dtype, device=param.device) if param is not None else {}
    return model_graph(model, torch.zeros(1, *feats.input_shape, **to))


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape[1:]) if isinstance(t, torch.Tensor) else ()
