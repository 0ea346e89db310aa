"""Checkpoints: weights plus JSON metadata in one safetensors file, and training state.

A **checkpoint** is a single ``.safetensors`` file: the model's ``state_dict`` and,
in the header's metadata, a JSON document with everything needed to rebuild and
use the model -- the registry name and :func:`~invert.nn.zoo.create_model` arguments
(``arch``, ``config``), the input normalization, the toolkit version, and what
the caller adds (data set spec, class names, training history, recipe). Reading
one never runs code from the file: safetensors holds raw tensors only.

A **training state** (optimizer, schedule, random-number states, epoch, history)
lives in a separate file written with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, whose unpickler accepts tensors and plain
containers only; anything else in the file is refused before it can run.

Every write goes to a temporary file in the destination folder first and is then
renamed over the destination (:func:`os.replace`), so a reader -- or a run killed
halfway through a write -- never sees a partial file.

Plain PyTorch state dicts (``.pt``/``.pth`` files, or ``.safetensors`` files
without our metadata) load into a zoo model with :func:`load_state_dict_into`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.files import atomic_write_bytes

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "PlainWeightsError",
    "read_metadata",
    "read_state_dict",
    "load_state_dict_into",
    "check_precision",
    "save_training_state",
    "load_training_state",
]

FORMAT = "crelu-checkpoint"
FORMAT_VERSION = 1
# metadata keys filled in by save_checkpoint itself
_RESERVED = ("format", "format_version", "arch", "config", "normalization", "toolkit_version")
_MAX_LISTED_KEYS = 5


def _existing_file(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise UserTypeError(f"expected a file path; got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    return path


def _sniff(path: Path) -> str:
    """``"safetensors"``, ``"torch"`` (zip or legacy pickle) or ``"unknown"``, from content."""
    with open(path, "rb") as file:
        head = file.read(9)
        size = os.fstat(file.fileno()).st_size
    # safetensors first: its 8-byte little-endian header length may start with 0x80
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "torch"  # a zip archive, or a legacy pickle (protocol 2-5)
    return "unknown"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    data = path.read_bytes()
    corrupt = f"{path} is corrupt or truncated (not a valid safetensors file)"
    if len(data) < 8:
        raise UserError(corrupt)
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise UserError(corrupt)
    try:
        header = json.loads(data[8 : 8 + size])
        tensors = _safetensors_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise UserError(corrupt) from error
    if not isinstance(header, dict):
        raise UserError(corrupt)
    metadata = header.get("__metadata__") or {}
    return tensors, metadata


def _torch_load(path: Path):
    """``torch.load(weights_only=True)`` with one-line errors; nothing in the file runs."""
    try:
        with warnings.catch_warnings():  # pickle-protocol chatter from the unpickler
            warnings.simplefilter("ignore", UserWarning)
            # a file object: torch.load would route a *.safetensors name elsewhere
            with open(path, "rb") as file:
                return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        pickled = _pickled_module(path)
        if pickled:
            raise UserError(
                f"{path} holds a pickled model object ({pickled}), not a state dict; save "
                f"model.state_dict() instead: torch.save(model.state_dict(), PATH)"
            ) from None
        detail = next(
            (line.strip() for line in str(error).splitlines() if "unsupported" in line.lower()),
            "",
        )
        raise UserError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain "
            f"data, which could run code ({detail or 'rejected by the weights-only unpickler'})"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, AttributeError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        raise UserError(f"{path} is corrupt or truncated (not a readable PyTorch file)") from error


# globals every pickled state dict holds too: they never name the model's class
_PLAIN_GLOBALS = ("torch._utils.", "torch.storage.", "collections.", "builtins.", "_codecs.")


def _pickles(path: Path) -> list[bytes]:
    """The pickle streams of a ``torch.save`` file: a zip's ``data.pkl``, or the whole
    legacy file (several pickles back to back)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")]
    return [path.read_bytes()]


