"""``crelu models`` (the registry) and ``crelu info`` (what a model's metadata holds)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import Command, Run, add_quiet_argument, emit, is_trained_spec

__all__ = ["COMMANDS"]

_MODEL_COLUMNS = ["name", "family", "input_size", "parameters", "summary"]


def _parameter_count(name: str) -> int:
    """Parameters of the zoo architecture ``name`` at its defaults (no memory allocated)."""
    import torch

    from invert.nn.zoo import create_model

    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


def _models(run: Run) -> int:
    from invert.nn.zoo import list_models, model_info

    rows = [{**model_info(name), "parameters": _parameter_count(name)} for name in list_models()]
    run.emit(rows, _MODEL_COLUMNS)
    return 0


def _source(args) -> str | None:
    """The file the model came from: the checkpoint, the cache entry or the weights."""
    if getattr(args, "weights", None):
        return str(args.weights)
    spec = args.spec or ""
    if Path(spec).expanduser().is_file():
        return str(Path(spec).expanduser())
    if is_trained_spec(spec):
        from invert.train.loader import cache_path

        try:
            return str(cache_path(spec, recipe=args.recipe, cache_dir=args.cache_dir,
                                  seed=args.seed or 0))  # fmt: skip
        except (ValueError, TypeError):
            return None
    return None


def _last(history: list[dict], key: str):
    return history[-1].get(key) if history else None


def _summary(model, source: str | None) -> dict:
    from invert.nn import model_input_size

    meta = getattr(model, "metadata", None) or {}
    history = meta.get("history") or []
    tested = [h["test_accuracy"] for h in history if h.get("test_accuracy") is not None]
    recipe = meta.get("recipe") or {}
    config = meta.get("config") or {}
    return {
        "file": source,
        "arch": meta.get("arch"),
        "config": meta.get("config"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": meta.get("data"),
        "num_classes": len(meta.get("classes") or []) or config.get("num_classes"),
        "classes": meta.get("classes"),
        # a checkpoint's training size, else the architecture's own (224 for resnet18)
        "input_size": meta.get("input_size") or model_input_size(model),
        "normalization": meta.get("normalization"),
        "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe,
        "seed": meta.get("seed"),
        "epochs": len(history),
        "final_train_loss": _last(history, "train_loss"),
        "final_train_accuracy": _last(history, "train_accuracy"),
        "final_test_accuracy": tested[-1] if tested else None,
        "best_test_accuracy": max(tested) if tested else None,
        "training_seconds": sum(h.get("seconds") or 0 for h in history) if history else None,
        "toolkit_version": meta.get("toolkit_version"),
        "history": history,
        "metadata": {k: v for k, v in meta.items() if k not in _SHOWN},
    }


_SHOWN = {
    "format", "format_version", "arch", "config", "data", "classes", "input_size",
    "normalization", "recipe", "seed", "history", "toolkit_version", "epochs", "test_accuracy",
}  # fmt: skip


def _history_rows(history: list[dict]) -> list[dict]:
    return [
        {
            "epoch": h.get("epoch"),
            "lr": h.get("lr"),
            "train_loss": h.get("train_loss"),
            "train_acc": h.get("train_accuracy"),
            "test_acc": h.get("test_accuracy"),
            "seconds": h.get("seconds"),
        }
        for h in history
    ]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and isinstance(value[0], float):
        return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "-" if value is None else str(value)


def _info(run: Run) -> int:
    args = run.args
    model, _ = run.load_model()
    info = _summary(model, _source(args))
    if args.json:
        from invert.display import write_json

        write_json(sys.stdout, info)
        return 0
    if args.csv:
        emit(_history_rows(info["history"]), as_csv=True,
             columns=["epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds"])  # fmt: skip
        return 0
    for key, value in info.items():
        if key == "history" or (key == "metadata" and not value):
            continue
        print(f"{key + ':':22}{_fmt(value)}")
    if info["history"]:
        print("history:")
        emit(_history_rows(info["history"]))
    return 0


COMMANDS = (
    Command(
        "models",
        run=_models,
        help="list the registered models with their parameter counts",
        description="Every zoo name, its family, input size and parameter count (at the "
        "architecture's default width, with 10 classes: a recipe's width and a data set's "
        "classes change it; `crelu info SPEC` gives a trained model's own count). Where the "
        'paper reports a model\'s size, its summary gives it as "(paper: N parameters)".',
        arguments=(add_quiet_argument,),
        table="a table",
    ),
    Command(
        "info",
        run=_info,
        help="describe a model: architecture, data, normalization, training history",
        description="Architecture, data, classes, normalization, training history and "
        "parameter count of a model: a checkpoint written by crelu, MODEL@DATA (the cached "
        "model of --seed, trained first if missing unless --no-train) or a zoo name.",
        loads_model=True,
        table="the summary (--json: every field and the full history; --csv: the history, "
        "one row per epoch)",
    ),
)
