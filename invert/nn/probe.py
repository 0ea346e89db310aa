"""Run a model up to named places: activations, the inputs layers read, the map to a layer.

Everything here reads the model's one graph (:func:`~invert.nn.graph.model_graph`): a
layer is a place named as torchvision names it (``"conv3"``, ``"features.4"``,
``"layer1.0.relu_1"``, ``"flatten"``) or a container whose output is meant
(``"layer2"``). Only the places the requested ones depend on are run, so asking for
``conv1`` of a deep network costs one layer, and in-place ops run out of place (the
caller's tensors and the model are left as they were).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from invert.errors import UserError
from invert.linalg.operators import as_pair

from .graph import model_graph
from .net import eval_mode

__all__ = [
    "conv_input_sizes",
    "execution_order",
    "forward_bytes",
    "forward_to",
    "layer_inputs",
    "layer_outputs",
]


def _names(layers) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    names = list(dict.fromkeys(names))
    if not names:
        raise UserError("no layer requested")
    return names


def layer_outputs(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Activations of the named layers for input ``x``.

    Parameters
    ----------
    model : nn.Module
        Any module; it runs in whatever mode (train/eval) and grad state the caller set.
    x : torch.Tensor
        Input batch.
    layers : str or sequence of str
        Place names (see :func:`~invert.nn.graph.model_graph`).

    Returns
    -------
    dict of str to torch.Tensor
        The output of each requested layer, keyed by the name asked, in the order asked.

    Examples
    --------
    >>> import torch
    >>> from invert import create_model
    >>> net = create_model("convpool_c_crelu", width=0.25).eval()
    >>> out = layer_outputs(net, torch.rand(2, 3, 32, 32), "conv1")
    >>> out["conv1"].shape
    torch.Size([2, 48, 32, 32])
    """
    names = _names(layers)
    graph = model_graph(model, x)
    places = [graph.resolve(n) for n in names]
    out = graph.run(x, places)
    return {name: out[place] for name, place in zip(names, places)}


def layer_inputs(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """The (first) input each named place reads, for model input ``x``.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> layer_inputs(net, torch.rand(1, 3, 8, 8), "2")["2"].shape
    torch.Size([1, 4, 6, 6])
    """
    names = _names(layers)
    graph = model_graph(model, x)
    sources = []
    for name in names:
        place = graph[name]
        if not place.inputs:
            raise UserError(f"layer {name!r} reads no input")
        sources.append(place.inputs[0])
    out = graph.run(x, sources)
    return {name: out[source] for name, source in zip(names, sources)}


def forward_to(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The model's own map from its input to the output of ``layer``, differentiable.

    No ``no_grad`` and no mode change: this is ``f_L(x)`` for autograd and for
    ``torch.func.jvp``/``vjp``.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    >>> x = torch.rand(4, 3)
    >>> torch.equal(forward_to(net, x, "1"), net[1](net[0](x)))
    True
    """
    return layer_outputs(model, x, [layer])[layer]


def conv_input_sizes(
    model: nn.Module,
    input_size,
    *,
    in_channels: int | None = None,
    convs: Sequence[nn.Conv2d] | None = None,
) -> dict[nn.Conv2d, tuple[int, int]]:
    """Spatial input size of the convs of ``model`` (all by default) for a network input
    of ``input_size`` (int or pair); one forward pass of zeros, stopped after the last.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3))
    >>> list(conv_input_sizes(net, 17).values())
    [(17, 17), (8, 8)]
    """
    size = as_pair(input_size, "input_size")
    if min(size) < 1:
        raise UserError(f"input_size must be positive; got {size}")
    convs = (
        list(convs)
        if convs is not None
        else [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    )
    if in_channels is None:
        in_channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    names = {module: name for name, module in model.named_modules()}
    param = next(model.parameters())
    from invert.device import check_memory

    needed = forward_bytes(model, size, in_channels=in_channels, dtype=param.dtype)
    check_memory(needed, param.device, f"a forward pass of a {in_channels}x{size[0]}x{size[1]} "
                 f"input", "use a smaller input size")  # fmt: skip
    x = torch.zeros(1, in_channels, *size, dtype=param.dtype, device=param.device)
    try:
        with eval_mode(model), torch.no_grad():
            seen = layer_inputs(model, x, [names[c] for c in convs])
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"a forward pass of a {in_channels}x{size[0]}x{size[1]} input failed ({first}); "
            f"give the network's input size and channels"
        ) from error
    return {c: tuple(seen[names[c]].shape[-2:]) for c in convs}


def forward_bytes(
    model: nn.Module, input_size, *, in_channels: int, batch: int = 1, dtype=None
) -> int | None:
    """About how many bytes of activations one forward pass of ``batch`` inputs of
    ``in_channels x input_size`` needs at its peak (the largest input plus output of any
    leaf module), from shapes alone: the pass runs on the ``meta`` device, so nothing is
    allocated whatever the size. ``None`` when the model cannot run on ``meta``.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    >>> forward_bytes(net, 100_000, in_channels=3)  # ReLU: 2 x 8 channels of 1e10 floats
    640000000000
    """
    size = as_pair(input_size, "input_size")
    param = next(model.parameters(), None)
    dtype = dtype or (param.dtype if param is not None else torch.float32)
    state = {
        name: tensor.to("meta")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    x = torch.zeros(batch, in_channels, *size, dtype=dtype, device="meta")
    peak = [0]

    def record(module, args, output):
        sizes = [t.numel() * t.element_size() for t in (*args, output) if torch.is_tensor(t)]
        peak[0] = max(peak[0], sum(sizes))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with eval_mode(model), torch.no_grad():
            torch.func.functional_call(model, state, (x,))
    except Exception:  # noqa: BLE001 (an op without a meta kernel: no estimate)
        return None
    finally:
        for handle in handles:
            handle.remove()
    return max(peak[0], x.numel() * x.element_size())


def execution_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The modules called on ``x``, in the order they run (each at its first call), with
    their paths.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
    >>> [name for name, _ in execution_order(net, torch.rand(1, 1, 2, 2))]
    ['0', '1']
    """
    graph = model_graph(model, x)
    order: dict[str, nn.Module] = {}
    for place in graph.places.values():
        if place.op == "module" and place.target not in order:
            order[place.target] = place.module
    return list(order.items())
