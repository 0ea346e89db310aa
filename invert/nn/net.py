"""Networks as ordered, named layers, and access to any layer's activation.

Every zoo model is a :class:`Net`: an :class:`torch.nn.Sequential` whose children
carry the layer names used throughout the toolkit (``normalize``, ``conv1``,
``pool1``, ``drop1``, ...). A conv block (``conv1``) is itself a small sequential of
``conv`` (the :class:`~torch.nn.Conv2d`), an optional ``bn`` and ``act``; its output
is the activation of that layer. The functions here accept any ``nn.Module``: a
layer is then a module path as in ``model.named_modules()`` (``"features.3"``).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from invert.errors import UserError

__all__ = [
    "EVAL_IDENTITY",
    "activation_layers",
    "Net",
    "Normalize",
    "conv_layers",
    "eval_mode",
    "get_layer",
    "layer_names",
    "model_input_size",
    "select_layers",
]


#: Layers that are the identity in eval mode.
EVAL_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


class Normalize(nn.Module):
    """Per-channel input standardisation ``(x - mean) / std``.

    The statistics are buffers that are *not* part of the ``state_dict`` (they
    travel in checkpoint metadata), so plain PyTorch state dicts load cleanly.
    Until :meth:`set_statistics` is called the layer is the identity.

    Examples
    --------
    >>> import torch
    >>> norm = Normalize(3)
    >>> norm.set_statistics([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    >>> norm(torch.full((1, 3, 2, 2), 0.75))[0, :, 0, 0]
    tensor([1., 1., 1.])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels), persistent=False)
        self.register_buffer("std", torch.ones(channels), persistent=False)

    def set_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).flatten()
        std = torch.as_tensor(std, dtype=self.std.dtype).flatten()
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise UserError(
                f"normalization needs {self.mean.numel()} means and stds; "
                f"got {mean.numel()} and {std.numel()}"
            )
        if not torch.isfinite(mean).all() or not (std > 0).all():
            raise UserError("normalization statistics must be finite with std > 0")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def statistics(self) -> tuple[list[float], list[float]]:
        """The ``(mean, std)`` lists, as stored in checkpoint metadata."""
        return self.mean.tolist(), self.std.tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}"


class Net(nn.Sequential):
    """A zoo network: named layers in execution order.

    Parameters
    ----------
    layers : iterable of (str, nn.Module)
        The named children, in the order they run.
    arch : str
        The registry name the network was created from.
    config : dict
        The keyword arguments of :func:`invert.create_model` that rebuild it.
    input_size : int, optional
        The side of the square images the architecture is designed for.

    Examples
    --------
    >>> from invert import create_model
    >>> net = create_model("convpool_c_crelu", width=0.25)
    >>> net.layer_names()[:4], net.input_size
    (['normalize', 'drop0', 'conv1', 'conv2'], 32)
    """

    def __init__(
        self,
        layers: Iterable[tuple[str, nn.Module]],
        *,
        arch: str,
        config: dict,
        input_size: int | None = None,
    ):
        super().__init__(OrderedDict(layers))
        self.arch = arch
        self.config = dict(config)
        self.input_size = input_size

    def layer_names(self) -> list[str]:
        """Names of the top-level layers, in execution order."""
        return list(self._modules)


def model_input_size(model: nn.Module) -> int | None:
    """The side of the square images ``model`` is designed for, or None when unknown.

    Zoo models (and checkpoints of them) carry it; any other module may set an
    ``input_size`` attribute.

    Examples
    --------
    >>> from invert import create_model
    >>> model_input_size(create_model("allcnn_b")), model_input_size(nn.Identity())
    (224, None)
    """
    size = getattr(model, "input_size", None)
    return int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def layer_names(model: nn.Module) -> list[str]:
    """Addressable layer names of ``model``.

    For a :class:`Net` or any ``nn.Sequential`` these are its children; for other
    modules every named submodule path.

    Examples
    --------
    >>> from torch import nn
    >>> layer_names(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    ['0', '1']
    """
    if isinstance(model, nn.Sequential):
        return list(model._modules)
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a ``ValueError`` lists the valid names."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        valid = ", ".join(layer_names(model))
        raise UserError(f"unknown layer {name!r}; valid layers: {valid}")
    return modules[name]


