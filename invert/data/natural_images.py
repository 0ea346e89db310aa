"""Natural images for the analyses: the one default source, and samples of a data set.

:func:`natural_images` crops the embedded photographs (the sources of ``textures``) at
the scale the ``textures`` data set shows them; :func:`dataset_images` samples the
images of any data set spec. Analyses that need natural inputs (invariance scores,
max-pooling metrics) take these when the caller gives no images.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from invert.errors import UserError

from .spec import DataSpec, load_dataset
from .textures import TEXTURE_NAMES, texture_sources

__all__ = ["dataset_images", "natural_images"]


@functools.lru_cache(maxsize=4)
def _shrunk_sources(shorter_side: int | None, h: int, w: int) -> tuple[np.ndarray, ...]:
    """The embedded photographs shrunk for crops of h x w (cached: resizing is slow)."""
    from skimage.transform import resize

    sources = []
    for image in texture_sources().values():
        factor = 1.0
        if shorter_side is not None:
            factor = max(
                shorter_side / min(image.shape[:2]), h / image.shape[0], w / image.shape[1]
            )
        if factor < 1.0:
            shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
            image = resize(image, shape, order=1, anti_aliasing=True).astype(np.float32)
        if image.shape[0] >= h and image.shape[1] >= w:
            image.flags.writeable = False
            sources.append(image)
    return tuple(sources)


def natural_images(
    n: int = 1000,
    *,
    size: int | tuple[int, int] = 32,
    shorter_side: int | None = 192,
    channels: int = 3,
    seed: int = 0,
) -> torch.Tensor:
    """Random crops of the embedded natural photographs (the default image source).

    The full photographs of :func:`~invert.data.texture_sources` are shrunk (never
    enlarged, and never below the crop size) so that their shorter side is
    ``shorter_side`` pixels, as the ``textures`` data set does for its 32 x 32 crops
    (6 x 32 = 192), so that a crop shows a recognisable part of a scene rather than
    a nearly flat patch. Crops are then taken at uniformly random positions,
    cycling through the photographs.

    Parameters
    ----------
    n : int, optional
        Number of crops.
    size : int or (int, int), optional
        Crop size: the model input plus the margin the transformations need.
    shorter_side : int, optional
        Shorter side of the shrunk photographs; ``None`` keeps full resolution.
    channels : {3, 1}, optional
        Colour crops, or their grey mean for single-channel models.
    seed : int, optional
        Seed of the crop positions.

    Returns
    -------
    torch.Tensor, float32, shape (n, channels, h, w), values in [0, 1]

    Examples
    --------
    >>> natural_images(4, size=40).shape
    torch.Size([4, 3, 40, 40])
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if n < 1 or h < 1 or w < 1:
        raise UserError(f"need n >= 1 and a positive size; got n={n}, size={size}")
    sources = _shrunk_sources(shorter_side, int(h), int(w))
    if not sources:
        raise UserError(f"no embedded photograph is as large as {h} x {w}; use your own images")
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for i in range(n):
        image = sources[i % len(sources)]
        top = rng.integers(0, image.shape[0] - h + 1)
        left = rng.integers(0, image.shape[1] - w + 1)
        out[i] = image[top : top + h, left : left + w].transpose(2, 0, 1)
    images = torch.from_numpy(np.clip(out, 0.0, 1.0))
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    if channels != 3:
        raise UserError(
            f"the model takes {channels} input channels; the embedded photographs have 3 "
            "(or 1 as grey): pass images"
        )
    return images


def dataset_images(
    spec: str | DataSpec,
    n: int,
    *,
    split: str = "test",
    size: int = 32,
    margin: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """Up to ``n`` images of a data set, ``size + 2 * margin`` pixels wide where it allows.

    textures: crops with room for the margin at the scale the data set shows (the
    sources resized as for ``size`` crops); folders: resized to ``size + 2 * margin``;
    CIFAR: its 32 x 32 images as they are. The images are a seeded random subset in
    data set order.

    Examples
    --------
    >>> dataset_images("textures", 5, size=16, margin=2).shape
    torch.Size([5, 3, 20, 20])
    """
    spec = DataSpec.parse(spec)
    big = size + 2 * margin
    if spec.kind == "textures":
        count = "train_per_class" if split == "train" else "test_per_class"
        options = {count: math.ceil(n / len(TEXTURE_NAMES)), "context": 6.0 * size / big}
        dataset = load_dataset(spec, split=split, image_size=big, **options)
    else:
        dataset = load_dataset(spec, split=split, image_size=spec.image_size(big))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[: min(n, len(dataset))]
    chosen = chosen.sort().values
    stored = getattr(dataset, "images", None)
    if isinstance(stored, torch.Tensor):
        return stored[chosen].float().div_(255)
    return torch.stack([dataset[int(i)][0] for i in chosen])
