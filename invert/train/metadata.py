"""Model metadata: built in one place (:func:`model_metadata`), checked in one place.

Every model the toolkit hands out carries ``model.metadata``, and every checkpoint stores
it: :func:`model_metadata` builds it (the model's own fields plus what the caller adds),
:func:`training_metadata` the part a training run adds.

Checkpoint metadata is data from outside: every field has a type and a shape.
:func:`validate_metadata` checks the JSON document a checkpoint carries (see
:func:`~invert.train.checkpoints.save_checkpoint`) before anything reads it, so that a
damaged or hand-edited file is one :class:`~invert.errors.UserError` naming the field, never a
``KeyError`` deep inside a command. Unknown fields are kept as they are (callers may
store their own); the known ones are:

=================  ====================================================================
field              expected
=================  ====================================================================
``arch``           a zoo name (str), or null for a model built outside the zoo
``config``         an object of ``create_model`` arguments, or null
``normalization``  ``{"mean": [C numbers], "std": [C positive numbers]}``, C the input
                   channels of ``config`` when it says
``toolkit_version``, ``data``, ``weights``  str
``classes``        a list of str
``input_size``     ``[C, H, W]``, positive integers
``recipe``         a recipe name (str) or an object whose ``name`` is a str
``seed``, ``epochs``  an integer >= 0
``test_accuracy``  a number in [0, 1]
``trained``        true or false
``history``        a list of objects, one per epoch: ``epoch`` an integer >= 1, and
                   ``lr``, ``train_loss``, ``train_accuracy``, ``test_loss``,
                   ``test_accuracy``, ``seconds``, ``images_per_second`` numbers (or null)
=================  ====================================================================

Every field may be null (absent) except where the loader needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from invert.errors import UserError

__all__ = ["model_metadata", "training_metadata", "validate_metadata"]

_HISTORY_NUMBERS = (
    "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds",
    "images_per_second",
)  # fmt: skip


class _Bad(Exception):
    """A field that is not what it should be: ``(field, expected)``."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> bool:
    return _number(value) and math.isfinite(value)


def _count(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _normalization(value, meta: dict) -> None:
    expected = '{"mean": [C numbers], "std": [C positive numbers]}'
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise _Bad("normalization", expected)
    mean, std = value["mean"], value["std"]
    for key, entries in (("mean", mean), ("std", std)):
        if not isinstance(entries, list) or not entries or not all(map(_finite, entries)):
            raise _Bad(f"normalization.{key}", "a non-empty list of finite numbers")
    if len(mean) != len(std):
        raise _Bad("normalization", f"mean and std of one length ({len(mean)} and {len(std)})")
    if not all(s > 0 for s in std):
        raise _Bad("normalization.std", "positive numbers")
    channels = (meta.get("config") or {}).get("in_channels") if isinstance(
        meta.get("config"), dict) else None  # fmt: skip
    if _count(channels, 1) and len(mean) != channels:
        raise _Bad("normalization", f"{channels} values each (the model's input channels)")


def _history(value, meta: dict) -> None:
    if not isinstance(value, list):
        raise _Bad("history", "a list of per-epoch objects")
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise _Bad(f"history[{i}]", 'an object such as {"epoch": 1, "train_loss": ...}')
        if "epoch" in record and not _count(record["epoch"], 1):
            raise _Bad(f"history[{i}].epoch", "an integer >= 1")
        for key in _HISTORY_NUMBERS:
            if record.get(key) is not None and not _number(record[key]):
                raise _Bad(f"history[{i}].{key}", "a number")


def _recipe(value, meta: dict) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, dict) or not isinstance(value.get("name", ""), str):
        raise _Bad("recipe", "a recipe name or an object with a str name")
    if not isinstance(value.get("data_options", {}), dict):  # older checkpoints
        raise _Bad("recipe.data_options", "an object")
    for part in ("model", "data", "hardware"):
        if not isinstance(value.get(part, {}), dict):
            raise _Bad(f"recipe.{part}", "an object")
    if not isinstance((value.get("data") or {}).get("options", {}), dict):
        raise _Bad("recipe.data.options", "an object")


def _simple(check: Callable[[object], bool], expected: str):
    def validate(value, meta):
        if not check(value):
            raise _Bad(None, expected)

    return validate


