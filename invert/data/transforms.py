"""Batch transforms: the training augmentation."""

from __future__ import annotations

import torch

from invert.errors import UserError, UserTypeError

__all__ = ["augment"]


def augment(
    batch: torch.Tensor,
    *,
    flip: bool = True,
    max_shift: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random horizontal flips and shifts of a batch, on the batch's device.

    Each image is mirrored left-right with probability 1/2 (the paper's augmentation),
    then translated by ``(dy, dx)`` drawn uniformly from ``[-max_shift, max_shift]``
    (the VGG recipe of Zagoruyko): ``out[..., y, x] = in[..., y - dy, x - dx]``, with
    zeros where that falls outside the image. No Python loop over images.

    Parameters
    ----------
    batch : torch.Tensor, shape (N, C, H, W)
        Images (any dtype; float in [0, 1] usually).
    flip : bool
        Apply random horizontal flips.
    max_shift : int
        Largest shift in pixels along each axis; 0 disables shifting.
    generator : torch.Generator, optional
        Source of randomness; the draws happen on its device (so a CPU generator gives
        the same augmentation for a CPU or a CUDA batch). None uses the global RNG of
        the batch's device.

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape, dtype and device (``batch`` itself when
        there is nothing to do).

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> augment(x, flip=True, generator=torch.Generator().manual_seed(0)).flatten().tolist()
    [3.0, 2.0, 1.0, 0.0]
    """
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        raise UserTypeError("augment expects a tensor of shape N x C x H x W")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise UserError(f"max_shift must be a non-negative integer; got {max_shift!r}")
    n, _, height, width = batch.shape
    if n == 0 or (not flip and max_shift == 0):
        return batch
    draw_device = generator.device if generator is not None else batch.device
    device, m = batch.device, max_shift
    mirror = torch.zeros(n, dtype=torch.bool, device=draw_device)
    if flip:
        mirror = torch.rand(n, generator=generator, device=draw_device) < 0.5
    shifts = torch.zeros(2, n, dtype=torch.int64, device=draw_device)
    if m:
        shifts = torch.randint(-m, m + 1, (2, n), generator=generator, device=draw_device)
    mirror, (dy, dx) = mirror.to(device), shifts.to(device)
    # One gather does both: out[y, x] = flipped[y - dy, x - dx] = padded[y - dy + m,
    # f(x - dx) + m] with f(c) = W - 1 - c when mirrored; the zero border gives the fill.
    padded = torch.nn.functional.pad(batch, (m, m, m, m)) if m else batch
    y = torch.arange(height, device=device)[None, :] - dy[:, None] + m  # (N, H)
    x = torch.arange(width, device=device)[None, :] - dx[:, None]  # (N, W)
    x = torch.where(mirror[:, None], width - 1 - x, x) + m
    index = (y[:, :, None] * (width + 2 * m) + x[:, None, :]).view(n, 1, height * width)
    flat = padded.reshape(n, batch.shape[1], -1)
    out = flat.gather(2, index.expand(n, batch.shape[1], height * width))
    return out.view(batch.shape)