def _pickled_module(path: Path) -> str | None:
    """The class of an ``nn.Module`` pickled whole in a ``torch.save`` file, or None.

    Reads the pickle's opcodes without running them: a module's ``__dict__`` holds the
    keys ``_modules`` and ``_parameters``; the first global that no state dict needs is
    the module's class (``torch.save({"model": model})`` included).
    """
    strings, classes = set(), []
    try:
        for data in _pickles(path):
            stream = io.BytesIO(data)
            while stream.tell() < len(data):  # a legacy file: magic, protocol, info, object
                for opcode, arg, _ in pickletools.genops(stream):
                    if opcode.name == "GLOBAL":
                        classes.append(str(arg).replace(" ", "."))
                    if isinstance(arg, str):
                        strings.add(arg)
                if strings >= {"_modules", "_parameters"}:
                    break
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        pass  # the legacy tensor data after the pickles, or a damaged file: seen enough
    if not strings >= {"_modules", "_parameters"}:
        return None
    named = [c for c in classes if not c.startswith(_PLAIN_GLOBALS) and "Storage" not in c]
    return named[0] if named else "an nn.Module"


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def _list_keys(keys) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    if len(keys) > _MAX_LISTED_KEYS:
        shown += f" and {len(keys) - _MAX_LISTED_KEYS} more"
    return shown


def _check_finite(tensors: Mapping[str, torch.Tensor], source) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{source} holds non-finite values (NaN or Inf) in {name}")


def check_precision(state: Mapping[str, torch.Tensor], source) -> None:
    """Refuse float16 / bfloat16 weights with a one-line :class:`~invert.errors.UserError`.

    Half-precision weights would be widened silently on loading; the toolkit's solves and
    certificates work in float32/float64, so the user converts once, knowingly.

    Examples
    --------
    >>> check_precision({"w": torch.zeros(2, dtype=torch.float16)}, "w.pth")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: w.pth holds torch.float16 weights (w); convert them ...
    """
    half = [k for k, v in state.items() if v.dtype in (torch.float16, torch.bfloat16)]
    if half:
        raise UserError(
            f"{source} holds {state[half[0]].dtype} weights ({_list_keys(half)}); convert them "
            f"with .float() and save again"
        )


class PlainWeightsError(UserError):
    """A weights file without crelu metadata (a plain state dict) given as a checkpoint."""


# --- checkpoints -----------------------------------------------------------------------


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **metadata) -> Path:
    """Write the model's weights and metadata to one safetensors file, atomically.

    Parameters
    ----------
    model : nn.Module
        Usually a zoo :class:`~invert.nn.net.Net`; its ``arch`` and ``config`` and the
        statistics of its ``normalize`` layer are recorded automatically.
    path : str or path-like
        Destination file (conventionally ``*.safetensors``); parent folders are made.
    **metadata
        Anything JSON-serialisable to keep alongside: ``data`` (data set spec),
        ``classes``, ``history``, ``recipe`` ... The keys ``format``,
        ``format_version``, ``arch``, ``config``, ``normalization`` and
        ``toolkit_version`` are filled in here and cannot be passed.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from invert.nn.zoo import create_model
    >>> net = create_model("convpool_c_crelu_half", width=0.25)
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
    >>> save_checkpoint(net, file, data="textures", classes=["a", "b"]).name
    'net.safetensors'
    >>> read_metadata(file)["arch"]
    'convpool_c_crelu_half'
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise UserTypeError(f"metadata keys {clash} are set by save_checkpoint itself")
    from .metadata import model_metadata

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **model_metadata(model),
            **metadata}  # fmt: skip
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as error:
        message = f"checkpoint metadata must be JSON-serialisable and finite: {error}"
        raise UserTypeError(message) from None
    # contiguous: channels_last weights are strided; clone: safetensors refuses shared storage
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return atomic_write_bytes(path, _safetensors_save(tensors, metadata={"crelu": text}))


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint written by :func:`save_checkpoint`, without building it.

    Raises :class:`~invert.errors.UserError` for files that are not such a checkpoint.
    """
    path = _existing_file(path)
    _require_safetensors(path)
    return _parse_metadata(_read_header(path), path)


