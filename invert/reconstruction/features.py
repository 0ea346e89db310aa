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

__all__ = ["Features", "Step", "check_images", "features", "fingerprint"]


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
        Max-pooling switches, keyed by the index of the pooling step.
    fingerprint : str
        SHA-256 of the steps' types, settings, parameters and buffers.
    """

    activation: torch.Tensor
    layer: str
    steps: tuple[Step, ...]
    switches: dict[int, torch.Tensor]
    fingerprint: str

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
            f"steps={len(self.steps)}, switches={len(self.switches)})"
        )


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
    the maps :func:`reconstruct` inverts); its modes are restored afterwards. It must
    be a chain: every leaf module's input is the previous one's output (an
    ``nn.Sequential``, a zoo :class:`~invert.nn.net.Net`, nested sequentials ...).

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
    state = {"last": None}
    x = x.to(device).clone()  # in-place layers must not touch the caller's tensor

    def leaf(name, module, inputs, output):
        if not inputs or inputs[0] is not state["last"]:
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) does not read the previous layer's "
                "output: reconstruction needs a plain chain of layers (e.g. nn.Sequential)"
            )
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer {name!r} ({type(module).__name__}) does not output a "
                             "tensor; reconstruction needs a plain chain of layers")  # fmt: skip
        if isinstance(module, nn.MaxPool2d):
            pooled, idx = max_pool_with_switches(inputs[0], module)
            switches[len(steps)] = idx
        steps.append(
            Step(name, type(module).__name__, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))
        )
        state["last"] = output

    state["last"] = x
    with eval_mode(model), torch.no_grad():
        seen = probe(model, x, outputs=[layer], leaf=leaf)
    out = seen.outputs[layer]
    if not steps or out is not state["last"]:
        raise ValueError(
            f"the output of {layer!r} is not the output of its last leaf module; "
            "reconstruction needs a plain chain of layers"
        )
    if not torch.isfinite(out).all():
        raise ValueError(f"the activation of {layer!r} contains NaN or Inf")
    path = [s.name for s in steps]
    return Features(
        activation=out.detach().clone(),
        layer=layer,
        steps=tuple(steps),
        switches=switches,
        fingerprint=fingerprint(model, path),
    )