def conv_layers(model: nn.Module) -> OrderedDict[str, nn.Conv2d]:
    """Every :class:`~torch.nn.Conv2d` of ``model``, keyed by its layer name.

    A convolution that is the only one inside a top-level layer is named after
    that layer (``conv3`` for the zoo's ``conv3.conv``); otherwise its full
    module path is used (``features.0`` in a torchvision-style VGG).

    Examples
    --------
    >>> from invert import create_model
    >>> list(conv_layers(create_model("convpool_c", width=0.25)))[:3]
    ['conv1', 'conv2', 'conv3']
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    per_top: dict[str, int] = {}
    for name, _ in convs:
        top = name.split(".")[0]
        per_top[top] = per_top.get(top, 0) + 1
    named: OrderedDict[str, nn.Conv2d] = OrderedDict()
    for name, module in convs:
        top = name.split(".")[0]
        named[top if per_top[top] == 1 else name] = module
    return named


def select_layers(layers, available: Iterable[str], *, what: str = "conv layers") -> list[str]:
    """The layer names a caller asked for, checked against the model's ``available`` ones.

    The one check of a list of layer names: the command line and the analyses of
    :mod:`theory` all go through it, so an unknown name is reported the same way
    everywhere. (A single place of the model graph: ``model_graph(model).resolve``.)

    Parameters
    ----------
    layers : None, str or iterable of str
        ``None`` for every available layer, one name, or several (duplicates dropped,
        order kept).
    available : iterable of str
        The model's layers of the kind asked for, in the model's order (e.g. the keys
        of :func:`conv_layers`).
    what : str
        What the layers are, for the messages (``"conv layers"``).

    Returns
    -------
    list of str

    Raises
    ------
    UserError
        No layer requested, the model has none of the kind, or a name that is not
        among ``available`` (the message lists the valid ones).

    Examples
    --------
    >>> select_layers("conv2", ["conv1", "conv2"])
    ['conv2']
    >>> select_layers(None, ["conv1", "conv2"])
    ['conv1', 'conv2']
    >>> select_layers(["conv1", "pool1"], ["conv1", "conv2"])
    Traceback (most recent call last):
    ...
    invert.errors.UserError: unknown conv layers ['pool1']; valid conv layers: conv1, conv2
    """
    valid = list(available)
    if not valid:
        raise UserError(f"the model has no {what}")
    if layers is None:
        return valid
    names = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    if not names:
        raise UserError(f"no layer requested; valid {what}: {', '.join(valid)}")
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UserError(f"unknown {what} {unknown}; valid {what}: {', '.join(valid)}")
    return names


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run the block with ``model`` in eval mode; every module's own mode is restored after.

    Examples
    --------
    >>> net = nn.Sequential(nn.Dropout(), nn.Dropout().eval())
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> [m.training for m in net]
    [True, False]
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def activation_layers(model: nn.Module) -> list[str]:
    """The place after each conv whose output is its activation (each place once).

    Follows the model's graph (:func:`~invert.nn.graph.model_graph`) from each conv
    through BatchNorm, residual adds, dropout and identities to the first activation (any
    module or functional op that is none of those, e.g. ``ReLU``, ``F.relu``, ``CReLU``).
    A conv that :func:`conv_layers` names after its block (``conv3`` for the zoo's conv,
    BatchNorm and activation in one layer) gives the block's name; a conv with no
    activation after it gives its own.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 3))
    >>> activation_layers(net)
    ['2', '3']
    """
    from .graph import model_graph

    graph = model_graph(model)
    users: dict[str, list[str]] = {}
    for place in graph.places.values():
        for source in place.inputs:
            users.setdefault(source, []).append(place.name)
    passing = (nn.BatchNorm2d, *EVAL_IDENTITY)
    paths = {m: p for p, m in model.named_modules()}
    out = []
    for name, conv in conv_layers(model).items():
        path = paths[conv]
        if name != path:  # named after its block: the block's output is the activation
            out.append(name)
            continue
        activation, place = path, path
        while len(users.get(place, [])) == 1:  # through BN, adds, identities
            nxt = graph.places[users[place][0]]
            if isinstance(nxt.module, passing) or nxt.target in ("add", "iadd"):
                place = nxt.name
                continue
            if nxt.module is not None and not isinstance(nxt.module, nn.Conv2d):
                activation = nxt.name
            break
        out.append(activation)
    return list(dict.fromkeys(out))