def _read_header(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, reading only the header."""
    corrupt = f"{path} is corrupt or truncated (not a valid safetensors file)"
    with open(path, "rb") as file:
        prefix = file.read(8)
        total = os.fstat(file.fileno()).st_size
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if size < 2 or size > total - 8:
            raise UserError(corrupt)
        try:
            header = json.loads(file.read(size))
        except (ValueError, UnicodeDecodeError) as error:
            raise UserError(corrupt) from error
    if not isinstance(header, dict):
        raise UserError(corrupt)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise UserError(corrupt)
    # the data section must be as long as the header says (catches truncated files)
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError) as error:
        raise UserError(corrupt) from error
    if total - 8 - size < max(ends, default=0):
        raise UserError(corrupt)
    return metadata


def _require_safetensors(path: Path) -> None:
    kind = _sniff(path)
    if kind == "torch":
        raise PlainWeightsError(
            f"{path} is a PyTorch file, not a crelu checkpoint; for a plain state dict use "
            f"load_state_dict_into(create_model(...), path)"
        )
    if kind != "safetensors":
        raise UserError(f"{path} is corrupt or truncated, or not a checkpoint (not safetensors)")


def _parse_metadata(header: Mapping[str, str], path: Path) -> dict:
    text = header.get("crelu")
    if text is None:
        raise PlainWeightsError(
            f"{path} holds weights without crelu metadata (a plain state dict); build the model "
            f"with create_model(...) and use load_state_dict_into(model, path)"
        )
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise UserError(f"{path} has corrupt metadata (invalid JSON)") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} has metadata that is not a crelu checkpoint's")
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise UserError(
            f"{path} was written by a newer toolkit (format {meta.get('format_version')}); "
            f"upgrade crelu-toolkit to read it"
        )
    from .metadata import validate_metadata

    return validate_metadata(meta, path)


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device | None = None):
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or path-like
        The ``.safetensors`` checkpoint.
    device : str or torch.device, optional
        Where to put the model; default ``cuda`` when available, else ``cpu``.

    Returns
    -------
    Net
        The model in eval mode with its normalization restored. Its metadata dict
        (``arch``, ``config``, ``normalization``, ``toolkit_version``, and whatever
        was saved: ``data``, ``classes``, ``history``, ``recipe`` ...) is attached as
        ``model.metadata``.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from invert.nn.zoo import create_model
    >>> net = create_model("convpool_c_crelu_half", width=0.25)
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
    >>> _ = save_checkpoint(net, file, classes=list("abcdefghij"))
    >>> again = load_checkpoint(file, device="cpu")
    >>> again.metadata["classes"][:3], torch.equal(again.conv1.conv.weight, net.conv1.conv.weight)
    (['a', 'b', 'c'], True)
    """
    from invert.nn.zoo import create_model

    path = _existing_file(path)
    device = resolve_device(device)
    _require_safetensors(path)
    tensors, header = _read_safetensors(path)
    meta = _parse_metadata(header, path)
    arch, config = meta.get("arch"), meta.get("config")
    if not isinstance(arch, str) or not isinstance(config, dict):
        raise UserError(
            f"{path} does not record a zoo architecture; build the model yourself and use "
            f"load_state_dict_into(model, path)"
        )
    try:
        model = create_model(arch, **config)
    except TypeError as error:
        raise UserError(f"{path} records an invalid model configuration: {error}") from error
    _load_tensors(model, tensors, source=path, strict=True)
    normalization = meta.get("normalization")
    if normalization is not None:
        model.normalize.set_statistics(normalization["mean"], normalization["std"])
    model.metadata = meta
    return model.to(device).eval()


# --- plain state dicts -----------------------------------------------------------------


def _unwrap(obj, path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded object (state dict, or a dict wrapping one)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                if all(isinstance(v, torch.Tensor) for v in inner.values()):
                    return dict(inner)
    raise UserError(
        f"{path} does not hold a state dict (a mapping of names to tensors)"
        + (f"; top-level keys: {_list_keys(map(str, obj))}" if isinstance(obj, Mapping) else "")
    )


_PREFIXES = {
    "module.": "DataParallel / DistributedDataParallel",
    "_orig_mod.": "torch.compile",
}


def _strip_prefixes(state: dict[str, torch.Tensor], source) -> dict[str, torch.Tensor]:
    """Undo the prefix DataParallel/DDP (``module.``) or torch.compile (``_orig_mod.``) put
    on every key, with a ``UserWarning`` saying so (the CLI prints it as a note)."""
    stripped = []
    for prefix, wrapper in _PREFIXES.items():
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            stripped.append(f"{prefix!r} ({wrapper})")
    if stripped:
        warnings.warn(
            f"removed the prefix {' and '.join(stripped)} from every key of {source}",
            UserWarning,
            stacklevel=3,
        )
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a PyTorch ``.pt``/``.pth`` state dict.

    PyTorch files are read with ``torch.load(weights_only=True)``, so nothing in them
    runs (a whole pickled model is refused with a message saying to save its
    ``state_dict()``). A state dict wrapped in a dict under ``state_dict``/
    ``model_state_dict``/``model`` is unwrapped, and a ``module.`` prefix on every key
    (from DataParallel / DistributedDataParallel) is removed with a ``UserWarning``.
    """
    path = _existing_file(path)
    kind = _sniff(path)
    if kind == "safetensors":
        tensors, _ = _read_safetensors(path)
        return _strip_prefixes(tensors, path)
    if kind == "torch":
        return _strip_prefixes(_unwrap(_torch_load(path), path), path)
    raise UserError(f"{path} is corrupt or truncated, or neither a safetensors nor a PyTorch file")


def _load_tensors(model: nn.Module, state: Mapping[str, torch.Tensor], *, source, strict: bool):
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]  # in model order
    unexpected = [k for k in state if k not in expected]
    name = getattr(model, "arch", type(model).__name__)
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {_list_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_list_keys(unexpected)}")
        raise UserError(f"weights in {source} do not match {name}: " + "; ".join(parts))
    common = {k: v for k, v in state.items() if k in expected}
    for key, tensor in common.items():
        if tensor.shape != expected[key].shape:
            layer = key.rsplit(".", 1)[0]
            raise UserError(
                f"weights in {source} do not match {name}: layer {layer} ({key}) has shape "
                f"{_shape(tensor)} in the file but {_shape(expected[key])} in the model"
            )
    _check_finite(common, source)
    model.load_state_dict(common, strict=strict)


def load_state_dict_into(
    model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *, strict: bool = True
) -> nn.Module:
    """Load plain PyTorch weights into ``model`` (in place) and return it.

    Parameters
    ----------
    model : nn.Module
        The model to fill, e.g. from :func:`~invert.nn.zoo.create_model`.
    source : path or mapping
        A ``.pt``/``.pth`` file (read with ``torch.load(weights_only=True)``), a
        ``.safetensors`` file (with or without our metadata), or a state dict.
    strict : bool, optional
        With ``True`` (default) the keys must match exactly; otherwise missing and
        unexpected keys are skipped. Shapes must always match.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    UserError
        Keys do not match (the message names missing and unexpected keys), a shape
        differs (the message names the layer), or the file is corrupt or unsafe.

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> a, b = create_model("convpool_c", width=0.25), create_model("convpool_c", width=0.25)
    >>> _ = load_state_dict_into(b, a.state_dict())
    >>> bool((a.conv1.conv.weight == b.conv1.conv.weight).all())
    True
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(source, Mapping):
        where = "the state dict"
        state = _strip_prefixes(_unwrap(source, "the given mapping"), where)
    else:
        state, where = read_state_dict(source), str(source)
    check_precision(state, where)
    _load_tensors(model, state, source=where, strict=strict)
    return model


# --- training state --------------------------------------------------------------------


def save_training_state(state: Mapping, path: str | os.PathLike) -> Path:
    """Write a resumable training state atomically with :func:`torch.save`.

    ``state`` may hold tensors, numbers, strings, ``None`` and lists/tuples/dicts of
    them -- exactly what :func:`load_training_state` accepts back.
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a training state with ``torch.load(weights_only=True)``; nothing in the file runs.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "state.pt"
    >>> _ = save_training_state({"epoch": 3, "rng": torch.get_rng_state()}, file)
    >>> load_training_state(file)["epoch"]
    3
    """
    path = _existing_file(path)
    if _sniff(path) != "torch":
        raise UserError(f"{path} is not a training state file (corrupt or other format)")
    state = _torch_load(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a training state file (expected a dict)")
    return state
