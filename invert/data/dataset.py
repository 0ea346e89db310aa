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

This module holds the data set object; the loaders of each source live beside it
(:mod:`.textures`, :mod:`.cifar`, :mod:`.folder`) and :func:`~invert.data.load_dataset`
(:mod:`.spec`) picks one from a :class:`~invert.data.DataSpec`.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from invert.errors import UserError

__all__ = ["ImageDataset"]


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
            raise UserError(
                f"images must be a uint8 tensor N x C x H x W; got {images.dtype} "
                f"with shape {tuple(images.shape)}"
            )
        self._images = images
        self._init_common(labels, classes, spec, split)

    def _init_common(self, labels, classes, spec, split):
        classes = [str(c) for c in classes]
        if labels.dim() != 1 or (self._images is not None and len(labels) != len(self._images)):
            raise UserError("labels must be a 1-D sequence with one label per image")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise UserError(f"labels must lie in [0, {len(classes)}) (one per class name)")
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
