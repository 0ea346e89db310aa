"""Max-pooling with switches: pooled activations as linear equations.

Our definition (the paper's supplement, which treats max-pooling, is unavailable).
Recording where each window's maximum was taken (the *switches*,
``return_indices=True`` in PyTorch) turns max-pooling into a selection: the pooled
value ``v`` at a window is the value ``u(p)`` of the pooled tensor ``u`` at the switch
``p``. For a block ``z = conv(x) + b``, ``u = act(z)``, ``pooled = maxpool(u)`` this
gives equations on the pre-activation ``z``:

* **CReLU** (``u = [relu(z), relu(-z)]``, positive half first). A non-zero pooled
  value of positive-half channel ``c`` at switch ``p`` gives ``z_c(p) = v``. A
  non-zero pooled value of negative-half channel ``c`` gives ``z_c(p) = -v``: the
  switch of ``relu(-z)`` is the argmin of ``z`` over the window. A zero pooled value
  only says ``z <= 0`` (or ``>= 0``) on the window: an inequality, not an equation,
  so it is dropped -- except where switches of both halves of one channel meet at the
  same point, where ``z = pos - neg`` holds whatever the values (``z = 0`` when both are 0).
* **ReLU**: only the non-zero pooled values give equations, ``z_c(p) = v``.
* **No activation** (``activation=None``): every pooled value is an equation.

Overlapping windows can share a switch; duplicates are merged into one equation whose
value is their mean (they are equal for features computed by the model). The result
is a mask over ``z`` and the values, ready for
``least_squares(op, values - bias, mask=mask)`` (:func:`invert.linalg.solvers.least_squares`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from invert.errors import UserError, UserTypeError

from .operators import as_pair

__all__ = ["max_pool_with_switches", "switch_equations", "unpool_switches", "window_bounds"]

_ACTIVATIONS = ("crelu", "relu", None)


def max_pool_with_switches(
    y: torch.Tensor, pool: nn.MaxPool2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``pool`` to ``y`` and return the pooled tensor and its switches.

    Parameters
    ----------
    y : torch.Tensor
        ``(N, C, H, W)`` input of the pooling layer.
    pool : nn.MaxPool2d
        The layer; its kernel, stride, padding, dilation and ceil mode are used.

    Returns
    -------
    pooled : torch.Tensor
        Exactly ``pool(y)``.
    indices : torch.Tensor
        int64, same shape: the flat position ``h * W + w`` in each channel of ``y`` at
        which each window's maximum was taken.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> y = torch.tensor([[[[1.0, 3.0], [2.0, 0.0]]]])
    >>> max_pool_with_switches(y, nn.MaxPool2d(2))
    (tensor([[[[3.]]]]), tensor([[[[1]]]]))
    """
    if not isinstance(pool, nn.MaxPool2d):
        raise UserTypeError(f"pool must be an nn.MaxPool2d; got {type(pool).__name__}")
    if not isinstance(y, torch.Tensor) or y.dim() != 4:
        raise UserError("max-pooling input must be a (N, C, H, W) tensor")
    if not torch.isfinite(y).all():
        raise UserError("max-pooling input contains NaN or Inf")
    return F.max_pool2d(
        y, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
        ceil_mode=pool.ceil_mode, return_indices=True,
    )  # fmt: skip


def _pre_shape(pre_shape, n: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in pre_shape)
    if len(shape) == 4:
        if shape[0] != n:
            raise UserError(f"pre_shape has batch size {shape[0]}; the pooled batch has {n}")
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"pre_shape must be (C, H, W) or (N, C, H, W); got {tuple(pre_shape)}")
    return shape


