"""Max-pooling reconstruction metrics: what switches keep of a conv + CReLU layer.

**Our definition** (the paper's supplement, which analyses max-pooling in its
Section A.2/C, is unavailable to us). For a conv layer ``T`` with bias ``b`` followed by
CReLU and max-pooling, and an input ``x`` of the layer:

1. ``z = T x + b``; ``u = CReLU(z)``; ``pooled, switches = maxpool(u)``.
2. The switches turn the pooled values into linear equations ``z_S = v`` on a subset
   ``S`` of the entries of ``z`` (:func:`invert.linalg.switches.switch_equations`: a non-zero
   pooled value of either CReLU half fixes ``z`` at its switch).
3. The *switch-based reconstruction* is the minimum-norm least-squares solution
   ``x' = (S T)^+ (v - b_S)`` (:func:`invert.linalg.solvers.least_squares` with the mask).

Reported per input (:class:`SwitchMetrics`), each for the learned filters and for
i.i.d. Gaussian filters of the same shape, each rescaled to the norm of its learned
filter (same bias):

* ``rel_error = ||x' - x|| / ||x||``: what max-pooling loses (0 when the selected
  equations determine ``x``);
* ``equations``: the size of ``S``; ``rank``: the numerical rank of ``S T`` (singular
  values above ``max(|S|, D) * eps * sigma_max``, numpy's rule), ``D = C_in H W``;
* ``A = lambda_min((S T)^T (S T))`` over the whole input space: the lower frame bound
  of the selected atoms, **0 whenever rank < D** (some input is invisible);
* ``A_nonzero``: the smallest *non-zero* eigenvalue (``sigma_rank^2``): the lower frame
  bound on the part of the input the switches can recover, i.e. the stability of the
  reconstruction there (an error ``e`` in ``v`` moves ``x'`` by up to
  ``||e|| / sqrt(A_nonzero)``).

``rank``, ``A`` and ``A_nonzero`` come from the singular values of the dense selected
rows (float64), built with :meth:`ConvOperator.dense`; that is feasible for input
dimensions ``D`` up to a few thousand (:data:`DENSE_MAX_DIM`, seconds per input);
beyond it they are ``None`` and only the (matrix-free) error is computed.
:func:`pooling_metrics` picks small crops for this reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from invert.data import natural_images
from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.linalg.operators import ConvOperator, as_conv_weight, conv_padding
from invert.linalg.solvers import least_squares
from invert.linalg.spectrum import DENSE_MAX_DIM
from invert.linalg.switches import max_pool_with_switches, switch_equations
from invert.nn import (
    conv_input_sizes,
    conv_layers,
    eval_mode,
    execution_order,
    layer_inputs,
    select_layers,
)
from invert.nn.activations import crelu
from invert.progress import progress_bar, say
from invert.validation import check_positive_int

from .frames import check_model, gaussian_like

__all__ = [
    "DENSE_MAX_DIM",
    "LayerSwitchMetrics",
    "SwitchMetrics",
    "pooled_layers",
    "pooling_metrics",
    "switch_metrics",
]


_CROP_SIZES = (32, 24, 16, 12, 8, 6, 4)


@dataclass(frozen=True)
class SwitchMetrics:
    """Switch-based reconstruction metrics, one value per input of the batch.

    Attributes
    ----------
    rel_error : numpy.ndarray
        ``||x' - x|| / ||x||``.
    equations : numpy.ndarray of int
        Number of selected equations.
    rank : numpy.ndarray of int or None
        Numerical rank of the selected rows ``S T``.
    A : numpy.ndarray or None
        ``lambda_min((S T)^T S T)`` over the input space (0 when ``rank < input_dim``).
    A_nonzero : numpy.ndarray or None
        Smallest non-zero eigenvalue of ``(S T)^T S T`` (``nan`` when nothing is selected).
    B : numpy.ndarray or None
        Largest eigenvalue of ``(S T)^T S T``.
    input_dim : int
        ``D = C_in H W``.
    converged : numpy.ndarray of bool
        Whether each least-squares solve reached its tolerance.
    """

    rel_error: np.ndarray
    equations: np.ndarray
    rank: np.ndarray | None
    A: np.ndarray | None
    A_nonzero: np.ndarray | None
    B: np.ndarray | None
    input_dim: int
    converged: np.ndarray

    def summary(self) -> dict:
        """Means over the batch (``rel_error_max`` the worst input), as plain floats."""

        def mean(values):
            return None if values is None else float(np.nanmean(values))

        return {
            "images": len(self.rel_error),
            "input_dim": self.input_dim,
            "equations": mean(self.equations),
            "rank": mean(self.rank),
            "rel_error": mean(self.rel_error),
            "rel_error_max": float(np.max(self.rel_error)),
            "A": mean(self.A),
            "A_nonzero": mean(self.A_nonzero),
            "converged": bool(self.converged.all()),
        }


@dataclass(frozen=True)
class LayerSwitchMetrics:
    """The switch metrics of one layer and filter set (:func:`pooling_metrics`).

    Attributes
    ----------
    layer : str
        The conv layer (as in :func:`invert.nn.net.conv_layers`).
    filters : str
        ``"learned"`` or ``"random"`` (the Gaussian baseline).
    pool : nn.MaxPool2d
        The pooling the block was given.
    pool_assumed : bool
        True when no max-pooling follows the layer in the network (``pool`` is assumed).
    input_shape : (int, int, int)
        ``(C, H, W)`` of the layer's input.
    metrics : SwitchMetrics
        One value per image (:meth:`SwitchMetrics.summary`: the means).
    """

    layer: str
    filters: str
    pool: nn.MaxPool2d
    pool_assumed: bool
    input_shape: tuple[int, int, int]
    metrics: SwitchMetrics


def switch_metrics(
    conv_or_weight,
    x: torch.Tensor,
    pool: nn.MaxPool2d,
    *,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    dense: bool | None = None,
    tol: float | None = None,
    max_iter: int = 2000,
    device=None,
) -> SwitchMetrics:
    """Switch-based reconstruction metrics of one conv + CReLU + max-pool block.

    Parameters
    ----------
    conv_or_weight : nn.Conv2d or torch.Tensor
        The conv layer (its stride, padding, dilation, groups, padding mode and bias are
        used) or its weight ``(C_out, C_in / groups, kh, kw)``.
    x : torch.Tensor
        Inputs of the layer, ``(N, C_in, H, W)``; computed in float64.
    pool : nn.MaxPool2d
        The pooling layer applied to the CReLU output.
    bias : torch.Tensor, optional
        Bias of a bare weight (default 0; a conv's own bias is used otherwise).
    stride, padding, dilation, groups : optional
        Geometry of a bare weight (zero padding by ``padding``), as in ``nn.Conv2d``.
    dense : bool, optional
        Compute ``rank``, ``A`` and ``A_nonzero`` from the dense selected rows; default:
        when ``D <= DENSE_MAX_DIM``.
    tol, max_iter : optional
        Of :func:`invert.linalg.solvers.least_squares` (default tolerance 1e-12 in float64).
    device : optional
        ``None``: CUDA when available, else CPU.

    Returns
    -------
    SwitchMetrics

    Examples
    --------
    A delta filter and 2x2 pooling on a positive image: only the positive CReLU half
    fires, and its switches fix the largest pixel of each window (the negative half
    would fix the smallest one), so 4 of the 16 pixels are recovered exactly.

    >>> import torch
    >>> from torch import nn
    >>> delta = torch.zeros(1, 1, 3, 3); delta[0, 0, 1, 1] = 1
    >>> x = torch.rand(2, 1, 4, 4, dtype=torch.float64) + 0.1
    >>> m = switch_metrics(delta, x, nn.MaxPool2d(2), padding=1)
    >>> m.equations.tolist(), m.rank.tolist(), m.A.tolist(), m.A_nonzero.tolist()
    ([4, 4], [4, 4], [0.0, 0.0], [1.0, 1.0])
    """
    device = resolve_device(device)
    with torch.no_grad():
        return _switch_metrics(
            conv_or_weight, x, pool, bias, stride, padding, dilation, groups, dense, tol,
            max_iter, device,
        )  # fmt: skip


def _switch_metrics(
    conv_or_weight, x, pool, bias, stride, padding, dilation, groups, dense, tol, max_iter, device
) -> SwitchMetrics:
    op, b = _block_operator(conv_or_weight, x, bias, stride, padding, dilation, groups)
    op = op.to(device=device, dtype=torch.float64)
    if not isinstance(pool, nn.MaxPool2d):
        raise UserTypeError(f"pool must be an nn.MaxPool2d; got {type(pool).__name__}")
    x = x.to(device=device, dtype=torch.float64)
    b = b.to(device=device, dtype=torch.float64).reshape(1, -1, 1, 1)
    z = op.apply(x) + b
    pooled, switches = max_pool_with_switches(crelu(z), pool)
    mask, values = switch_equations(pooled, switches, z.shape[1:], activation="crelu")
    target = torch.where(mask, values - b, torch.zeros_like(values))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is reported in .converged
        x_rec, info = least_squares(op, target, mask=mask, tol=tol, max_iter=max_iter)
    error = (x_rec - x).flatten(1).norm(dim=1)
    rel_error = error / x.flatten(1).norm(dim=1).clamp_min(1e-300)
    input_dim = math.prod(op.in_shape)
    if dense is None:
        dense = input_dim <= DENSE_MAX_DIM
    rank = a = a_nonzero = upper = None
    if dense:
        rank, a, a_nonzero, upper = _selected_spectra(op, mask)
    return SwitchMetrics(
        rel_error=rel_error.cpu().numpy(),
        equations=mask.flatten(1).sum(dim=1).cpu().numpy(),
        rank=rank,
        A=a,
        A_nonzero=a_nonzero,
        B=upper,
        input_dim=input_dim,
        converged=info.converged.cpu().numpy(),
    )


def _selected_spectra(op: ConvOperator, mask: torch.Tensor):
    """Rank and extreme eigenvalues of ``(S T)^T S T`` from dense selected rows."""
    matrix = op.dense(torch.float64)
    input_dim = matrix.shape[1]
    ranks, lows, nonzeros, highs = [], [], [], []
    for selected in mask.flatten(1):
        rows = matrix[selected]
        if rows.shape[0] == 0:
            ranks.append(0)
            lows.append(0.0)
            nonzeros.append(math.nan)
            highs.append(0.0)
            continue
        s = torch.linalg.svdvals(rows).cpu().numpy()  # descending
        cutoff = max(rows.shape) * np.finfo(np.float64).eps * s[0]
        rank = int((s > cutoff).sum())
        ranks.append(rank)
        lows.append(float(s[-1]) ** 2 if rank == input_dim else 0.0)
        nonzeros.append(float(s[rank - 1]) ** 2 if rank else math.nan)
        highs.append(float(s[0]) ** 2)
    return np.array(ranks), np.array(lows), np.array(nonzeros), np.array(highs)


def _block_operator(conv_or_weight, x, bias, stride, padding, dilation, groups):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise UserError("x must be a (N, C, H, W) tensor of layer inputs")
    if not x.is_floating_point():
        raise UserTypeError(f"x must be floating point; got {x.dtype}")
    if not torch.isfinite(x).all():
        raise UserError("x contains NaN or Inf values")
    if isinstance(conv_or_weight, nn.Module):
        if not isinstance(conv_or_weight, nn.Conv2d):
            raise UserTypeError(
                f"expected an nn.Conv2d or a 4-D conv weight; got {type(conv_or_weight).__name__}"
            )
        conv = conv_or_weight
        if conv.padding_mode not in ("zeros", "circular"):
            raise UserError(f"padding_mode {conv.padding_mode!r} is not supported")
        op = ConvOperator.from_conv(conv, x.shape[-2:])
        b = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        if bias is not None:
            b = torch.as_tensor(bias)
    else:
        weight = as_conv_weight(conv_or_weight)
        op = ConvOperator(weight, x.shape[-2:], stride=stride, padding=padding,
                          dilation=dilation, groups=groups)  # fmt: skip
        b = torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias)
    if tuple(x.shape[1:2]) != (op.in_channels,):
        raise UserError(f"x has {x.shape[1]} channels; the layer takes {op.in_channels}")
    b = b.detach().to(torch.float64)
    if b.shape != (op.out_channels,) or not torch.isfinite(b).all():
        raise UserError(f"bias must be {op.out_channels} finite values; got shape {tuple(b.shape)}")
    return op, b


# --- models ---------------------------------------------------------------------------------


def pooling_metrics(
    model: nn.Module,
    layers: str | Sequence[str] | None = None,
    *,
    images: torch.Tensor | None = None,
    n_images: int = 8,
    image_size: int | None = None,
    pool: nn.MaxPool2d | int | None = None,
    random_baseline: bool = True,
    seed: int = 0,
    max_dim: int = DENSE_MAX_DIM,
    device=None,
    progress: bool = False,
) -> list[LayerSwitchMetrics]:
    """Switch-based reconstruction metrics of conv layers of a model on natural images.

    Each layer is treated as a conv + CReLU + max-pool block (our definition, see the
    module notes), whatever the model's own activation: its filters (BatchNorm folded
    in, eval statistics) and bias; the max-pooling that follows it in the network (or
    ``pool``); and its actual inputs when the model sees the images.

    Parameters
    ----------
    model : nn.Module
        The network (:func:`invert.load_model` turns a spec into one).
    layers : str or sequence of str, optional
        Conv layers (names of :func:`invert.nn.net.conv_layers`); default: every conv
        layer followed by a max-pooling layer (before the next conv).
    images : torch.Tensor, optional
        ``(N, C, S, S)`` network inputs in [0, 1]. Default: ``n_images`` crops of the
        embedded photographs (``load_dataset("textures", split="test")``), spread over
        the source images.
    n_images : int, optional
        Number of default crops.
    image_size : int, optional
        Side of the default crops. Default: per layer, the largest of 32, 24, 16, 12, 8,
        6, 4 whose layer input has at most ``max_dim`` values (so that rank and frame
        bounds can be computed densely).
    pool : nn.MaxPool2d or int, optional
        Pooling for layers that no max-pooling follows (an int ``k``: ``k x k``,
        stride ``k``); default 2x2, stride 2. A layer's own pooling always wins.
    random_baseline : bool, optional
        Also report Gaussian filters of the same shape and per-filter norms.
    seed : int, optional
        Seeds the crops and the random filters.
    max_dim : int, optional
        Largest layer-input dimension for the dense rank / frame bounds (default: the
        eigenvalue engine's one threshold, :data:`DENSE_MAX_DIM`).
    device : optional
        ``None``: CUDA when available, else CPU.
    progress : bool, optional
        Show a bar over the layers and filter sets on stderr, and what each step computes
        (:mod:`invert.progress`).

    Returns
    -------
    list of LayerSwitchMetrics
        One per layer and filter set (learned, then random);
        :func:`invert.display.pooling_rows` turns them into table rows.

    Examples
    --------
    >>> import torch
    >>> from invert.nn.zoo import create_model
    >>> net = create_model("convpool_c_crelu", width=0.05)
    >>> result = pooling_metrics(net, "conv3", n_images=2, image_size=8, device="cpu")
    >>> [(r.layer, r.filters, r.pool.kernel_size, r.input_shape) for r in result]
    [('conv3', 'learned', 3, (10, 8, 8)), ('conv3', 'random', 3, (10, 8, 8))]
    >>> 0 <= result[0].metrics.summary()["rel_error"] <= 1
    True
    """
    device = resolve_device(device)
    check_positive_int(n_images, name="n_images")
    check_positive_int(image_size, name="image_size", allow_none=True)
    default_pool = _as_pool(pool)
    model = check_model(model)
    convs = conv_layers(model)
    if not convs:
        raise UserError(f"the model ({type(model).__name__}) has no nn.Conv2d layer")
    if images is not None:
        images = _check_images(images)
    channels = images.shape[1] if images is not None else next(iter(convs.values())).in_channels
    names = None if layers is None else select_layers(layers, convs)
    say(progress, "pooling: finding the max-pooling after each conv layer (a forward pass)")
    pools = _following_pools(model, convs, channels, _probe_sizes(images, image_size))
    names = names or _pooled_names(convs, pools)
    result = []
    steps = len(names) * (2 if random_baseline else 1)
    with progress_bar(progress, total=steps, desc="pooling", unit="block") as bar:
        for index, name in enumerate(names):
            conv = convs[name]
            batch = images
            if batch is None:
                size = image_size or _crop_size(model, conv, channels, max_dim)
                batch = natural_images(n_images, size=size, channels=channels, seed=seed)
            x = _layer_input(model, conv, batch)
            weight, bias = _folded(model, name, conv)
            filter_sets = [("learned", weight)]
            if random_baseline:
                filter_sets.append(("random", gaussian_like(weight, seed + index)))
            dense = math.prod(x.shape[1:]) <= max_dim
            block = dict(layer=name, pool=pools.get(name) or default_pool,
                         pool_assumed=pools.get(name) is None,
                         input_shape=tuple(x.shape[1:]))  # fmt: skip
            for label, w in filter_sets:
                bar.set_postfix_str(f"{name} {label}: {len(x)} images, "
                                    f"{'dense rank, ' if dense else ''}switch solve")  # fmt: skip
                metrics = switch_metrics(w, x, block["pool"], bias=bias, dense=dense,
                                         device=device, **_geometry(conv))  # fmt: skip
                result.append(LayerSwitchMetrics(**block, filters=label, metrics=metrics))
                bar.update()
    return result


def _pooled_names(convs, pools) -> list[str]:
    """The conv layers that a max-pooling follows (the default of :func:`pooling_metrics`)."""
    names = [name for name in convs if pools.get(name) is not None]
    if not names:
        raise UserError(
            "no conv layer of the model is followed by max-pooling; name layers "
            "explicitly (2x2 pooling is then assumed unless pool is given)"
        )
    return names


def _geometry(conv: nn.Conv2d) -> dict:
    """A conv's geometry as :func:`switch_metrics` takes it for a bare weight."""
    return dict(stride=conv.stride, padding=_zero_padding(conv), dilation=conv.dilation,
                groups=conv.groups)  # fmt: skip


def _probe_sizes(images, image_size) -> list[int]:
    return [images.shape[-1]] if images is not None else [image_size or 32, 64, 128, 224]


def pooled_layers(model: nn.Module, *, image_size: int | None = None) -> list[str]:
    """The conv layers :func:`pooling_metrics` takes by default: those followed by
    max-pooling (before the next conv).

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> pooled_layers(create_model("convpool_c", width=0.05))
    ['conv3', 'conv6']
    """
    convs = conv_layers(check_model(model))
    if not convs:
        return []
    channels = next(iter(convs.values())).in_channels
    pools = _following_pools(model, convs, channels, _probe_sizes(None, image_size))
    return [name for name in convs if pools.get(name) is not None]


def _as_pool(pool) -> nn.MaxPool2d:
    if pool is None:
        return nn.MaxPool2d(2, 2)
    if isinstance(pool, nn.MaxPool2d):
        return pool
    if isinstance(pool, int) and not isinstance(pool, bool) and pool >= 1:
        return nn.MaxPool2d(pool, pool)
    raise UserTypeError(f"pool must be an nn.MaxPool2d or a positive int; got {pool!r}")


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise UserError("images must be a (N, C, H, W) tensor")
    if not images.is_floating_point():
        raise UserTypeError(f"images must be floating point in [0, 1]; got {images.dtype}")
    if not torch.isfinite(images).all():
        raise UserError("images contain NaN or Inf values")
    return images


def _zero_padding(conv: nn.Conv2d):
    if conv.padding_mode != "zeros":
        raise UserError(
            f"pooling metrics use the layer's zero padding; padding_mode {conv.padding_mode!r} "
            "is not supported"
        )
    return conv_padding(conv)


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """Leaf modules in the order they run on ``x`` (first call of each)."""
    try:
        with eval_mode(model), torch.no_grad():
            return [module for _, module in execution_order(model, x)]
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"a forward pass of a {tuple(x.shape[1:])} input failed ({first}); give images of "
            f"the size and channels the network takes"
        ) from error


