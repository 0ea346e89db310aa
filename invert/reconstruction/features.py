"""The features of a layer, with what inverting them needs.

:func:`features` runs a model up to a layer and keeps, besides the activation, what
inverting it needs: the layers on the way as leaf modules in execution order, their
input and output shapes, the max-pooling switches, and a fingerprint of those layers
(features from another model, or from changed weights, are refused).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from invert.linalg.switches import max_pool_with_switches
from invert.nn import eval_mode, get_layer, probe

__all__ = ["Features", "Step", "check_images", "features", "fingerprint", "fingerprint_names"]


@dataclass(frozen=True)
class Step:
    """One leaf module on the way to the layer: its path, type and per-sample shapes."""

    name: str
    kind: str
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
        The layer's name in the model.
    steps : tuple of Step
        The leaf modules from the input to the layer, in execution order.
    switches : dict of int to torch.Tensor
        Max-pooling switches, keyed by the index of the pooling step in ``steps`` (a
        module that runs twice has two steps).
    fingerprint : str
        SHA-256 of the steps' types, settings, parameters and buffers (for a non-chain,
        also of the parameters the modules containing them hold directly).
    chain : bool
        True when every leaf reads the previous leaf's output and the layer's output is
        the last leaf's: what the layer-wise walk needs. Otherwise (residual blocks,
        functional ops between modules) the steps are only the leaves in execution order
        and only the joint solver can use the features.
    """

    activation: torch.Tensor
    layer: str
    steps: tuple[Step, ...]
    switches: dict[int, torch.Tensor]
    fingerprint: str
    chain: bool = True

    @property
    def path(self) -> list[str]:
        """Names of the leaf modules from the input to the layer."""
        return [s.name for s in self.steps]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.steps[0].in_shape

    def __repr__(self) -> str:
        return (
            f"Features(layer={self.layer!r}, activation={tuple(self.activation.shape)}, "
            f"steps={len(self.steps)}, switches={len(self.switches)}, chain={self.chain})"
        )


def fingerprint_names(path: list[str], chain: bool) -> list[str]:
    """The modules a fingerprint covers: the leaves, and for a non-chain their ancestors."""
    if chain:
        return path
    ancestors = {".".join(n.split(".")[:i]) for n in path for i in range(n.count(".") + 1)}
    return sorted(ancestors) + path


def fingerprint(model: nn.Module, names: list[str]) -> str:
    modules = dict(model.named_modules())
    digest = hashlib.sha256()
    for name in names:
        module = modules.get(name)
        if module is None:
            return ""
        digest.update(f"{name}|{type(module).__qualname__}|{module.extra_repr()}".encode())
        tensors = list(module.named_parameters(recurse=False))
        tensors += list(module.named_buffers(recurse=False))
        for key, t in tensors:
            if t is None:
                continue
            t = t.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def check_images(x, what="x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{what} must be a floating (N, C, H, W) batch; got {x.dtype} "
                         f"{tuple(x.shape)}")  # fmt: skip
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf")


def features(model: nn.Module, x: torch.Tensor, *, layer: str) -> Features:
    """Run ``model`` on ``x`` up to ``layer`` and keep what inversion needs.

    The model runs in evaluation mode (BatchNorm with running statistics, dropout off:
    the maps :func:`~invert.reconstruction.reconstruct` inverts); its modes are restored
    afterwards. Any module works. When it is a chain (every leaf module's input is the
    previous one's output: an ``nn.Sequential``, a zoo :class:`~invert.nn.net.Net`,
    nested sequentials ...) the features serve both strategies; otherwise
    ``chain`` is False and only the joint solver uses them.

    Parameters
    ----------
    model : nn.Module
        The network.
    x : torch.Tensor
        ``(N, C, H, W)`` input batch (for zoo models: images in [0, 1]).
    layer : str
        A module name: a child such as ``"conv3"`` or ``"3"``, or a path such as
        ``"features.4"``. The output of that module is the feature.

    Returns
    -------
    Features

    Examples
    --------
    >>> import torch
    >>> from invert.nn.zoo import create_model
    >>> net = create_model("convpool_c_crelu", width=0.1)
    >>> f = features(net, torch.rand(1, 3, 32, 32), layer="conv4")
    >>> f.path[:4], tuple(f.activation.shape)
    (['normalize', 'drop0', 'conv1.conv', 'conv1.act'], (1, 38, 16, 16))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    check_images(x)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str); got {type(layer).__name__}")
    get_layer(model, layer)  # ValueError listing the valid names
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise ValueError(f"the model's {name} contains NaN or Inf")
    device = next((p.device for p in model.parameters()), x.device)
    steps: list[Step] = []
    switches: dict[int, torch.Tensor] = {}
    x = x.to(device).clone()  # in-place layers must not touch the caller's tensor
    state = {"last": x, "chain": True}

    def leaf(name, module, inputs, output):
        first = inputs[0] if inputs else None
        if first is not state["last"] or not isinstance(output, torch.Tensor):
            state["chain"] = False
        if isinstance(module, nn.MaxPool2d) and isinstance(first, torch.Tensor):
            switches[len(steps)] = max_pool_with_switches(first, module)[1]
        steps.append(Step(name, type(module).__name__, _shape(first), _shape(output)))
        state["last"] = output

    with eval_mode(model), torch.no_grad():
        seen = probe(model, x, outputs=[layer], leaf=leaf)
    out = seen.outputs[layer]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the output of {layer!r} is a {type(out).__name__}, not a tensor; "
                         "pick a layer that outputs one")  # fmt: skip
    chain = bool(steps) and state["chain"] and out is state["last"]
    if not torch.isfinite(out).all():
        raise ValueError(f"the activation of {layer!r} contains NaN or Inf")
    path = [s.name for s in steps]
    return Features(
        activation=out.detach().clone(),
        layer=layer,
        steps=tuple(steps),
        switches=switches,
        fingerprint=fingerprint(model, fingerprint_names(path, chain)),
        chain=chain,
    )


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape[1:]) if isinstance(t, torch.Tensor) else ()
