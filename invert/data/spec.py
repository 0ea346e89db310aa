"""Data set specs, and the one entry point from a spec to a data set.

A spec names where the data come from: ``textures`` (the embedded default),
``cifar10:PATH``, ``cifar100:PATH`` or ``folder:PATH``. :meth:`DataSpec.parse` is the
only place a spec string is read; everything else asks the parsed spec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from invert.errors import UserError, UserTypeError
from invert.validation import check_positive_int

from .cifar import load_cifar
from .dataset import ImageDataset
from .folder import load_folder
from .textures import load_textures

__all__ = ["DataSpec", "load_dataset"]

SPEC_FORMS = "'textures', 'cifar10:PATH', 'cifar100:PATH' or 'folder:PATH'"
_KINDS = ("textures", "cifar10", "cifar100", "folder")
_SPLITS = {"train": "train", "test": "test", "val": "test"}


@dataclass(frozen=True)
class DataSpec:
    """A parsed data set spec.

    Attributes
    ----------
    kind : {"textures", "cifar10", "cifar100", "folder"}
    path : Path or None
        The local folder (``~`` expanded); None for ``textures``.

    Examples
    --------
    >>> spec = DataSpec.parse("cifar10:/data/cifar")
    >>> spec.kind, str(spec.path), spec.fixed_size
    ('cifar10', '/data/cifar', 32)
    >>> DataSpec.parse("textures").takes_options
    True
    """

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, spec: str | DataSpec) -> DataSpec:
        """Read a spec string (``DataSpec`` instances pass through); ``ValueError`` if malformed."""
        if isinstance(spec, DataSpec):
            return spec
        if not isinstance(spec, str):
            raise UserTypeError(
                f"spec must be a string such as {SPEC_FORMS}; got {type(spec).__name__}"
            )
        name, _, path = spec.partition(":")
        kind = name.strip().lower()
        if kind == "textures" and not path:
            return cls("textures")
        if kind not in _KINDS[1:]:
            raise UserError(f"unknown data set spec {spec!r}; valid forms: {SPEC_FORMS}")
        if not path:
            raise UserError(f"{kind} needs a local path: '{kind}:PATH' (nothing is downloaded)")
        return cls(kind, Path(os.path.expanduser(path)))

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    def resolved(self) -> DataSpec:
        """The same spec with an absolute path (for cache keys)."""
        return self if self.path is None else DataSpec(self.kind, self.path.resolve())

    @property
    def takes_options(self) -> bool:
        """Whether :func:`load_dataset` takes options (``train_per_class`` ...): textures only."""
        return self.kind == "textures"

    @property
    def fixed_size(self) -> int | None:
        """The image side the source fixes (CIFAR: 32), or None when it can be chosen."""
        return 32 if self.kind in ("cifar10", "cifar100") else None

    def image_size(self, wanted: int | None) -> int | None:
        """The ``image_size`` to load with: None where the source fixes it, else ``wanted``."""
        return None if self.fixed_size else wanted

    def options(self, options: Mapping | None) -> dict:
        """``options`` if this source takes any, else ``{}``."""
        return dict(options or {}) if self.takes_options else {}


def load_dataset(
    spec: str | DataSpec,
    *,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    **options,
) -> ImageDataset:
    """Load a classification data set from a spec string; never downloads.

    Parameters
    ----------
    spec : str or DataSpec
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
    parsed = DataSpec.parse(spec)
    if split not in _SPLITS:
        raise UserError(f"split must be 'train', 'test' or 'val' (= 'test'); got {split!r}")
    split = _SPLITS[split]
    check_positive_int(image_size, name="image_size", allow_none=True)
    if parsed.kind == "textures":
        return load_textures(split=split, image_size=image_size or 32, seed=seed, **options)
    if options:
        raise UserTypeError(f"{parsed.kind} takes no options; got {', '.join(sorted(options))}")
    text = spec if isinstance(spec, str) else str(spec)
    if parsed.kind == "folder":
        return load_folder(parsed.path, spec=text, split=split, image_size=image_size or 224)
    if image_size not in (None, 32):
        raise UserError(
            f"CIFAR images are 32 x 32; image_size must be None or 32, not {image_size}"
        )
    return load_cifar(parsed.path, fine=parsed.kind == "cifar100", spec=text, split=split)
