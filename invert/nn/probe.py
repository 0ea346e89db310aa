"""Run a model up to named layers: the one place that hooks a forward pass and ends it early.

Every "run the model to layer L" in the toolkit goes through :func:`probe`: activations
for analyses (:func:`layer_outputs`), the input a layer reads (:func:`layer_inputs`),
the differentiable map from the input to a layer (:func:`forward_to`, which works
under ``torch.func.jvp``/``vjp``), the order in which the leaf modules run
(:func:`execution_order`), and the walk :func:`invert.features` records. The forward
pass stops as soon as everything asked for has been seen, so asking for ``conv1`` of a
deep network costs one layer. Layers are module names as in ``model.named_modules()``
(``"conv3"``, ``"features.4"``); a module that runs more than once is seen at its first
call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from invert.linalg.operators import as_pair

from .net import eval_mode, get_layer

__all__ = [
    "Probe",
    "conv_input_sizes",
    "execution_order",
    "forward_bytes",
    "forward_to",
    "layer_inputs",
    "layer_outputs",
    "probe",
]

#: ``leaf(name, module, inputs, output)``, called for every leaf module as it runs.
LeafCallback = Callable[[str, nn.Module, tuple, object], None]


class _Stop(Exception):
    """Raised inside a hook to end a forward pass once everything asked for was seen."""


@dataclass
class Probe:
    """What :func:`probe` saw: outputs and inputs by layer name, and the model's output.

    ``result`` is the model's own output when the pass ran to the end, else None.
    """

    outputs: dict[str, object] = field(default_factory=dict)
    inputs: dict[str, tuple] = field(default_factory=dict)
    result: object = None
    finished: bool = False


def _names(layers) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    return list(dict.fromkeys(names))


def probe(
    model: nn.Module,
    x,
    *,
    outputs: Sequence[str] = (),
    inputs: Sequence[str] = (),
    leaf: LeafCallback | None = None,
    stop: bool = True,
) -> Probe:
    """Run ``model(x)`` with hooks, and stop once every requested layer has run.

    Parameters
    ----------
    model : nn.Module
        Any module; it runs in whatever mode (train/eval) and grad state the caller set.
    x
        The model's input.
    outputs, inputs : sequence of str
        Layers whose output, or whose positional inputs (a tuple), to keep.
    leaf : callable, optional
        ``leaf(name, module, inputs, output)`` for each leaf module as it runs (before
        the output hooks of the layers that contain it).
    stop : bool, optional
        End the pass once the requested layers have run (with nothing requested and a
        ``leaf`` callback, the pass always runs to the end).

    Returns
    -------
    Probe

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3))
    >>> seen = probe(net, torch.rand(1, 1, 8, 8), outputs=["1"], inputs=["2"])
    >>> seen.outputs["1"].shape, seen.inputs["2"][0].shape, seen.finished
    (torch.Size([1, 2, 6, 6]), torch.Size([1, 2, 6, 6]), False)
    """
    out_names, in_names = _names(outputs), _names(inputs)
    wanted = len(out_names) + len(in_names)
    seen = Probe()
    names = {module: name for name, module in model.named_modules()}

    def check_done():
        if stop and wanted and len(seen.outputs) + len(seen.inputs) == wanted:
            raise _Stop

    def output_hook(name):
        def hook(module, args, output):
            if name not in seen.outputs:
                seen.outputs[name] = output
                check_done()

        return hook

    def input_hook(name):
        def hook(module, args):
            if name not in seen.inputs:
                seen.inputs[name] = args
                check_done()

        return hook

    def leaf_hook(module, args, output):
        leaf(names[module], module, args, output)

    handles = []
    try:
        if leaf is not None:
            for module in model.modules():
                if not list(module.children()):
                    handles.append(module.register_forward_hook(leaf_hook))
        for name in in_names:
            handles.append(get_layer(model, name).register_forward_pre_hook(input_hook(name)))
        for name in out_names:
            handles.append(get_layer(model, name).register_forward_hook(output_hook(name)))
        try:
            seen.result = model(x)
            seen.finished = True
        except _Stop:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in out_names if n not in seen.outputs]
    missing += [n for n in in_names if n not in seen.inputs]
    if missing:
        raise ValueError(f"layers {missing} did not run in the forward pass of the model")
    return seen


def layer_outputs(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Activations of the named layers for input ``x``.

    Parameters
    ----------
    model : nn.Module
        Any module; layers are addressed as in :func:`~invert.nn.layer_names`.
    x : torch.Tensor
        Input batch.
    layers : str or sequence of str
        Layer names.

    Returns
    -------
    dict of str to torch.Tensor
        The output of each requested layer, keyed by name, in the order asked.

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
    if not names:
        raise ValueError("no layer requested")
    seen = probe(model, x, outputs=names)
    return {name: seen.outputs[name] for name in names}


def layer_inputs(
    model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """The (first positional) input each named layer reads, for model input ``x``.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> layer_inputs(net, torch.rand(1, 3, 8, 8), "2")["2"].shape
    torch.Size([1, 4, 6, 6])
    """
    names = _names(layers)
    if not names:
        raise ValueError("no layer requested")
    seen = probe(model, x, inputs=names)
    return {name: seen.inputs[name][0] for name in names}


def forward_to(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The model's own map from its input to the output of ``layer``, differentiable.

    No ``no_grad`` and no mode change: this is ``f_L(x)`` for autograd and for
    ``torch.func.jvp``/``vjp`` (the forward pass still ends at ``layer``).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))
    >>> x = torch.rand(4, 3)
    >>> torch.equal(forward_to(net, x, "1"), net[1](net[0](x)))
    True
    """
    return probe(model, x, outputs=[layer]).outputs[layer]


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
        raise ValueError(f"input_size must be positive; got {size}")
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
        raise ValueError(
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
    """The leaf modules in the order they run on ``x`` (each at its first call), with names.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
    >>> [name for name, _ in execution_order(net, torch.rand(1, 1, 2, 2))]
    ['0', '1']
    """
    order: list[tuple[str, nn.Module]] = []
    ran: set[int] = set()

    def leaf(name, module, args, output):
        if id(module) not in ran:
            ran.add(id(module))
            order.append((name, module))

    probe(model, x, leaf=leaf)
    return order
