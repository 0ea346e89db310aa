"""Filter pairing statistics (Section 2.1, Figures 1-3 of the paper).

For a set of filters, each flattened and scaled to unit norm, the *pairing filter*
of ``phi_i`` is the filter most opposite to it,
``bar-phi_i = argmin_{j != i} <phi_i, phi_j>``, and ``mu_i = <phi_i, bar-phi_i>`` is
their cosine similarity. Learned lower-layer filters of ReLU networks have ``mu``
close to -1 (each filter has a near-negated twin); the baseline is the same
statistic for i.i.d. Gaussian filters of the same shape and count.

A filter is the whole ``in_channels/groups x kh x kw`` tensor of one output channel.
Everything is computed in float64. Filters of zero norm have no direction: they are
rejected with a ``ValueError`` naming them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from invert.errors import UserError, UserTypeError
from invert.nn.net import conv_layers, select_layers
from invert.progress import progress_bar

__all__ = [
    "PairingResult",
    "LayerPairing",
    "pairing",
    "random_pairing",
    "layer_pairing",
    "pair_image",
]


@dataclass(frozen=True)
class PairingResult:
    """Per-filter pairing statistics.

    Attributes
    ----------
    mu : numpy.ndarray of float64, shape (n,)
        ``mu_i = min_{j != i} <phi_i, phi_j>`` for unit-norm flattened filters.
    pair : numpy.ndarray of int64, shape (n,)
        Index of the pairing filter (the argmin; the lowest index on ties). For a
        pooled random baseline, the index within its own trial.
    """

    mu: np.ndarray
    pair: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.mu.mean())

    @property
    def std(self) -> float:
        """Population standard deviation (``ddof=0``) of ``mu``."""
        return float(self.mu.std())


def _as_float64_filters(weight, *, what: str = "weight") -> torch.Tensor:
    if isinstance(weight, nn.Parameter):
        weight = weight.detach()
    if isinstance(weight, np.ndarray):
        weight = torch.from_numpy(weight)
    if not isinstance(weight, torch.Tensor):
        raise UserTypeError(
            f"{what} must be a torch.Tensor or numpy array; got {type(weight).__name__}"
        )
    if weight.dim() < 2:
        raise UserError(
            f"{what} must have the filters along its first axis and at least 2 axes "
            f"(e.g. out x in x kh x kw); got shape {tuple(weight.shape)}"
        )
    if not (weight.is_floating_point() or weight.dtype in (torch.int32, torch.int64)):
        raise UserTypeError(f"{what} must be a real array; got dtype {weight.dtype}")
    if weight.shape[0] < 2:
        raise UserError(f"pairing needs at least 2 filters; got {weight.shape[0]}")
    flat = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)
    if not torch.isfinite(flat).all():
        raise UserError(f"{what} contains NaN or Inf values")
    return flat


def _pairing_flat(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu and pair of the rows of a float64 matrix (rows already validated)."""
    norms = torch.linalg.vector_norm(flat, dim=1)
    zero = torch.nonzero(norms == 0).flatten().tolist()
    if zero:
        shown = ", ".join(map(str, zero[:10])) + (" ..." if len(zero) > 10 else "")
        raise UserError(
            f"{len(zero)} filter(s) have zero norm and no direction (indices {shown}); "
            "remove them before computing pairing statistics"
        )
    unit = flat / norms[:, None]
    gram = unit @ unit.T
    gram.fill_diagonal_(math.inf)  # j != i
    mu, pair = torch.min(gram, dim=1)  # first index on ties
    return mu, pair


def pairing(weight) -> PairingResult:
    """Pairing filter and cosine ``mu`` of every filter of a layer.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray, shape (n, ...)
        ``n >= 2`` filters along the first axis (a conv weight
        ``out x in/groups x kh x kw``, or any array). Each filter is flattened.

    Returns
    -------
    PairingResult
        ``.mu`` (float64) and ``.pair`` (int64), one entry per filter.

    Raises
    ------
    ValueError
        Fewer than two filters, a filter of zero norm, or NaN/Inf values.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0]])
    >>> result = pairing(w)
    >>> result.mu.tolist(), result.pair.tolist()
    ([-1.0, -1.0, 0.0], [1, 0, 0])
    """
    mu, pair = _pairing_flat(_as_float64_filters(weight))
    return PairingResult(mu=mu.numpy(), pair=pair.numpy().astype(np.int64))


