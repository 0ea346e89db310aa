"""Outgoing-weight correlations of CReLU layers (Section 4.3, Table 6 of the paper).

A CReLU layer with K filters emits 2K channels: channel ``i`` is the positive phase
of filter ``i`` and channel ``K + i`` its negative phase. The next conv layer reads
each channel ``c`` through its *outgoing weights* ``W[:, c]`` (all output channels
and kernel taps). If CReLU only recovered a linear response, the two phases'
outgoing weights would be negations of each other (correlation -1); the paper
checks that they are not.

Definitions (ours where the paper is silent):

* the outgoing vector of channel ``c`` is ``W[:, c, :, :]`` flattened over
  ``(out_channels, kh, kw)``, in float64;
* "correlation" is the cosine of the two normalized vectors,
  ``<u, v> / (|u| |v|)`` (no centring: weights have no natural mean). With equal
  halves it is exactly 1, with negated halves -1;
* **pair**: channels ``i`` and ``K + i``, for every ``i`` (K values);
  **non-pair**: channels ``i`` and ``K + j`` for *all* ``j != i`` (K(K-1) values);
* mean and population standard deviation (``ddof=0``) over those values.
  ``absolute=True`` uses ``|cos|``; Table 6's non-pair standard deviations, close
  to their means, suggest the paper averaged magnitudes, but it does not say.

The layer *after* the CReLU is found among the leaf modules in registration order
(the execution order of every sequential model, the zoo's included). Modules that
act on each channel alone may lie in between: pooling, dropout, batch norm,
identity. A CReLU followed by anything else (a linear layer, flatten, global
pooling feeding a classifier) has no outgoing conv weights and is skipped with a
warning, or rejected when asked for by name.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from invert.errors import UserError
from invert.nn.activations import CReLU
from invert.nn.net import conv_layers

__all__ = ["OutgoingCorrelation", "outgoing_correlations", "crelu_layers"]

# act on each channel on its own, so the CReLU's channel order reaches the next conv
_CHANNELWISE = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.BatchNorm2d,
    nn.Identity,
    nn.ReLU,  # the identity on a CReLU output
)


@dataclass(frozen=True)
class OutgoingCorrelation:
    """Pair and non-pair correlations of one CReLU layer's outgoing weights.

    Attributes
    ----------
    layer, next_layer : str
        The CReLU layer and the conv layer that reads it.
    pair : numpy.ndarray, shape (K,)
        ``cos(W[:, i], W[:, K + i])``.
    nonpair : numpy.ndarray, shape (K, K)
        ``cos(W[:, i], W[:, K + j])`` with NaN on the diagonal (the pairs).
    absolute : bool
        Whether magnitudes ``|cos|`` were taken.
    """

    layer: str
    next_layer: str
    pair: np.ndarray
    nonpair: np.ndarray
    absolute: bool = False

    @property
    def nonpair_values(self) -> np.ndarray:
        """The K(K-1) off-diagonal values, row by row."""
        k = self.nonpair.shape[0]
        return self.nonpair[~np.eye(k, dtype=bool)]

    @property
    def pair_mean(self) -> float:
        return float(self.pair.mean())

    @property
    def pair_std(self) -> float:
        return float(self.pair.std())

    @property
    def nonpair_mean(self) -> float:
        return float(self.nonpair_values.mean()) if self.nonpair.shape[0] > 1 else float("nan")

    @property
    def nonpair_std(self) -> float:
        return float(self.nonpair_values.std()) if self.nonpair.shape[0] > 1 else float("nan")

    def row(self) -> dict:
        """One table row."""
        return {
            "layer": self.layer,
            "next": self.next_layer,
            "K": int(self.pair.shape[0]),
            "pair_mean": self.pair_mean,
            "pair_std": self.pair_std,
            "nonpair_mean": self.nonpair_mean,
            "nonpair_std": self.nonpair_std,
        }


def _crelu_names(model: nn.Module) -> list[tuple[str, str]]:
    """(display name, module path) of every CReLU, named like conv_layers names convs."""
    paths = [name for name, m in model.named_modules() if isinstance(m, CReLU)]
    per_top: dict[str, int] = {}
    for path in paths:
        top = path.split(".")[0]
        per_top[top] = per_top.get(top, 0) + 1
    return [
        (path.split(".")[0] if per_top[path.split(".")[0]] == 1 else path, path) for path in paths
    ]


def crelu_layers(model: nn.Module) -> OrderedDict[str, tuple[str | None, str]]:
    """Every CReLU layer and the conv layer reading its output.

    Returns
    -------
    OrderedDict of str to (str or None, str)
        Layer name -> ``(next conv layer name or None, reason when None)``. A
        CReLU inside a top-level block named alone in it takes the block's name
        (``conv1`` for the zoo's ``conv1.act``), otherwise its module path.

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> found = crelu_layers(create_model("allcnn_b_crelu_all", width=0.125))
    >>> found["conv1"], found["conv12"][0]
    (('conv2', ''), None)
    """
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    conv_name = {id(m): name for name, m in conv_layers(model).items()}
    found: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
    for display, path in _crelu_names(model):
        start = next(i for i, (name, _) in enumerate(leaves) if name == path)
        if model.get_submodule(path).dim not in (1, -3):
            found[display] = (None, "CReLU concatenates along a non-channel axis")
            continue
        previous = None  # the conv feeding the CReLU, through channel-wise modules only
        for _, module in reversed(leaves[:start]):
            if isinstance(module, nn.Conv2d):
                previous = module
            if not isinstance(module, _CHANNELWISE):
                break
        nxt, reason = None, "no layer follows it"
        for name, module in leaves[start + 1 :]:
            if isinstance(module, nn.Conv2d):
                if previous is not None and module.in_channels != 2 * previous.out_channels:
                    reason = (
                        f"the next conv {conv_name[id(module)]} reads {module.in_channels} "
                        f"channels, not the 2 x {previous.out_channels} this CReLU emits"
                    )
                else:
                    nxt, reason = conv_name[id(module)], ""
                break
            if not isinstance(module, _CHANNELWISE):
                reason = f"it is followed by {type(module).__name__} ({name}), not a conv layer"
                break
        found[display] = (nxt, reason)
    return found


def _cosines(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(pair, K x K cross-cosine matrix) of a next-conv weight with 2K input channels."""
    k = weight.shape[1] // 2
    vectors = weight.detach().to("cpu", torch.float64).transpose(0, 1).reshape(2 * k, -1)
    norms = torch.linalg.vector_norm(vectors, dim=1)
    zero = torch.nonzero(norms == 0).flatten().tolist()
    if zero:
        raise UserError(
            f"input channel(s) {zero[:10]} have all-zero outgoing weights; "
            "their correlation is undefined"
        )
    unit = vectors / norms[:, None]
    cross = (unit[:k] @ unit[k:].T).numpy()  # cross[i, j] = cos(channel i, channel K + j)
    return np.diag(cross).copy(), cross


def outgoing_correlations(
    model: nn.Module,
    *,
    layers: str | Sequence[str] | None = None,
    absolute: bool = False,
) -> OrderedDict[str, OutgoingCorrelation]:
    """Pair and non-pair correlations of the outgoing weights of every CReLU layer.

    Parameters
    ----------
    model : nn.Module
        A network with :class:`invert.nn.activations.CReLU` layers.
    layers : str or sequence of str, optional
        CReLU layer names (as in :func:`crelu_layers`). Default: every CReLU layer
        followed by a conv layer; the others are skipped with a ``UserWarning``.
    absolute : bool, optional
        Use ``|cos|`` instead of the signed cosine.

    Returns
    -------
    OrderedDict of str to OutgoingCorrelation
        ``.pair_mean``, ``.pair_std``, ``.nonpair_mean``, ``.nonpair_std`` and the
        raw values per layer.

    Raises
    ------
    ValueError
        No CReLU layer followed by a conv, an unknown name (the valid ones are
        listed), a requested layer not followed by a conv, a next conv with
        ``groups > 1`` or an odd number of input channels, zero outgoing weights.

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> stats = outgoing_correlations(create_model("convpool_c_crelu", width=0.125))
    >>> list(stats)[:3]
    ['conv1', 'conv2', 'conv3']
    >>> stats["conv1"].pair.shape, stats["conv1"].nonpair_values.shape
    ((12,), (132,))
    """
    found = crelu_layers(model)
    usable = [name for name, (nxt, _) in found.items() if nxt is not None]
    if layers is None:
        if not usable:
            detail = "; ".join(f"{n}: {r}" for n, (_, r) in found.items())
            raise UserError(
                "the model has no CReLU layer followed by a conv layer"
                + (f" ({detail})" if detail else " (it has no CReLU layer at all)")
            )
        skipped = [f"{n} ({r})" for n, (nxt, r) in found.items() if nxt is None]
        if skipped:
            warnings.warn(
                f"skipping CReLU layers without a following conv: {', '.join(skipped)}",
                UserWarning,
                stacklevel=2,
            )
        names = usable
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names:
            raise UserError(f"no layer requested; CReLU layers: {', '.join(found) or 'none'}")
        for name in names:
            if name not in found:
                raise UserError(
                    f"{name!r} is not a CReLU layer; CReLU layers followed by a conv: "
                    f"{', '.join(usable) or 'none'}"
                )
            if found[name][0] is None:
                raise UserError(
                    f"CReLU layer {name} has no outgoing conv weights: {found[name][1]}"
                )
    convs = conv_layers(model)
    result: OrderedDict[str, OutgoingCorrelation] = OrderedDict()
    for name in names:
        nxt = found[name][0]
        conv = convs[nxt]
        if conv.groups != 1:
            raise UserError(
                f"{nxt} after CReLU layer {name} is a grouped convolution (groups={conv.groups}); "
                "the two phases of a filter reach different output groups, so their outgoing "
                "weights cannot be compared"
            )
        if conv.in_channels % 2:
            raise UserError(
                f"{nxt} after CReLU layer {name} has {conv.in_channels} input channels; "
                "a CReLU output has an even number"
            )
        try:
            pair, cross = _cosines(conv.weight)
        except ValueError as error:
            raise UserError(f"{nxt} after CReLU layer {name}: {error}") from None
        if absolute:
            pair, cross = np.abs(pair), np.abs(cross)
        nonpair = cross.copy()
        np.fill_diagonal(nonpair, np.nan)
        result[name] = OutgoingCorrelation(name, nxt, pair, nonpair, absolute)
    return result
