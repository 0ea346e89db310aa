"""CIFAR-10 and CIFAR-100 from a local folder, in either official format.

Binary records are read with numpy; Python pickles with a restricted unpickler that
rebuilds numpy arrays, lists and strings and refuses every other global before it is
looked up, so nothing named in a file runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from invert.errors import UserError

from .dataset import ImageDataset
from .images import first_line

__all__ = ["load_cifar"]

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
        raise UserError(
            f"{path}: refused to unpickle {refused} (a CIFAR pickle holds only numpy arrays, "
            "lists and strings; this file is not one and was not run)"
        ) from None
    except OSError:
        raise
    except Exception as exc:
        raise UserError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    # Files written by Python 2 (the official ones) have bytes keys; accept str too.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(value, path: Path, key: str, expected: int) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) != expected:
        raise UserError(f"{path}: {key!r} must list {expected} class names")
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
        raise UserError(f"{root} is a file; expected the extracted CIFAR folder{hint}")
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
        raise UserError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records "
            "(truncated or not a CIFAR binary file)"
        )
    raw = raw.reshape(-1, record)
    labels = raw[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: (coarse, fine); use fine
    if labels.max() >= classes:
        raise UserError(f"{path}: label {labels.max()} out of range for {classes} classes")
    # A record's pixels are the red, green, blue planes, each 32 rows of 32: C x H x W.
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _read_pickle_batch(path: Path, labels_key: str, classes: int):
    batch = _unpickle(path)
    for key in ("data", labels_key):
        if key not in batch:
            raise UserError(f"{path}: no {key!r} entry; not a CIFAR batch")
    data, labels = batch["data"], batch[labels_key]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _CIFAR_BYTES:
        shape = getattr(data, "shape", type(data).__name__)
        raise UserError(f"{path}: 'data' must be an N x {_CIFAR_BYTES} uint8 array, got {shape}")
    if data.dtype != np.uint8:
        raise UserError(f"{path}: 'data' must hold uint8 pixels, got {data.dtype}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"{path}: {labels_key!r} must be a list of integers") from None
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise UserError(f"{path}: labels out of range for {classes} classes")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: Path, *, fine: bool, spec: str, split: str) -> ImageDataset:
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
            raise UserError(
                f"{meta}: expected {layout['classes']} class names, found {len(classes)}"
            )
        parts = [_read_binary(f, layout["label_bytes"], layout["classes"]) for f in files]
    else:
        info = _unpickle(meta)
        if layout["names_key"] not in info:
            raise UserError(f"{meta}: no {layout['names_key']!r} entry")
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
