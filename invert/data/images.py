"""Single images: reading a file or one of scikit-image's bundled images, and fitting it
to a model's square input (colour conversion, resize of the shorter side, centre crop).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from invert.errors import UserError

__all__ = ["decode_image", "prepare_image", "read_image", "skimage_names", "square_crop"]

#: Names in ``skimage.data`` that are not images (or need a download).
_NOT_IMAGES = {"download_all", "file_hash", "data_dir", "lbp_frontal_face", "lfw_subset",
               "stereo_motorcycle", "binary_blobs"}  # fmt: skip
MIN_IMAGE_SIDE = 8
MAX_UPSCALE = 4


def first_line(error: BaseException) -> str:
    """The first line of an exception's message ('' when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else ""


def skimage_names() -> list[str]:
    """The images scikit-image ships in its wheel (``skimage:NAME`` sources)."""
    import skimage.data

    return sorted(n for n in skimage.data.__all__
                  if callable(getattr(skimage.data, n, None)) and n not in _NOT_IMAGES)  # fmt: skip


def read_image(source: str) -> np.ndarray:
    """The image at a path, or ``skimage:NAME``, as a numpy array (as stored).

    Examples
    --------
    >>> read_image("skimage:camera").shape
    (512, 512)
    """
    if source.startswith("skimage:"):
        import skimage.data

        name = source.partition(":")[2]
        if name not in skimage_names():
            raise UserError(f"unknown image {source!r}; scikit-image ships: "
                             f"{', '.join(skimage_names())}")  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(getattr(skimage.data, name)())
        except Exception as error:  # e.g. an image that needs a download
            raise UserError(f"cannot load {source}: {first_line(error)}") from None
    import skimage.io

    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {source}")
    # read the bytes ourselves: the image readers leave files open when they fail; an
    # OSError here (permissions) is the caller's to report, one from the decoder is ours
    with open(path, "rb") as handle:
        data = io.BytesIO(handle.read())
    try:
        with warnings.catch_warnings():  # imageio warns while probing plugins on bad files
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.asarray(skimage.io.imread(data))
    except Exception as error:
        raise UserError(f"cannot read {source} as an image ({type(error).__name__})") from None


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """``H x W x C`` floats in [0, 1] -> ``C x size x size``: shorter side resized, centre crop.

    Examples
    --------
    >>> square_crop(np.ones((40, 80, 3)), 16).shape
    (3, 16, 16)
    """
    from skimage.transform import resize

    height, width = image.shape[:2]
    scale = size / min(height, width)
    shape = (max(size, round(height * scale)), max(size, round(width * scale)))
    if shape != (height, width):
        image = resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
        image = np.clip(image, 0, 1)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size].transpose(2, 0, 1))


def decode_image(path: str) -> np.ndarray:
    """An image file as RGB ``H x W x 3`` float32 in [0, 1] (alpha dropped, grey replicated)."""
    import skimage.io

    try:
        with warnings.catch_warnings():  # imageio warns while probing plugins on bad files
            warnings.simplefilter("ignore", DeprecationWarning)
            image = np.asarray(skimage.io.imread(path))
    except Exception as exc:  # decoders raise many kinds of errors
        raise UserError(
            f"cannot read image {path}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if image.ndim == 3 and image.shape[2] in (2, 4):  # grey + alpha, RGBA: drop the alpha
        image = image[:, :, :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(
            f"{path}: unsupported image layout {image.shape} (expected grey, RGB or RGBA)"
        )
    if image.dtype == np.bool_ or np.issubdtype(image.dtype, np.unsignedinteger):
        peak = 1 if image.dtype == np.bool_ else np.iinfo(image.dtype).max
        image = image.astype(np.float32) / peak
    elif np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise UserError(f"{path}: floating-point pixels must be finite and in [0, 1]")
    else:
        raise UserError(f"{path}: unsupported pixel type {image.dtype}")
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise UserError(f"{path}: image is {height} x {width} px, smaller than {MIN_IMAGE_SIDE} px")
    return image


def prepare_image(image: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """``(channels, size, size)`` float64 in [0, 1]: colour-converted, resized, centre-cropped.

    RGBA is composited on white, grey replicated (or RGB turned grey for a 1-channel
    model); an image that needs more than ``MAX_UPSCALE`` x upscaling is refused.

    Examples
    --------
    >>> prepare_image(np.zeros((64, 48), dtype=np.uint8), 32).shape
    (3, 32, 32)
    """
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb
    from skimage.util import img_as_float

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = gray2rgb(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"expected a grey, RGB or RGBA image; got an array of shape {image.shape}")
    image = img_as_float(image)
    if image.shape[-1] == 4:
        image = rgba2rgb(image)
    if channels == 1:
        image = rgb2gray(image)[..., None]
    elif channels != 3:
        raise UserError(f"the model reads {channels}-channel images; only 1 or 3 are supported")
    h, w = image.shape[:2]
    if min(h, w) * MAX_UPSCALE < size:
        raise UserError(
            f"the image is {w}x{h} pixels, too small for a {size}x{size} input: its shorter "
            f"side must be at least {math.ceil(size / MAX_UPSCALE)} pixels"
        )
    return square_crop(image, size).astype(np.float64)