def unpool_switches(
    pooled: torch.Tensor,
    indices: torch.Tensor,
    input_shape,
    *,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put pooled values back at their switches: equations ``u(p) = v`` on the pool input.

    Parameters
    ----------
    pooled, indices : torch.Tensor
        ``(N, C, h, w)`` pooled values (or estimates of them) and their switches.
    input_shape : tuple
        ``(C, H, W)`` of the pooling layer's input ``u``.
    mask : torch.Tensor, optional
        Bool ``(N, C, h, w)``: use only these pooled entries.

    Returns
    -------
    mask : torch.Tensor
        Bool ``(N, C, H, W)``: the positions that are some window's switch.
    values : torch.Tensor
        ``(N, C, H, W)``: the mean of the pooled values assigned to each switch, 0 elsewhere.
    """
    if pooled.shape != indices.shape or pooled.dim() != 4:
        raise UserError(
            f"pooled values {tuple(pooled.shape)} and switches {tuple(indices.shape)} "
            "must be (N, C, h, w) tensors of the same shape"
        )
    n, c = pooled.shape[:2]
    shape = _pre_shape(input_shape, n)
    if shape[0] != c:
        raise UserError(f"switches have {c} channels; the pooled input has {shape[0]}")
    size = shape[1] * shape[2]
    idx = indices.to(device=pooled.device, dtype=torch.long).flatten(2)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise UserError(f"switch indices must lie in [0, {size}) for a {shape[1:]} input")
    src = pooled.flatten(2)
    ones = torch.ones_like(src)
    if mask is not None:
        used = mask.to(pooled.device).expand_as(pooled).flatten(2)
        src, ones = src * used, ones * used
    sums = src.new_zeros(n, c, size).scatter_add_(2, idx, src)
    counts = src.new_zeros(n, c, size).scatter_add_(2, idx, ones)
    selected = counts > 0
    values = torch.where(selected, sums / torch.where(selected, counts, 1), 0)
    return selected.view(n, *shape), values.view(n, *shape)


def window_bounds(
    pooled: torch.Tensor,
    pool: nn.MaxPool2d,
    input_shape,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upper bound on every pool input: the smallest pooled value of the windows covering it.

    A window's maximum bounds each of its entries, so ``u(p) <= min_{windows W containing p}
    pooled(W)``; positions no window covers get ``+inf``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> pooled = torch.tensor([[[[3.0, 1.0]]]])
    >>> window_bounds(pooled, nn.MaxPool2d((1, 2), stride=(1, 1)), (1, 1, 3))
    tensor([[[[3., 1., 1.]]]])
    """
    n, c = pooled.shape[:2]
    _, h, w = _pre_shape(input_shape, n)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        as_pair(pool.kernel_size), as_pair(pool.stride or pool.kernel_size), as_pair(pool.padding),
        as_pair(pool.dilation),
    )  # fmt: skip
    oh, ow = pooled.shape[2:]
    dev = pooled.device
    rows = torch.arange(oh, device=dev)[:, None] * sh + torch.arange(kh, device=dev) * dh - ph
    cols = torch.arange(ow, device=dev)[:, None] * sw + torch.arange(kw, device=dev) * dw - pw
    # (oh, ow, kh, kw) flat input positions of every window entry, and which are inside
    row_in, col_in = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    inside = row_in[:, None, :, None] & col_in[None, :, None, :]
    flat = rows.clamp(0, h - 1)[:, None, :, None] * w + cols.clamp(0, w - 1)[None, :, None, :]
    values = pooled if mask is None else torch.where(mask.expand_as(pooled), pooled, math.inf)
    src = values[:, :, :, :, None, None].expand(n, c, oh, ow, kh, kw)
    src = torch.where(inside, src, math.inf).reshape(n, c, -1)
    index = flat.expand(n, c, oh, ow, kh, kw).reshape(n, c, -1)
    bound = pooled.new_full((n, c, h * w), math.inf)
    bound.scatter_reduce_(2, index, src, reduce="amin")
    return bound.view(n, c, h, w)


def crelu_equations(
    values: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Equations on ``z`` from (a selection of) a CReLU output ``[relu(z), relu(-z)]``.

    Without a mask this is ``z = pos - neg`` everywhere (mask ``None``). With one, a
    position of channel ``c`` gets an equation when the positive half is selected with a
    positive value (``z = pos``), the negative half is selected with a positive value
    (``z = -neg``), or both are selected (``z = pos - neg``).
    """
    k = values.shape[1] // 2
    pos, neg = values[:, :k], values[:, k:]
    if mask is None:
        return None, pos - neg
    mask = mask.expand_as(values)
    mp, mn = mask[:, :k], mask[:, k:]
    eq = (mp & mn) | (mp & (pos > 0)) | (mn & (neg > 0))
    z = torch.where(mp, pos, 0) - torch.where(mn, neg, 0)
    return eq, torch.where(eq, z, 0)


def switch_equations(
    pooled: torch.Tensor,
    indices: torch.Tensor,
    pre_shape,
    *,
    activation: str | None = "crelu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear equations on the pre-activation ``z`` from pooled activations and switches.

    See the module notes for the rules (our definition).

    Parameters
    ----------
    pooled : torch.Tensor
        ``(N, C, h, w)`` pooled activations: ``C = 2K`` for CReLU, ``K`` otherwise.
    indices : torch.Tensor
        Their switches, from :func:`max_pool_with_switches`.
    pre_shape : tuple
        Shape ``(K, H, W)`` (or ``(N, K, H, W)``) of the pre-activation ``z``.
    activation : {"crelu", "relu", None}, optional
        The activation between ``z`` and the pooling layer.

    Returns
    -------
    mask : torch.Tensor
        Bool ``(N, K, H, W)``: the entries of ``z`` fixed by an equation.
    values : torch.Tensor
        ``(N, K, H, W)``: their values (0 where ``mask`` is False).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from invert.nn.activations import crelu
    >>> z = torch.tensor([[[[1.0, -3.0], [2.0, 0.5]]]])
    >>> pooled, idx = max_pool_with_switches(crelu(z), nn.MaxPool2d(2))
    >>> mask, values = switch_equations(pooled, idx, z.shape[1:])
    >>> mask.int().tolist(), values.tolist()
    ([[[[0, 1], [1, 0]]]], [[[[0.0, -3.0], [2.0, 0.0]]]])
    """
    if activation not in _ACTIVATIONS:
        raise UserError(f"activation must be 'crelu', 'relu' or None; got {activation!r}")
    if not isinstance(pooled, torch.Tensor) or pooled.dim() != 4:
        raise UserError("pooled activations must be a (N, C, h, w) tensor")
    if not torch.isfinite(pooled).all():
        raise UserError("pooled activations contain NaN or Inf")
    n = pooled.shape[0]
    k, h, w = _pre_shape(pre_shape, n)
    if activation == "crelu":
        if pooled.shape[1] != 2 * k:
            raise UserError(
                f"a CReLU of {k} pre-activation channels pools {2 * k} channels; "
                f"got {pooled.shape[1]}"
            )
        selected, values = unpool_switches(pooled, indices, (2 * k, h, w))
        mask, z = crelu_equations(values, selected)
        return mask, z
    if pooled.shape[1] != k:
        raise UserError(f"expected {k} pooled channels (one per pre-activation channel); "
                         f"got {pooled.shape[1]}")  # fmt: skip
    selected, values = unpool_switches(pooled, indices, (k, h, w))
    if activation == "relu":
        selected = selected & (values > 0)
        values = torch.where(selected, values, 0)
    return selected, values
