"""ImageNet-style folders: one subfolder of images per class, read lazily."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from invert.errors import UserError

from .dataset import ImageDataset
from .images import decode_image, square_crop

__all__ = ["load_folder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class FolderDataset(ImageDataset):
    """Images read from files on each access (ImageNet-style folders)."""

    def __init__(self, files, labels, classes, *, image_size, spec, split):
        self._images = None
        self.files = [str(f) for f in files]
        self.image_size = image_size
        self._init_common(torch.as_tensor(labels, dtype=torch.int64), classes, spec, split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = square_crop(decode_image(self.files[index]), self.image_size)
        return torch.from_numpy(image.astype("float32")), int(self.labels[index])


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        ]
    return found


def load_folder(root: Path, *, spec: str, split: str, image_size: int) -> ImageDataset:
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
            raise UserError(f"{root} has train/ but no val/ or test/ folder for split='test'")
    elif held_out:
        raise UserError(f"{root} has {held_out[0].name}/ but no train/ folder beside it")
    elif split != "train":
        raise UserError(
            f"{root} has no train/ and val/ subfolders, so it holds a single (training) split; "
            "pass split='train' or arrange PATH/train/CLASS and PATH/val/CLASS"
        )
    else:
        train_root = split_root = root
    # Class names and indices always come from the training folder, so labels agree
    # between the splits even when a held-out folder lacks some classes.
    classes = [p.name for p in _class_folders(train_root)]
    if not classes:
        raise UserError(f"{train_root} has no class subfolders (expected one per class)")
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for folder in _class_folders(split_root):
        if folder.name not in index:
            raise UserError(f"{folder}: class {folder.name!r} is not among the training classes")
        found = _image_files(folder)
        if not found:
            raise UserError(
                f"{folder} holds no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
            )
        files += found
        labels += [index[folder.name]] * len(found)
    if not files:
        raise UserError(f"{split_root} has no class subfolders with images")
    return FolderDataset(files, labels, classes, image_size=image_size, spec=spec, split=split)
