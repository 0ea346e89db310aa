"""The shared model loader: one call from a spec string to a ready model.

:func:`load_model` accepts

* a **checkpoint file** written by :func:`~invert.train.checkpoints.save_checkpoint`
  (``runs/model.safetensors``);
* ``MODEL@DATA`` (``convpool_c_crelu_half@textures``, ``vgg@cifar10:/data/cifar``),
  split on the first ``@``: the model trained on the data set with a named recipe.
  Trained models are cached; a cache miss trains (progress shown) and stores the
  result, a hit loads it;
* a bare **registry name** (``convpool_c_crelu``): the architecture with random
  weights -- analyses of untrained networks are legitimate (the paper compares
  learned filters with random ones), so this is allowed, with a warning;
* a registry name with ``weights=FILE`` (``resnet18`` and a torchvision ``.pth``): the
  architecture with a plain state dict loaded into it (:func:`load_weights`);
* ``FILE.py:FUNCTION`` (``nets/mine.py:make_net``): any other architecture. The file is
  imported and ``FUNCTION()`` called -- this runs the user's own code, because the user
  named it -- and must return an ``nn.Module``; ``weights=FILE`` is optional.

Every form returns the model in eval mode, on the best device (``cuda`` when
available), with its input normalization attached, and its metadata dict as
``model.metadata`` (``arch``, ``config``, ``data``, ``classes``, ``normalization``,
``recipe``, ``history``, ``toolkit_version``, ...). The same convention holds for
:func:`~invert.train.checkpoints.load_checkpoint`.

The cache (ours)
----------------
Directory: ``cache_dir`` if given, else ``$CRELU_CACHE``, else
``$XDG_CACHE_HOME/crelu``, else ``~/.cache/crelu``. One file per trained model,
``MODEL@DATA-RECIPE-HASH-vVERSION.safetensors``, where HASH covers the model name,
the data spec (paths made absolute), every field of the recipe and the seed, and
VERSION is the toolkit version. A new toolkit version therefore never reuses a
model trained by an older one: it retrains (and says so on stderr), leaving the
old file in place for the version that made it.

Concurrency: checking, training and writing an entry happen under an exclusive
``fcntl`` lock on ``NAME.lock`` (removed by its holder when done, so no empty lock
files stay behind; a waiting process then locks afresh); training writes
``NAME.partial.safetensors`` after every epoch (:func:`partial_path`; and its
resumable state, so a killed run continues where it stopped) and the finished
file is renamed into place atomically. A second process asking for the same model
waits for the lock and then loads what the first one wrote.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import re
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.progress import say

from .checkpoints import load_checkpoint
from .metadata import model_metadata
from .recipe import Recipe, get_recipe
from .settings import RunSettings
from .spec import fit_spec, parse_model_spec
from .state import training_state_path

__all__ = [
    "load_model",
    "load_weights",
    "default_cache_dir",
    "cache_path",
    "check_compatible",
    "matching_architectures",
    "partial_path",
]


def default_cache_dir() -> Path:
    """``$CRELU_CACHE``, else ``$XDG_CACHE_HOME/crelu``, else ``~/.cache/crelu``.

    Examples
    --------
    >>> import os
    >>> saved = os.environ.get("CRELU_CACHE")
    >>> os.environ["CRELU_CACHE"] = "/tmp/crelu-cache"
    >>> str(default_cache_dir())
    '/tmp/crelu-cache'
    >>> _ = os.environ.pop("CRELU_CACHE") if saved is None else os.environ.update(CRELU_CACHE=saved)
    """
    if os.environ.get("CRELU_CACHE"):
        return Path(os.environ["CRELU_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "crelu"
    return Path.home() / ".cache" / "crelu"


def _canonical_data(data: str) -> str:
    """The data spec with its path made absolute (``cifar10:~/x`` -> ``cifar10:/home/u/x``)."""
    from invert.data import DataSpec

    return str(DataSpec.parse(data).resolved())


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:limit]


def cache_path(
    spec: str,
    *,
    recipe: str | Recipe = "fast",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> Path:
    """Where the cache keeps (or would keep) the model ``MODEL@DATA`` trained with ``recipe``.

    Examples
    --------
    >>> cache_path("convpool_c@textures", recipe="tiny", cache_dir="/tmp/c").name[:25]
    'convpool_c@textures-tiny-'
    """
    from invert.version import __version__

    stem = _cache_stem(spec, recipe, cache_dir, seed)
    return stem.with_name(stem.name + f"-v{__version__}.safetensors")


def partial_path(entry: str | os.PathLike) -> Path:
    """The checkpoint a training run of the cache ``entry`` rewrites after every epoch
    (its metadata's ``history`` says how far it got; renamed to ``entry`` at the end).

    Examples
    --------
    >>> partial_path("/tmp/c/convpool_c@textures-tiny-0123-v0.1.0.safetensors").name
    'convpool_c@textures-tiny-0123-v0.1.0.partial.safetensors'
    """
    entry = Path(entry)
    return entry.with_name(entry.name[: -len(".safetensors")] + ".partial.safetensors")


def _cache_stem(spec, recipe, cache_dir, seed) -> Path:
    """The cache entry's path without the version and suffix."""
    model, data = parse_model_spec(spec)
    recipe = get_recipe(recipe, arch=model)
    data = _canonical_data(data)
    key = json.dumps(
        {"model": model, "data": data, "recipe": recipe.to_dict(), "seed": seed}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return folder / f"{model}@{_slug(data)}-{_slug(recipe.name, 16)}-{digest}"


def _unwritable(folder: Path, error: OSError) -> PermissionError:
    reason = error.strerror or str(error)
    return PermissionError(
        f"cannot write to the model cache {folder} ({reason}); set CRELU_CACHE to a writable "
        f"directory or pass cache_dir="
    )


def _lock(path: Path, *, progress: bool = False):
    """An open handle holding an exclusive ``fcntl`` lock on ``path`` (created if needed).

    The holder removes the file when done (:func:`_unlock`), so a process that waited on
    the old file finds it gone or replaced once it gets the lock, and locks afresh: only
    one process at a time holds the lock of the file that is at ``path``. A wait (another
    process is training the entry) is announced when ``progress``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(path.parent, error) from error
    while True:
        try:
            handle = open(path, "a+b")  # noqa: SIM115 (closed by _unlock)
        except OSError as error:
            raise _unwritable(path.parent, error) from error
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            name = path.name.removesuffix(".lock")
            say(progress, f"crelu: another process is training {name}; waiting for it")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass  # removed by the previous holder while we waited
        handle.close()


def _unlock(handle, path: Path) -> None:
    """Remove the lock file (still holding the lock), then release it: no empty
    ``.lock`` files stay in the cache."""
    try:
        path.unlink(missing_ok=True)
    finally:
        handle.close()


def _current(path: Path) -> bool:
    """The entry exists and was written by this toolkit version."""
    from invert.version import __version__

    from .checkpoints import read_metadata

    if not path.is_file():
        return False
    try:
        return read_metadata(path).get("toolkit_version") == __version__
    except ValueError:
        return False  # damaged entry: retrain over it


def _load_or_train(spec, settings: RunSettings, *, cache_dir, train_if_missing):
    recipe = settings.recipe
    final = cache_path(spec, recipe=recipe, cache_dir=cache_dir, seed=settings.seed)
    if _current(final):  # fast path: a finished entry is never rewritten in place
        return load_checkpoint(final, device=settings.device)
    if not train_if_missing:
        raise FileNotFoundError(
            f"no cached model for {spec} (recipe {recipe.name}) in {final.parent}; run "
            f"`crelu train {spec} --recipe {recipe.name}` or pass train_if_missing=True"
        )
    stem = final.name[: -len(".safetensors")]
    lock = final.with_name(stem + ".lock")
    handle = _lock(lock, progress=settings.progress)
    try:
        if not _current(final):  # another process may have finished it while we waited
            _train_into(final, spec, settings)
    finally:
        _unlock(handle, lock)
    return load_checkpoint(final, device=settings.device)


def _train_into(final: Path, spec: str, settings: RunSettings) -> None:
    """Train ``spec`` into its partial file, then rename it to the cache entry ``final``."""
    from invert.version import __version__

    stem = final.name[: -len(".safetensors")]
    older = sorted(final.parent.glob(stem.rsplit("-v", 1)[0] + "-v*.safetensors"))
    older = [p for p in older if p != final and ".partial." not in p.name]
    if older:
        say(True, f"crelu: {older[-1].name} was trained by another toolkit version; "
                  f"retraining {spec} for crelu {__version__}")  # fmt: skip
    else:
        say(settings.progress, f"crelu: {spec} (recipe {settings.recipe.name}) is not in the "
                               f"cache {final.parent}; training it")  # fmt: skip
    partial = partial_path(final)
    model, data = parse_model_spec(spec)
    try:
        fit_spec(f"{model}@{_canonical_data(data)}", settings.replace(out=partial, resume=True))
        os.replace(partial, final)
    except PermissionError as error:
        raise _unwritable(final.parent, error) from error
    training_state_path(partial).unlink(missing_ok=True)


def load_model(
    spec: str | os.PathLike,
    *,
    recipe: str | Recipe = "fast",
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    train_if_missing: bool = True,
    progress: bool = True,
    seed: int = 0,
    weights: str | os.PathLike | None = None,
) -> nn.Module:
    """A ready-to-use model from a checkpoint path, ``MODEL@DATA`` or a registry name.

    Parameters
    ----------
    spec : str or path-like
        A checkpoint file; ``MODEL@DATA`` (``convpool_c_crelu_half@textures``,
        ``vgg@cifar10:/data/cifar``; split on the first ``@``); a model name
        from :func:`~invert.nn.zoo.list_models` for an untrained model (random weights,
        10 classes; a ``UserWarning`` says so); or ``FILE.py:FUNCTION``: imports the
        file and calls ``FUNCTION()``, which must return an ``nn.Module`` (this runs
        your own code, because you named it).
    recipe : {"fast", "tiny", "paper"} or Recipe
        How ``MODEL@DATA`` is trained (see :mod:`invert.train`); part of the cache key.
    device : str or torch.device, optional
        Default ``cuda`` when available, else ``cpu``.
    cache_dir : path, optional
        Overrides ``$CRELU_CACHE`` / ``$XDG_CACHE_HOME/crelu`` / ``~/.cache/crelu``.
    train_if_missing : bool
        On a cache miss, train (``True``) or raise ``FileNotFoundError``.
    progress : bool
        Show training progress on stderr.
    seed : int
        Seed of a ``MODEL@DATA`` training run (initial weights, item order,
        augmentation, dropout); part of the cache key.
    weights : path, optional
        With a registry name (``resnet18``, ``vgg16``, any zoo name) or
        ``FILE.py:FUNCTION``: a plain PyTorch state dict to load into it (``.pt``/
        ``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``); see
        :func:`load_weights`. A reference architecture keeps its ImageNet
        normalization (images in [0, 1]).

    Returns
    -------
    Net
        In eval mode on ``device``, normalization attached, metadata in
        ``model.metadata``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     net = load_model("convpool_c_crelu", device="cpu")
    >>> net.training, net.metadata["trained"]
    (False, False)
    """
    from invert.nn.zoo import create_model, list_models

    device = resolve_device(device)
    if weights is not None:
        return _with_weights(spec, weights, device)
    if isinstance(spec, str) and is_factory_spec(spec):
        return _described(model_from_factory(spec), spec, None).to(device).eval()
    if isinstance(spec, os.PathLike):
        return _checkpoint(spec, device)
    if not isinstance(spec, str) or not spec.strip():
        raise UserTypeError("spec must be a checkpoint path, MODEL@DATA, or a model name")
    spec = spec.strip()
    head = spec.partition("@")[0].strip()
    if "@" in spec and head in list_models() and not Path(spec).is_file():
        run = RunSettings(recipe=get_recipe(recipe, arch=head), device=device, progress=progress,
                          seed=seed)  # fmt: skip
        return _load_or_train(spec, run, cache_dir=cache_dir, train_if_missing=train_if_missing)
    if Path(spec).expanduser().is_file():
        return _checkpoint(Path(spec).expanduser(), device)
    if Path(spec).expanduser().is_dir():
        raise UserError(f"{spec} is not a file but a folder; give a checkpoint file")
    if spec in list_models():
        warnings.warn(
            f"{spec} has random weights (untrained); use {spec}@DATA for a trained model",
            UserWarning,
            stacklevel=2,
        )
        model = create_model(spec)
        model.metadata = model_metadata(model, arch=spec, trained=False)
        return model.to(device).eval()
    if "@" in spec:
        parse_model_spec(spec)  # raises the unknown-model error
    if os.sep in spec or spec.endswith((".safetensors", ".pt", ".pth")):
        raise FileNotFoundError(f"no such checkpoint file: {spec}")
    raise UserError(
        f"{spec!r} is not a checkpoint file, MODEL@DATA or a model name; valid model names: "
        f"{', '.join(list_models())}"
    )


def _checkpoint(path, device) -> nn.Module:
    """:func:`load_checkpoint`, pointing plain weights files to ``weights=``."""
    from .checkpoints import PlainWeightsError, read_state_dict

    try:
        return load_checkpoint(path, device=device)
    except PlainWeightsError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                matches = matching_architectures(read_state_dict(path))
        except ValueError:
            matches = []
        arch = matches[0] if matches else "ARCH"
        raise UserError(
            f"{path} holds plain weights, not a crelu checkpoint; name the architecture and "
            f"pass the file as weights: `crelu COMMAND {arch} --weights {path}` (Python: "
            f"load_model('{arch}', weights=...))"
            + (f"; its keys match {', '.join(matches)}" if matches else "")
        ) from None


# --- FILE.py:FUNCTION ------------------------------------------------------------------

_FACTORY = re.compile(r"^(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


def is_factory_spec(spec) -> bool:
    """Whether ``spec`` names a model factory as ``FILE.py:FUNCTION``.

    Examples
    --------
    >>> is_factory_spec("nets/mine.py:make_net"), is_factory_spec("resnet18")
    (True, False)
    """
    return isinstance(spec, str) and _FACTORY.match(spec.strip()) is not None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def model_from_factory(spec: str) -> nn.Module:
    """Import ``FILE.py`` (by path) and return what its ``FUNCTION()`` builds.

    This runs the user's own code, because the user named it. Each failure is one
    ``ValueError``/``TypeError`` line: no such file, the import raises, no such function,
    the function raises, or it returns something other than an ``nn.Module``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "net.py"
    >>> _ = file.write_text("from torch import nn\\ndef make():\\n    return nn.Conv2d(3, 4, 3)\\n")
    >>> model_from_factory(f"{file}:make")
    Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
    """
    match = _FACTORY.match(spec.strip())
    if match is None:
        raise UserError(f"{spec!r} is not FILE.py:FUNCTION (e.g. nets/mine.py:make_net)")
    path, name = Path(match["file"]).expanduser(), match["function"]
    if not path.is_file():
        raise UserError(
            f"no such file: {path} (the model spec {spec} imports FILE.py and calls FUNCTION())"
        )
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(f"crelu_user_{path.stem}_{digest}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses, pickling and fx look it up there
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        sys.modules.pop(module_spec.name, None)
        raise UserError(f"importing {path} raised {_first_line(error)}") from error
    function = getattr(module, name, None)
    if not callable(function):
        found = sorted(
            k for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None)
            == module.__name__
        )  # fmt: skip
        raise UserError(
            f"{path} has no function {name}"
            + (f"; its functions: {', '.join(found)}" if found else "")
        )
    try:
        model = function()
    except (Exception, SystemExit) as error:
        raise UserError(f"{name}() in {path} raised {_first_line(error)}") from error
    if not isinstance(model, nn.Module):
        raise UserTypeError(
            f"{name}() in {path} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _described(model: nn.Module, arch: str, weights) -> nn.Module:
    """Attach ``model.metadata`` as every loader path does."""
    model.metadata = model_metadata(model, arch=arch, trained=weights is not None)
    if weights is not None:
        model.metadata["weights"] = str(weights)
    return model


# --- a state dict into a named architecture ----------------------------------------------


@functools.lru_cache(maxsize=128)
def _meta_state(name: str, num_classes: int = 10, width: float = 1.0) -> dict:
    """Key -> shape of registry architecture ``name`` (built on the meta device: no memory)."""
    import torch

    from invert.nn.zoo import create_model

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, width=width)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def matching_architectures(state) -> list[str]:
    """Registry names (reference architectures and zoo) whose state-dict keys are ``state``'s.

    Where several share the keys (zoo variants of one family), those whose shapes also
    match (at the file's class count and width) come first, and only they are named.

    Examples
    --------
    >>> from invert.nn.reference import resnet50
    >>> matching_architectures(resnet50(width=0.125, num_classes=5).state_dict())
    ['resnet50']
    """
    from invert.nn.zoo import list_models

    keys = set(state)
    matches = [name for name in list_models() if set(_meta_state(name)) == keys]
    exact = []
    for name in matches:
        try:
            shapes = _meta_state(name, **_file_config(name, state))
        except ValueError:  # e.g. an odd class count for a CReLU class layer
            continue
        if all(tuple(state[k].shape) == shape for k, shape in shapes.items()):
            exact.append(name)
    return exact or matches


def _file_config(name: str, state) -> dict:
    """``num_classes`` and ``width`` of ``name`` that the file's tensors imply.

    The class count comes from the one tensor dimension that follows ``num_classes``
    (a ResNet's ``fc.weight`` rows, a VGG's ``classifier.6.weight`` rows, a zoo class
    conv's filters), found by building the architecture for 2 and 4 classes; the width
    from the layers' filter and row counts against the architecture's own. Where the file
    lacks those tensors, the defaults stay (the loading error then names the keys). The
    width found may differ from the one the model was built with, but it rebuilds the same
    shapes.
    """
    config: dict = {}
    two, four = _meta_state(name, 2), _meta_state(name, 4)
    for key, shape in two.items():
        if shape == four[key] or key not in state or len(state[key].shape) != len(shape):
            continue
        dim = next(i for i, (a, b) in enumerate(zip(shape, four[key])) if a != b)
        slope = (four[key][dim] - shape[dim]) / 2
        classes = (state[key].shape[dim] - (shape[dim] - 2 * slope)) / slope
        if classes >= 1 and classes == int(classes):
            config["num_classes"] = int(classes)
        break
    classes = config.get("num_classes", 10)
    base = _meta_state(name, classes)
    # each layer's filter (row) count over its count at width 1 estimates the width; the
    # widest layer's most closely (the counts are rounded), so try them widest first and
    # keep the first width that rebuilds every shape in the file
    layers = [
        k for k, s in base.items()
        if len(s) in (2, 4) and two[k] == four[k] and k in state and state[k].dim() == len(s)
    ]  # fmt: skip
    if not layers or all(state[k].shape[0] == base[k][0] for k in layers):
        return config
    widths = [state[k].shape[0] / base[k][0] for k in sorted(layers, key=lambda k: -base[k][0])]
    for width in dict.fromkeys(widths):
        shapes = _meta_state(name, classes, width)
        if all(k in state and tuple(state[k].shape) == s for k, s in shapes.items()):
            return {**config, "width": width}
    return {**config, "width": widths[0]}


def load_weights(name: str, weights: str | os.PathLike) -> nn.Module:
    """Registry architecture ``name`` with the plain state dict in ``weights`` loaded.

    The file is read with ``torch.load(weights_only=True)`` (or as safetensors), so
    nothing in it runs. ``module.`` prefixes of DataParallel/DDP are removed with a
    ``UserWarning``; the class count (the last layer's rows) and the width are read from
    the file, so a 10-class fine-tuned ``resnet18`` loads. One-line ``ValueError``: the
    file holds another architecture's weights (named: its keys match it), a pickled
    model rather than a state dict, float16/bfloat16 weights (convert with ``.float()``),
    or keys and shapes that do not match (named).

    Examples
    --------
    >>> import pathlib, tempfile, torch
    >>> from invert.nn.reference import resnet18
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "r18.pth"
    >>> torch.save(resnet18(num_classes=10, width=0.125).state_dict(), file)
    >>> model = load_weights("resnet18", file)
    >>> model.fc.out_features, model.layer1[0].conv1.out_channels
    (10, 8)
    """
    from invert.nn.zoo import list_models

    from .checkpoints import check_precision, load_state_dict_into, read_state_dict

    if name not in list_models():
        raise UserError(f"unknown architecture {name!r}; valid names: {', '.join(list_models())}")
    state = read_state_dict(weights)
    check_precision(state, weights)
    if set(state) != set(_meta_state(name)):
        matches = [m for m in matching_architectures(state) if m != name]
        if matches:
            raise UserError(
                f"{weights} holds {' or '.join(matches)} weights (its keys match "
                f"{', '.join(matches)}), not {name}; use `crelu COMMAND {matches[0]} --weights "
                f"{weights}`"
            )
    model = _uninitialised(name, _file_config(name, state))
    load_state_dict_into(model, state)  # strict: every parameter and buffer is overwritten
    return model


def _uninitialised(name: str, config: dict) -> nn.Module:
    """``create_model(name, **config)`` without initialising its weights (the file's
    replace them; VGG-16's normal init alone takes seconds). Built on the meta device
    and given empty CPU memory; the one non-persistent buffer pair (``normalize``'s
    statistics, which no state dict holds) is copied from a freshly built one."""
    import torch

    from invert.nn.zoo import create_model

    with torch.device("meta"):
        model = create_model(name, **config)
    persistent = set(model.state_dict())
    loose = [n for n, _ in model.named_buffers() if n not in persistent]
    if any(not n.startswith("normalize.") for n in loose):
        return create_model(name, **config)  # buffers we cannot rebuild: initialise normally
    model.to_empty(device="cpu")
    if loose:
        fresh = _normalize_like(name, model.normalize)
        with torch.no_grad():
            model.normalize.mean.copy_(fresh.mean)
            model.normalize.std.copy_(fresh.std)
    return model


def _normalize_like(name: str, normalize: nn.Module) -> nn.Module:
    """The ``normalize`` layer ``create_model(name)`` gives, for ``normalize``'s channels."""
    from invert.nn.net import Normalize
    from invert.nn.reference import REFERENCE, imagenet_normalize

    channels = normalize.mean.numel()
    return imagenet_normalize(channels) if name in REFERENCE else Normalize(channels)


def _with_weights(spec, weights, device) -> nn.Module:
    """A registry architecture, or ``FILE.py:FUNCTION``'s model, with a user's state dict."""
    from invert.nn.zoo import list_models

    from .checkpoints import check_precision, load_state_dict_into, read_state_dict

    name = spec.strip() if isinstance(spec, str) else None
    if name is not None and is_factory_spec(name):
        model = model_from_factory(name)
        state = read_state_dict(weights)
        check_precision(state, weights)
        if set(state) != set(model.state_dict()):
            matches = matching_architectures(state)
            if matches:
                raise UserError(
                    f"{weights} holds {' or '.join(matches)} weights (its keys match "
                    f"{', '.join(matches)}), not the model of {name}; use `crelu COMMAND "
                    f"{matches[0]} --weights {weights}`"
                )
        load_state_dict_into(model, state)
        return _described(model, name, weights).to(device).eval()
    if name not in list_models():
        raise UserError(
            f"--weights needs an architecture name (e.g. resnet18, vgg16) or FILE.py:FUNCTION, "
            f"not {spec!r}; valid names: {', '.join(list_models())}"
        )
    return _described(load_weights(name, weights), name, weights).to(device).eval()


def check_compatible(model: nn.Module, dataset) -> None:
    """Raise :class:`~invert.errors.UserError` when ``model`` cannot classify ``dataset``'s images.

    Checks the number of classes (a checkpoint trained on CIFAR-10 applied to
    CIFAR-100) and the number of input channels.

    Examples
    --------
    >>> import torch
    >>> from invert.data import ImageDataset
    >>> from invert.nn.zoo import create_model
    >>> data = ImageDataset(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), [0, 1], list("ab"))
    >>> net = create_model("convpool_c", num_classes=10, width=0.25)
    >>> check_compatible(net, data)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: the model has 10 classes but the data set '' has 2; ...
    """
    config = getattr(model, "config", None) or {}
    classes = getattr(dataset, "classes", None)
    if classes is not None and "num_classes" in config and config["num_classes"] != len(classes):
        raise UserError(
            f"the model has {config['num_classes']} classes but the data set "
            f"{getattr(dataset, 'spec', '')!r} has {len(classes)}; train it on this data set"
        )
    if len(dataset) and "in_channels" in config:
        channels = int(torch.as_tensor(dataset[0][0]).shape[0])
        if channels != config["in_channels"]:
            raise UserError(
                f"the model takes {config['in_channels']}-channel images but the data set "
                f"has {channels} channels"
            )
