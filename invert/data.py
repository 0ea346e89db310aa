"""Image classification data, read from local files only: nothing is ever downloaded.

One entry point, :func:`load_dataset`, turns a *spec* string into an
:class:`ImageDataset` whose items are ``(float32 tensor C x H x W in [0, 1], int label)``:

``textures``
    The embedded default, built in memory from photographs bundled in the
    scikit-image wheel (see below). Works on any machine, offline.
``cifar10:PATH``, ``cifar100:PATH``
    CIFAR-10 / CIFAR-100 in either official format (binary records or Python
    pickles), PATH being the extracted folder or its parent. Pickles are read with a
    restricted unpickler that rebuilds numpy arrays and nothing else.
``folder:PATH``
    ImageNet-style folders, one subfolder per class, read lazily image by image.

The embedded ``textures`` data set
----------------------------------
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
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ImageDataset",
    "TEXTURE_NAMES",
    "augment",
    "channel_statistics",
    "load_dataset",
    "texture_sources",
]

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

_SPEC_FORMS = "'textures', 'cifar10:PATH', 'cifar100:PATH' or 'folder:PATH'"
_SPLITS = {"train": "train", "test": "test", "val": "test"}
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_MIN_IMAGE_SIDE = 8


# --------------------------------------------------------------------------------------
# The data set object
# --------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """A labelled image data set; items are ``(image, label)``.

    ``image`` is a float32 tensor ``C x H x W`` with values in [0, 1], ``label`` an int.

    Parameters
    ----------
    images : uint8 tensor or array, shape (N, C, H, W)
        The images, kept as uint8 (a quarter of the memory of float32).
    labels : int tensor or array, shape (N,)
        Class indices into ``classes``.
    classes : sequence of str
        The class names.
    spec : str, optional
        The spec the data came from (for reports and checkpoints).
    split : {"train", "test"}, optional
        Which split this is.

    Attributes
    ----------
    images : torch.Tensor
        uint8, N x C x H x W (in-memory data sets only; an AttributeError on lazily
        loaded folder data sets, so ``getattr(ds, "images", None)`` tells them apart).
    labels : torch.Tensor
        int64, N.
    classes : list of str
    spec, split : str
    crop_boxes : torch.Tensor or None
        For ``textures``: int64, N x 4, ``(top, left, bottom, right)`` of the source
        pixels each crop depicts (half-open box in :func:`texture_sources` coordinates).
    files : list of str
        For folder data sets: the image file of each item.

    Examples
    --------
    >>> import torch
    >>> ds = ImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
    >>> image, label = ds[1]
    >>> image.shape, image.dtype, label
    (torch.Size([3, 8, 8]), torch.float32, 1)
    """

    crop_boxes: torch.Tensor | None = None

    def __init__(self, images, labels, classes, *, spec: str = "", split: str = "train"):
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor N x C x H x W; got {images.dtype} "
                f"with shape {tuple(images.shape)}"
            )
        self._images = images
        self._init_common(labels, classes, spec, split)

    def _init_common(self, labels, classes, spec, split):
        classes = [str(c) for c in classes]
        if labels.dim() != 1 or (self._images is not None and len(labels) != len(self._images)):
            raise ValueError("labels must be a 1-D sequence with one label per image")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}) (one per class name)")
        self.labels = labels
        self.classes = classes
        self.spec = spec
        self.split = split

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            raise AttributeError(
                f"{self.spec!r} is read lazily from disk and has no .images tensor; "
                "index the data set or use a DataLoader"
            )
        return self._images

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._images[index].float().div_(255), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spec={self.spec!r}, split={self.split!r}, "
            f"n={len(self)}, classes={len(self.classes)})"
        )


class _FolderDataset(ImageDataset):
    """Images read from files on each access (ImageNet-style folders)."""

    def __init__(self, files, labels, classes, *, image_size, spec, split):
        self._images = None
        self.files = [str(f) for f in files]
        self.image_size = image_size
        self._init_common(torch.as_tensor(labels, dtype=torch.int64), classes, spec, split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _read_image(self.files[index], self.image_size)
        return torch.from_numpy(image), int(self.labels[index])


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def load_dataset(
    spec: str, *, split: str = "train", image_size: int | None = None, seed: int = 0, **options
) -> ImageDataset:
    """Load a classification data set from a spec string; never downloads.

    Parameters
    ----------
    spec : str
        ``"textures"`` (embedded default), ``"cifar10:PATH"``, ``"cifar100:PATH"`` or
        ``"folder:PATH"``. For CIFAR, PATH is the extracted folder
        (``cifar-10-batches-bin``, ``cifar-10-batches-py``, ``cifar-100-binary``,
        ``cifar-100-python``) or the folder holding it; when both formats are there the
        binary one is read. For folders, PATH holds one subfolder of images per class,
        or ``train/`` and ``val/`` (or ``test/``) subfolders that each do.
    split : {"train", "test", "val"}
        ``"val"`` is an alias of ``"test"``: the held-out split (CIFAR's test batch,
        the texture test bands, a folder's ``val/`` or ``test/``).
    image_size : int, optional
        Side of the square images. textures: crop size (default 32). CIFAR: must be
        None or 32. folders: images are resized so the shorter side is ``image_size``
        and centre-cropped to a square (default 224, the ImageNet input size).
    seed : int
        Seeds the random crop positions of ``textures`` (ignored otherwise).
    **options
        textures only: ``train_per_class`` (500), ``test_per_class`` (100),
        ``context`` (6.0: the shorter side of each source is resized to
        ``context * image_size`` pixels before cropping), ``test_fraction`` (0.25: the
        share of each source's longer axis reserved for test crops). The crops take
        ``N * 3 * image_size**2`` bytes (6500 train crops: 20 MB at 32 px, 1 GB at
        224 px: lower the counts for large sizes).

    Returns
    -------
    ImageDataset

    Examples
    --------
    >>> ds = load_dataset("textures", train_per_class=4, test_per_class=2)
    >>> len(ds), ds.classes[:3], ds.images.shape[1:]
    (52, ['astronaut', 'brick', 'camera'], torch.Size([3, 32, 32]))
    >>> image, label = ds[0]
    >>> float(image.min()) >= 0.0 and float(image.max()) <= 1.0, label
    (True, 0)
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string such as {_SPEC_FORMS}; got {type(spec).__name__}")
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train', 'test' or 'val' (= 'test'); got {split!r}")
    split = _SPLITS[split]
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer or None; got {image_size!r}")
    name, _, path = spec.partition(":")
    name = name.strip().lower()
    if name == "textures" and not path:
        return _load_textures(split=split, image_size=image_size or 32, seed=seed, **options)
    if name not in ("cifar10", "cifar100", "folder"):
        raise ValueError(f"unknown data set spec {spec!r}; valid forms: {_SPEC_FORMS}")
    if not path:
        raise ValueError(f"{name} needs a local path: '{name}:PATH' (nothing is downloaded)")
    if options:
        raise TypeError(f"{name} takes no options; got {', '.join(sorted(options))}")
    path = Path(os.path.expanduser(path))
    if name == "folder":
        return _load_folder(path, spec=spec, split=split, image_size=image_size or 224)
    if image_size not in (None, 32):
        raise ValueError(
            f"CIFAR images are 32 x 32; image_size must be None or 32, not {image_size}"
        )
    return _load_cifar(path, fine=name == "cifar100", spec=spec, split=split)


# --------------------------------------------------------------------------------------
# Embedded textures
# --------------------------------------------------------------------------------------


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


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _load_textures(
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
        raise TypeError(
            f"unknown textures option(s) {', '.join(sorted(unknown))}; valid: "
            "train_per_class, test_per_class, context, test_fraction"
        )
    _check_count("train_per_class", train_per_class, 1)
    _check_count("test_per_class", test_per_class, 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    if not math.isfinite(float(context)) or float(context) <= 0:
        raise ValueError(f"context must be a positive number; got {context!r}")
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
            raise ValueError(
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


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------

_CIFAR_BYTES = 3 * 32 * 32


def _numpy_global(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


def _array_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR pickle may name: how numpy rebuilds an array."""
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        _reconstruct = _numpy_global("numpy.core.multiarray", "_reconstruct")
        _frombuffer = _numpy_global("numpy.core.numeric", "_frombuffer")
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        # Pickle protocol 5 (Python >= 3.14's default) stores arrays through _frombuffer.
        allowed[(f"{package}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class _RefusedGlobal(Exception):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, dicts, lists, ints and strings only.

    Every other global (functions, classes) is refused before it is looked up, so
    nothing named in the file runs.
    """

    _allowed = None

    def find_class(self, module, name):
        if _ArrayUnpickler._allowed is None:
            _ArrayUnpickler._allowed = _array_globals()
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise _RefusedGlobal("a persistent id")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise ValueError(
            f"{path}: refused to unpickle {refused} (a CIFAR pickle holds only numpy arrays, "
            "lists and strings; this file is not one and was not run)"
        ) from None
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    # Files written by Python 2 (the official ones) have bytes keys; accept str too.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _names(value, path: Path, key: str, expected: int) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) != expected:
        raise ValueError(f"{path}: {key!r} must list {expected} class names")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]


_CIFAR_LAYOUTS = {
    # fine -> (binary folder, python folder, binary train files, python train files,
    #          binary meta, python meta key, python label key, classes, label bytes)
    False: dict(
        binary="cifar-10-batches-bin",
        python="cifar-10-batches-py",
        train_bin=[f"data_batch_{i}.bin" for i in range(1, 6)],
        test_bin=["test_batch.bin"],
        train_py=[f"data_batch_{i}" for i in range(1, 6)],
        test_py=["test_batch"],
        meta_bin="batches.meta.txt",
        meta_py="batches.meta",
        names_key="label_names",
        labels_key="labels",
        classes=10,
        label_bytes=1,
    ),
    True: dict(
        binary="cifar-100-binary",
        python="cifar-100-python",
        train_bin=["train.bin"],
        test_bin=["test.bin"],
        train_py=["train"],
        test_py=["test"],
        meta_bin="fine_label_names.txt",
        meta_py="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
        classes=100,
        label_bytes=2,
    ),
}


def _find_cifar(root: Path, layout: dict) -> tuple[Path, str]:
    """The folder holding the data and its format ("binary" or "python")."""
    if root.is_file():
        hint = " (extract the archive first)" if root.name.endswith((".tar.gz", ".tgz")) else ""
        raise ValueError(f"{root} is a file; expected the extracted CIFAR folder{hint}")
    if not root.is_dir():
        raise FileNotFoundError(
            f"no folder {root}: expected {layout['binary']}/ or {layout['python']}/ "
            "(extracted CIFAR archive) or the folder holding it"
        )
    for folder in (root, root / layout["binary"], root / layout["python"]):
        for fmt in ("binary", "python"):
            key = "bin" if fmt == "binary" else "py"
            markers = layout[f"train_{key}"] + layout[f"test_{key}"]
            if any((folder / m).is_file() for m in markers):
                return folder, fmt
    raise FileNotFoundError(
        f"no CIFAR data in {root}: expected {layout['binary']}/ "
        f"({', '.join(layout['train_bin'] + layout['test_bin'])}, {layout['meta_bin']}) or "
        f"{layout['python']}/ ({', '.join(layout['train_py'] + layout['test_py'])}, "
        f"{layout['meta_py']}), or PATH pointing at one of them"
    )


def _read_binary(path: Path, label_bytes: int, classes: int):
    record = label_bytes + _CIFAR_BYTES
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records "
            "(truncated or not a CIFAR binary file)"
        )
    raw = raw.reshape(-1, record)
    labels = raw[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: (coarse, fine); use fine
    if labels.max() >= classes:
        raise ValueError(f"{path}: label {labels.max()} out of range for {classes} classes")
    # A record's pixels are the red, green, blue planes, each 32 rows of 32: C x H x W.
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _read_pickle_batch(path: Path, labels_key: str, classes: int):
    batch = _unpickle(path)
    for key in ("data", labels_key):
        if key not in batch:
            raise ValueError(f"{path}: no {key!r} entry; not a CIFAR batch")
    data, labels = batch["data"], batch[labels_key]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _CIFAR_BYTES:
        shape = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"{path}: 'data' must be an N x {_CIFAR_BYTES} uint8 array, got {shape}")
    if data.dtype != np.uint8:
        raise ValueError(f"{path}: 'data' must hold uint8 pixels, got {data.dtype}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {labels_key!r} must be a list of integers") from None
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{path}: labels out of range for {classes} classes")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(root: Path, *, fine: bool, spec: str, split: str) -> ImageDataset:
    layout = _CIFAR_LAYOUTS[fine]
    folder, fmt = _find_cifar(root, layout)
    key = "bin" if fmt == "binary" else "py"
    files = [folder / f for f in layout[f"{split}_{key}"]]
    meta = folder / layout[f"meta_{key}"]
    for f in [*files, meta]:
        if not f.is_file():
            raise FileNotFoundError(f"missing {f.name} in {folder} (expected an extracted CIFAR)")
    if fmt == "binary":
        text = meta.read_text(encoding="utf-8", errors="replace")
        classes = [line.strip() for line in text.splitlines() if line.strip()]
        if len(classes) != layout["classes"]:
            raise ValueError(
                f"{meta}: expected {layout['classes']} class names, found {len(classes)}"
            )
        parts = [_read_binary(f, layout["label_bytes"], layout["classes"]) for f in files]
    else:
        info = _unpickle(meta)
        if layout["names_key"] not in info:
            raise ValueError(f"{meta}: no {layout['names_key']!r} entry")
        classes = _names(info[layout["names_key"]], meta, layout["names_key"], layout["classes"])
        parts = [_read_pickle_batch(f, layout["labels_key"], layout["classes"]) for f in files]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    return ImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels),
        classes,
        spec=spec,
        split=split,
    )


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if f.lower().endswith(_IMAGE_EXTENSIONS) and not f.startswith(".")
        ]
    return found


def _load_folder(root: Path, *, spec: str, split: str, image_size: int) -> ImageDataset:
    if not root.is_dir():
        raise FileNotFoundError(
            f"no folder {root}: expected one subfolder of images per class, or train/ and "
            "val/ subfolders that each hold one per class"
        )
    held_out = [root / n for n in ("val", "test") if (root / n).is_dir()]
    if (root / "train").is_dir():
        train_root = root / "train"
        if split == "train":
            split_root = train_root
        elif held_out:
            split_root = held_out[0]
        else:
            raise ValueError(f"{root} has train/ but no val/ or test/ folder for split='test'")
    elif held_out:
        raise ValueError(f"{root} has {held_out[0].name}/ but no train/ folder beside it")
    elif split != "train":
        raise ValueError(
            f"{root} has no train/ and val/ subfolders, so it holds a single (training) split; "
            "pass split='train' or arrange PATH/train/CLASS and PATH/val/CLASS"
        )
    else:
        train_root = split_root = root
    # Class names and indices always come from the training folder, so labels agree
    # between the splits even when a held-out folder lacks some classes.
    classes = [p.name for p in _class_folders(train_root)]
    if not classes:
        raise ValueError(f"{train_root} has no class subfolders (expected one per class)")
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for folder in _class_folders(split_root):
        if folder.name not in index:
            raise ValueError(f"{folder}: class {folder.name!r} is not among the training classes")
        found = _image_files(folder)
        if not found:
            raise ValueError(
                f"{folder} holds no images (expected files ending in "
                f"{', '.join(_IMAGE_EXTENSIONS)})"
            )
        files += found
        labels += [index[folder.name]] * len(found)
    if not files:
        raise ValueError(f"{split_root} has no class subfolders with images")
    return _FolderDataset(files, labels, classes, image_size=image_size, spec=spec, split=split)


def _read_image(path: str, size: int) -> np.ndarray:
    """Decode to RGB in [0, 1], resize (shorter side = size), centre-crop: 3 x size x size."""
    import skimage.io
    from skimage.transform import resize

    try:
        with warnings.catch_warnings():  # imageio warns while probing plugins on bad files
            warnings.simplefilter("ignore", DeprecationWarning)
            image = np.asarray(skimage.io.imread(path))
    except Exception as exc:  # decoders raise many kinds of errors
        raise ValueError(
            f"cannot read image {path}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if image.ndim == 3 and image.shape[2] in (2, 4):  # grey + alpha, RGBA: drop the alpha
        image = image[:, :, :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{path}: unsupported image layout {image.shape} (expected grey, RGB or RGBA)"
        )
    if image.dtype == np.bool_ or np.issubdtype(image.dtype, np.unsignedinteger):
        peak = 1 if image.dtype == np.bool_ else np.iinfo(image.dtype).max
        image = image.astype(np.float32) / peak
    elif np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"{path}: floating-point pixels must be finite and in [0, 1]")
    else:
        raise ValueError(f"{path}: unsupported pixel type {image.dtype}")
    height, width = image.shape[:2]
    if min(height, width) < _MIN_IMAGE_SIDE:
        raise ValueError(
            f"{path}: image is {height} x {width} px, smaller than {_MIN_IMAGE_SIDE} px"
        )
    scale = size / min(height, width)
    shape = (max(size, round(height * scale)), max(size, round(width * scale)))
    if shape != (height, width):
        image = resize(image, shape, order=1, anti_aliasing=scale < 1)
        image = np.clip(image, 0, 1, out=image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    crop = image[top : top + size, left : left + size]
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32)


# --------------------------------------------------------------------------------------
# Statistics and augmentation
# --------------------------------------------------------------------------------------


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
        raise ValueError("cannot compute statistics of an empty data set")
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
        raise ValueError("cannot compute statistics of an empty data set")
    if not (torch.isfinite(mean).all() and torch.isfinite(m2).all()):
        raise ValueError("the data set holds NaN or infinite pixel values")
    return mean.tolist(), (m2 / count).sqrt().tolist()


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
        raise TypeError("augment expects a tensor of shape N x C x H x W")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative integer; got {max_shift!r}")
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