def _shape_of(like) -> tuple[int, ...]:
    if isinstance(like, (torch.Tensor, np.ndarray)):
        return tuple(like.shape)
    if isinstance(like, Sequence) and all(isinstance(s, (int, np.integer)) for s in like):
        return tuple(int(s) for s in like)
    raise UserTypeError(
        f"like must be a weight tensor/array or a shape tuple; got {type(like).__name__}"
    )


def random_pairing(like, *, trials: int = 10, seed: int = 0) -> PairingResult:
    """The Gaussian baseline: pairing statistics of i.i.d. N(0, 1) filters.

    Each trial draws as many filters as ``like`` has, of the same shape, with
    independent standard normal entries (then unit-normed, as in the paper's
    footnote 1); the ``mu`` values of all trials are pooled.

    Parameters
    ----------
    like : torch.Tensor, numpy.ndarray or tuple of int
        A weight (only its shape is used) or the shape itself, filters first.
    trials : int, optional
        Number of independent draws of the whole filter set.
    seed : int, optional
        Seed of the ``torch.Generator`` used for the draws.

    Returns
    -------
    PairingResult
        ``.mu`` of length ``trials * n``; ``.pair`` holds indices within each trial.

    Examples
    --------
    >>> baseline = random_pairing((96, 3, 11, 11), trials=2, seed=0)
    >>> baseline.mu.shape
    (192,)
    >>> -0.2 < baseline.mean < -0.05  # about -2.5 / sqrt(363)
    True
    """
    shape = _shape_of(like)
    if len(shape) < 2 or shape[0] < 2 or math.prod(shape[1:]) < 1:
        raise UserError(f"random_pairing needs at least 2 non-empty filters; got shape {shape}")
    if not isinstance(trials, (int, np.integer)) or trials < 1:
        raise UserError(f"trials must be a positive integer; got {trials!r}")
    generator = torch.Generator().manual_seed(int(seed))
    n, dim = shape[0], math.prod(shape[1:])
    mus, pairs = [], []
    for _ in range(int(trials)):
        filters = torch.randn(n, dim, generator=generator, dtype=torch.float64)
        mu, pair = _pairing_flat(filters)
        mus.append(mu)
        pairs.append(pair)
    return PairingResult(mu=torch.cat(mus).numpy(), pair=torch.cat(pairs).numpy().astype(np.int64))


