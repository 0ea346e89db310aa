"""The embedded default data set, ``textures``.

One class per natural photograph that scikit-image ships inside its wheel (these load
without network access; ``eagle``, ``kidney``, ``lily`` and ``skin`` need the optional
download and are not used):

    astronaut, brick, camera, chelsea, coffee, coins, grass, gravel,
    hubble_deep_field, immunohistochemistry, moon, retina, rocket

These are photographs of real scenes, textures, tissue, the sky and the eye: natural
image statistics, which is what the paper's analyses (filter pairing, invariance) are
about. Left out: the synthetic images (``checkerboard``, ``text``, ``logo``, ``horse``,
``binary_blobs``, ``colorwheel``, ``shepp_logan_phantom``), the scanned ``page``, ``cat``
(the same photograph as ``chelsea``), ``microaneurysms`` (102 x 102 px, too small for
disjoint train and test regions), ``clock`` (deliberately motion-blurred: three quarters
of its crops are blank wall) and ``cell`` (one small object on a flat background: two
thirds of its crops are featureless noise). Grey photographs are replicated to three
channels.

Construction (ours; deterministic given ``seed``):

1. Each source is split along its longer axis into a *train region* (the first
   ``1 - test_fraction``) and a *test band* (the rest: the right edge of landscape and
   square images, the bottom of portrait ones).
2. Each region is resized **separately** so that the source's shorter side becomes
   ``context * image_size`` pixels (default 6 x 32 = 192: a 32 x 32 crop then shows a
   recognisable part of the picture, a few bricks or a cat's eye, rather than a nearly
   flat patch of a 512-1411 px original). Resizing the regions separately means no test
   pixel leaks into a training crop even through the anti-aliasing filter.
3. ``train_per_class`` / ``test_per_class`` crops of ``image_size`` x ``image_size`` are
   taken at distinct random positions inside the region, with a random stream seeded by
   ``(seed, class index, split)``, so changing one count leaves the other split alone.

The crops' footprints are recorded in ``dataset.crop_boxes`` (source pixel coordinates),
and :func:`texture_sources` returns the full-resolution sources for analyses that need
larger natural images than a crop.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from invert.errors import UserError, UserTypeError
from invert.validation import check_positive, check_positive_int

from .dataset import ImageDataset

__all__ = ["TEXTURE_NAMES", "load_textures", "texture_sources"]

TEXTURE_NAMES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
)


@functools.lru_cache(maxsize=1)
def _source_images() -> dict[str, np.ndarray]:
    """The texture sources as read-only uint8 H x W x 3 arrays (decoded once per process)."""
    import skimage.data

    sources = {}
    for name in TEXTURE_NAMES:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        image.flags.writeable = False
        sources[name] = image
    return sources


def texture_sources() -> dict[str, np.ndarray]:
    """The full source photographs of the ``textures`` data set.

    Returns
    -------
    dict of str to ndarray
        Name -> float32 array H x W x 3 in [0, 1] (grey replicated to 3 channels), in
        class order (the same order as ``load_dataset("textures").classes``). Fresh
        copies: modifying them changes nothing else.

    Examples
    --------
    >>> sources = texture_sources()
    >>> sources["astronaut"].shape, sources["astronaut"].dtype
    ((512, 512, 3), dtype('float32'))
    """
    return {name: image.astype(np.float32) / 255 for name, image in _source_images().items()}


def _split_regions(shape, test_fraction):
    """Half-open boxes (top, left, bottom, right) of the train region and test band."""
    height, width = shape[:2]
    if width >= height:
        cut = round(width * (1 - test_fraction))
        return (0, 0, height, cut), (0, cut, height, width)
    cut = round(height * (1 - test_fraction))
    return (0, 0, cut, width), (cut, 0, height, width)


def _resize_uint8(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 H x W x 3 image with anti-aliasing when shrinking."""
    if image.shape[:2] == tuple(shape):
        return image
    from skimage.transform import resize

    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    out = resize(image.astype(np.float32) / 255, shape, order=1, anti_aliasing=shrink)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def load_textures(
    *,
    split,
    image_size,
    seed,
    train_per_class=500,
    test_per_class=100,
    context=6.0,
    test_fraction=0.25,
    **unknown,
):
    if unknown:
        raise UserTypeError(
            f"unknown textures option(s) {', '.join(sorted(unknown))}; valid: "
            "train_per_class, test_per_class, context, test_fraction"
        )
    check_positive_int(train_per_class, name="train_per_class")
    check_positive_int(test_per_class, name="test_per_class")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer; got {seed!r}")
    if not 0 < float(test_fraction) < 1:
        raise UserError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    if not math.isfinite(check_positive(context, name="context")):
        raise UserError(f"context must be a finite number; got {context!r}")
    count = train_per_class if split == "train" else test_per_class
    size = image_size
    images, boxes = [], []
    sources = _source_images()
    for class_index, (name, source) in enumerate(sources.items()):
        region = _split_regions(source.shape, float(test_fraction))[split == "test"]
        top, left, bottom, right = region
        scale = float(context) * size / min(source.shape[:2])
        part = source[top:bottom, left:right]
        out_shape = (max(1, round(part.shape[0] * scale)), max(1, round(part.shape[1] * scale)))
        rows, cols = out_shape[0] - size + 1, out_shape[1] - size + 1
        if rows < 1 or cols < 1 or rows * cols < count:
            raise UserError(
                f"textures: the {split} region of {name!r} resized to {out_shape[0]} x "
                f"{out_shape[1]} px has {max(rows, 0) * max(cols, 0)} distinct "
                f"{size} x {size} crops, fewer than the {count} asked for; lower the count "
                "or image_size, or raise context"
            )
        resized = _resize_uint8(part, out_shape)
        rng = np.random.default_rng([seed, class_index, split == "test"])
        ys, xs = np.divmod(rng.choice(rows * cols, size=count, replace=False), cols)
        windows = np.lib.stride_tricks.sliding_window_view(resized, (size, size), axis=(0, 1))
        images.append(windows[ys, xs])  # (count, 3, size, size): already channel-first
        # Footprint in source pixels: resized pixel i covers [i * step, (i + 1) * step).
        step_y, step_x = part.shape[0] / out_shape[0], part.shape[1] / out_shape[1]
        box = np.stack(
            [
                top + np.floor(ys * step_y),
                left + np.floor(xs * step_x),
                top + np.minimum(np.ceil((ys + size) * step_y), part.shape[0]),
                left + np.minimum(np.ceil((xs + size) * step_x), part.shape[1]),
            ],
            axis=1,
        )
        boxes.append(box.astype(np.int64))
    labels = np.repeat(np.arange(len(sources)), count)
    dataset = ImageDataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(labels),
        list(sources),
        spec="textures",
        split=split,
    )
    dataset.crop_boxes = torch.from_numpy(np.concatenate(boxes))
    return dataset