def _following_pools(model, convs, channels, sizes) -> dict[str, nn.MaxPool2d | None]:
    """For each conv layer, the max-pooling that runs after it before the next conv."""
    param = next(model.parameters())
    order, error = [], None
    for size in sizes:  # the first input size the network accepts
        x = torch.zeros(1, channels, size, size, dtype=param.dtype, device=param.device)
        try:
            order = _execution_order(model, x)
            break
        except ValueError as failure:
            error = failure
    else:
        raise error
    name_of = {id(m): n for n, m in convs.items()}
    pools: dict[str, nn.MaxPool2d | None] = {}
    current = None
    for module in order:
        if isinstance(module, nn.Conv2d):
            current = name_of.get(id(module))
            pools.setdefault(current, None)
        elif isinstance(module, nn.MaxPool2d) and current is not None:
            if pools.get(current) is None:
                pools[current] = module
            current = None
    return pools


def _layer_input(model: nn.Module, conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
    name = next(n for n, m in model.named_modules() if m is conv)
    param = next(model.parameters())
    with eval_mode(model), torch.no_grad():
        x = layer_inputs(model, images.to(device=param.device, dtype=param.dtype), name)[name]
    return x.detach().to(torch.float64)


def _folded(model: nn.Module, name: str, conv: nn.Conv2d):
    """Weight and bias of the conv with a BatchNorm that directly follows it folded in."""
    weight = conv.weight.detach().to("cpu", torch.float64)
    bias = (
        conv.bias.detach().to("cpu", torch.float64)
        if conv.bias is not None
        else torch.zeros(conv.out_channels, dtype=torch.float64)
    )
    parent = None
    for module in model.modules():
        children = list(module.children())
        if any(child is conv for child in children):
            parent = children
            break
    if parent is not None:
        following = parent[parent.index(next(c for c in parent if c is conv)) + 1 :]
        if following and isinstance(following[0], nn.BatchNorm2d):
            bn = following[0]
            mean = bn.running_mean.detach().to("cpu", torch.float64)
            var = bn.running_var.detach().to("cpu", torch.float64)
            gamma = (
                bn.weight.detach().to("cpu", torch.float64) if bn.affine else torch.ones_like(mean)
            )
            beta = (
                bn.bias.detach().to("cpu", torch.float64) if bn.affine else torch.zeros_like(mean)
            )
            scale = gamma / torch.sqrt(var + bn.eps)
            weight = weight * scale.reshape(-1, 1, 1, 1)
            bias = (bias - mean) * scale + beta
    return weight, bias


def _crop_size(model, conv, channels, max_dim) -> int:
    """The largest default crop whose layer input has at most ``max_dim`` values."""
    for size in _CROP_SIZES:
        try:
            shape = conv_input_sizes(model, size, in_channels=channels, convs=[conv]).get(conv)
        except ValueError:
            continue
        if shape is not None and conv.in_channels * shape[0] * shape[1] <= max_dim:
            return size
    return _CROP_SIZES[-1]