_FIELDS = {
    "arch": _simple(lambda v: isinstance(v, str) and bool(v), "a model name (str)"),
    "config": _simple(
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        "an object of create_model arguments",
    ),
    "normalization": _normalization,
    "toolkit_version": _simple(lambda v: isinstance(v, str), "a version string"),
    "data": _simple(lambda v: isinstance(v, str), "a data set spec (str)"),
    "weights": _simple(lambda v: isinstance(v, str), "a file path (str)"),
    "classes": _simple(_strings, "a list of class names (str)"),
    "input_size": _simple(
        lambda v: isinstance(v, list) and len(v) == 3 and all(_count(s, 1) for s in v),
        "[C, H, W], positive integers",
    ),
    "recipe": _recipe,
    "seed": _simple(_count, "an integer >= 0"),
    "epochs": _simple(_count, "an integer >= 0"),
    "test_accuracy": _simple(lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "trained": _simple(lambda v: isinstance(v, bool), "true or false"),
    "history": _history,
}


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_metadata(meta: dict, source) -> dict:
    """``meta`` itself if every known field has its type and shape, else :class:`UserError`.

    The message names the file and the field, says what was expected and what is there.

    Examples
    --------
    >>> validate_metadata({"arch": "convpool_c", "seed": 0}, "net.safetensors")["seed"]
    0
    >>> validate_metadata({"normalization": {}}, "net.safetensors")
    Traceback (most recent call last):
    ...
    invert.errors.UserError: net.safetensors: metadata field 'normalization' must be {"mean": \
[C numbers], "std": [C positive numbers]}; got {} (the file is damaged or was edited by hand)
    """
    for name, validate in _FIELDS.items():
        value = meta.get(name)
        if value is None:
            continue
        try:
            validate(value, meta)
        except _Bad as bad:
            field, expected = bad.args
            where = field or name
            part = value
            for step in where.replace("]", "").replace("[", ".").split(".")[1:]:
                part = part[int(step)] if isinstance(part, list) else part.get(step)
            raise UserError(
                f"{source}: metadata field {where!r} must be {expected}; got {_shown(part)} "
                f"(the file is damaged or was edited by hand)"
            ) from None
    return meta


def model_metadata(model, *, arch: str | None = None, **fields) -> dict:
    """The metadata of ``model``: architecture, configuration, normalization, toolkit version.

    ``arch`` overrides the model's own ``arch`` (a spec such as ``FILE.py:make``);
    ``fields`` are added as they are (``trained``, ``weights``, or
    :func:`training_metadata`). ``config`` and ``normalization`` are null for a model
    without them.

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> meta = model_metadata(create_model("convpool_c", width=0.25), trained=False)
    >>> meta["arch"], meta["config"]["width"], len(meta["normalization"]["mean"]), meta["trained"]
    ('convpool_c', 0.25, 3, False)
    """
    from invert.version import __version__

    config = getattr(model, "config", None)
    normalize = getattr(model, "normalize", None)
    normalization = None
    if normalize is not None and hasattr(normalize, "statistics"):
        mean, std = normalize.statistics()
        normalization = {"mean": mean, "std": std}
    return {
        "arch": arch if arch is not None else getattr(model, "arch", None),
        "config": dict(config) if config is not None else None,
        "normalization": normalization,
        "toolkit_version": __version__,
        **fields,
    }


def training_metadata(train_set, *, recipe, seed: int, history: list) -> dict:
    """What a training run adds to its model's metadata: data, classes, recipe, history.

    Examples
    --------
    >>> import torch
    >>> from invert.data import ImageDataset
    >>> from invert.train.recipe import Recipe
    >>> data = ImageDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], ["a", "b"])
    >>> meta = training_metadata(data, recipe=Recipe(), seed=0, history=[])
    >>> meta["classes"], meta["input_size"], meta["epochs"], meta["test_accuracy"]
    (['a', 'b'], [3, 8, 8], 0, None)
    """
    import torch

    last = history[-1] if history else {}
    image, _ = train_set[0]
    return {
        "data": getattr(train_set, "spec", None),
        "classes": list(getattr(train_set, "classes", []) or []),
        "input_size": list(torch.as_tensor(image).shape),
        "recipe": recipe.to_dict(),
        "seed": seed,
        "epochs": len(history),
        "test_accuracy": last.get("test_accuracy"),
        "history": history,
    }