@dataclass(frozen=True)
class LayerPairing:
    """Pairing statistics of one conv layer and of its Gaussian baseline.

    Attributes
    ----------
    layer : str
        Layer name (as in :func:`invert.nn.net.conv_layers`).
    shape : tuple of int
        The layer's weight shape ``(out, in/groups, kh, kw)``.
    learned : PairingResult
        ``mu_w`` and pairing indices of the learned filters.
    random : PairingResult
        ``mu_r`` pooled over the random trials.
    """

    layer: str
    shape: tuple[int, ...]
    learned: PairingResult
    random: PairingResult

    @property
    def mu_w(self) -> np.ndarray:
        return self.learned.mu

    @property
    def mu_r(self) -> np.ndarray:
        return self.random.mu

    @property
    def mean_w(self) -> float:
        return self.learned.mean

    @property
    def std_w(self) -> float:
        return self.learned.std

    @property
    def mean_r(self) -> float:
        return self.random.mean

    @property
    def std_r(self) -> float:
        return self.random.std

    def histogram(self, *, bins: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(edges, density_w, density_r)`` on common bin edges (as in Figure 2)."""
        both = np.concatenate([self.mu_w, self.mu_r])
        edges = np.histogram_bin_edges(both, bins=bins, range=(both.min(), both.max()))
        density_w, _ = np.histogram(self.mu_w, bins=edges, density=True)
        density_r, _ = np.histogram(self.mu_r, bins=edges, density=True)
        return edges, density_w, density_r

    def row(self) -> dict:
        """One table row: layer, filter count and dimension, means and stds."""
        return {
            "layer": self.layer,
            "filters": self.shape[0],
            "dim": math.prod(self.shape[1:]),
            "mu_w_mean": self.mean_w,
            "mu_w_std": self.std_w,
            "mu_r_mean": self.mean_r,
            "mu_r_std": self.std_r,
        }


def layer_pairing(
    model: nn.Module,
    *,
    layers: str | Sequence[str] | None = None,
    trials: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> OrderedDict[str, LayerPairing]:
    """Pairing statistics of every conv layer of a model, with their baselines.

    Parameters
    ----------
    model : nn.Module
        Any network; its conv layers are found with :func:`invert.nn.net.conv_layers`.
    layers : str or sequence of str, optional
        Conv layer names to analyse (default: all, in execution order).
    trials : int, optional
        Random filter sets drawn per layer for the Gaussian baseline.
    seed : int, optional
        Seed of the baseline; layer ``l`` (0-based position among the conv layers)
        uses ``seed + l`` so that layers draw independent filters.
    progress : bool, optional
        Show a bar over the layers on stderr (:mod:`invert.progress`).

    Returns
    -------
    OrderedDict of str to LayerPairing

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> stats = layer_pairing(create_model("convpool_c", width=0.125), layers="conv1", trials=2)
    >>> row = stats["conv1"].row()
    >>> row["filters"], row["dim"]
    (12, 27)
    """
    convs = conv_layers(model)
    if not convs:
        raise UserError("the model has no Conv2d layer")
    names = select_layers(layers, convs)
    position = {name: i for i, name in enumerate(convs)}
    result: OrderedDict[str, LayerPairing] = OrderedDict()
    bar = progress_bar(progress, names, desc="pairing", unit="layer")
    for name in bar:
        bar.set_postfix_str(f"{name}: learned filters and {trials} random sets", refresh=False)
        weight = convs[name].weight.detach()
        try:
            learned = pairing(weight)
        except ValueError as error:
            raise UserError(f"layer {name}: {error}") from None
        baseline = random_pairing(weight, trials=trials, seed=seed + position[name])
        result[name] = LayerPairing(name, tuple(weight.shape), learned, baseline)
    return result


def pair_image(
    weight, *, columns: int | None = None, gap: int = 1, background: float = 1.0
) -> np.ndarray:
    """Each normalized filter beside its pairing filter, tiled into one image (Figure 1).

    Every cell shows filter ``i`` (left) and its pairing filter (right). The two
    unit-norm filters of a cell share one display scale,
    ``0.5 + 0.5 * phi / max(|phi_i|, |phi_pair|)``, so zero is mid-grey and
    opposite phases look opposite.

    Parameters
    ----------
    weight : torch.Tensor or numpy.ndarray, shape (n, c, kh, kw)
        Conv weights with ``c = 3`` (shown as RGB) or ``c = 1`` (grey), e.g. conv1.
    columns : int, optional
        Pairs per row; default ``ceil(sqrt(n / 2))``, which gives a roughly square image.
    gap : int, optional
        Pixels between a filter and its pair; cells are separated by ``2 * gap``.
    background : float, optional
        Value of the gaps, in [0, 1].

    Returns
    -------
    numpy.ndarray of float64 in [0, 1]
        ``H x W x 3`` for RGB filters, ``H x W`` for single-channel ones.

    Examples
    --------
    >>> import torch
    >>> image = pair_image(torch.randn(8, 3, 5, 5), columns=4)
    >>> image.shape
    (12, 50, 3)
    """
    flat = _as_float64_filters(weight)
    shape = tuple(weight.shape)
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise UserError(
            "pair_image needs conv weights n x c x kh x kw with c = 1 or 3 (a first layer); "
            f"got shape {shape}"
        )
    if not isinstance(gap, (int, np.integer)) or gap < 0:
        raise UserError(f"gap must be a non-negative integer; got {gap!r}")
    if not 0.0 <= background <= 1.0:
        raise UserError(f"background must lie in [0, 1]; got {background}")
    _, pair = _pairing_flat(flat)
    unit = (flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True)).numpy()
    n, c, kh, kw = shape
    filters = unit.reshape(n, c, kh, kw).transpose(0, 2, 3, 1)  # n x kh x kw x c
    columns = columns or math.ceil(math.sqrt(n / 2))
    if columns < 1:
        raise UserError(f"columns must be positive; got {columns}")
    rows = math.ceil(n / columns)
    cell_w, cell_h = 2 * kw + gap, kh
    height = rows * cell_h + (rows - 1) * 2 * gap
    width = columns * cell_w + (columns - 1) * 2 * gap
    image = np.full((height, width, c), background, dtype=np.float64)
    pair = pair.numpy()
    for i in range(n):
        a, b = filters[i], filters[pair[i]]
        scale = max(np.abs(a).max(), np.abs(b).max())
        top = (i // columns) * (cell_h + 2 * gap)
        left = (i % columns) * (cell_w + 2 * gap)
        image[top : top + kh, left : left + kw] = 0.5 + 0.5 * a / scale
        image[top : top + kh, left + kw + gap : left + 2 * kw + gap] = 0.5 + 0.5 * b / scale
    return image[..., 0] if c == 1 else image
