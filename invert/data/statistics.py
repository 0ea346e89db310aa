"""Per-channel statistics of a data set (the model's input normalization)."""

from __future__ import annotations

import math

import torch

from invert.errors import UserError

__all__ = ["channel_statistics"]


def channel_statistics(
    dataset, *, batch_size: int = 256, num_workers: int = 0
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of a data set, in [0, 1] units.

    The trainer puts these in the model's ``Normalize`` layer (the paper subtracts the
    mean and divides by the standard deviation of the training set). The standard
    deviation is the population one (over all pixels of all images, ``ddof=0``).

    Parameters
    ----------
    dataset : ImageDataset or any dataset of ``(image C x H x W, label)`` items
        In-memory data sets (with uint8 ``.images``) are reduced to per-channel
        histograms of the 256 levels, whose moments are exact integers; others are
        streamed item by item and combined in float64 with Chan's parallel update (no
        catastrophic cancellation).
    batch_size : int
        Images per step when streaming (bounds the memory used).
    num_workers : int
        Loader processes for streamed data sets (decoding in parallel).

    Returns
    -------
    (mean, std) : tuple of lists of float

    Examples
    --------
    >>> import torch
    >>> from invert.data import ImageDataset
    >>> images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    >>> channel_statistics(ImageDataset(images, [0, 0], ["a"]))
    ([0.5], [0.5])
    """
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4:
        return _uint8_statistics(images)
    return _streamed_statistics(dataset, batch_size, num_workers)


def _uint8_statistics(images: torch.Tensor, chunk: int = 16384):
    if len(images) == 0:
        raise UserError("cannot compute statistics of an empty data set")
    channels = images.shape[1]
    # Histograms of the 256 grey levels per channel give exact integer moments.
    counts = torch.zeros(channels, 256, dtype=torch.int64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk]
        for c in range(channels):
            counts[c] += torch.bincount(block[:, c].reshape(-1).cpu(), minlength=256)
    levels = list(range(256))
    n = images.numel() // channels
    mean, std = [], []
    for row in counts.tolist():
        total = sum(v * k for v, k in zip(levels, row))
        squares = sum(v * v * k for v, k in zip(levels, row))
        # Exact integers; Python's int / int is correctly rounded.
        mean.append(total / (255 * n))
        std.append(math.sqrt((squares * n - total * total) / (255 * 255 * n * n)))
    return mean, std


def _streamed_statistics(dataset, batch_size: int, num_workers: int):
    if num_workers:
        items = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
    else:
        items = (dataset[i] for i in range(len(dataset)))
    count, mean, m2 = 0, None, None
    pending = []

    def merge(pixels):  # Chan et al.: combine (count, mean, M2) of two groups
        nonlocal count, mean, m2
        n_b = pixels.shape[1]
        mean_b = pixels.mean(dim=1)
        m2_b = (pixels - mean_b[:, None]).square().sum(dim=1)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            return
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta.square() * (count * n_b / total)
        count = total

    for item in items:
        image = item[0] if isinstance(item, tuple | list) else item
        image = torch.as_tensor(image).to(torch.float64)
        pending.append(image.reshape(image.shape[0], -1))
        if len(pending) == batch_size:
            merge(torch.cat(pending, dim=1))
            pending = []
    if pending:
        merge(torch.cat(pending, dim=1))
    if mean is None:
        raise UserError("cannot compute statistics of an empty data set")
    if not (torch.isfinite(mean).all() and torch.isfinite(m2).all()):
        raise UserError("the data set holds NaN or infinite pixel values")
    return mean.tolist(), (m2 / count).sqrt().tolist()
