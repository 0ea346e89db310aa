"""``crelu models`` (the registry) and ``crelu info`` (what a checkpoint holds)."""

from __future__ import annotations

import json
import sys

from .common import add_table_arguments, emit, emit_rows

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the registered models")
    add_table_arguments(p)
    p.set_defaults(run=_models)

    p = subparsers.add_parser(
        "info",
        help="describe a checkpoint",
        description="Architecture, data, classes, normalization, training history and "
        "parameter count of a checkpoint written by crelu.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .safetensors checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON (with the full history)")
    p.set_defaults(run=_info)


def _models(args) -> int:
    from invert.nn.zoo import list_models, model_info

    emit_rows(args, [model_info(name) for name in list_models()])
    return 0


def _summary(path: str) -> dict:
    from invert.train.checkpoints import load_checkpoint

    model = load_checkpoint(path, device="cpu")
    meta = model.metadata
    history = meta.get("history") or []
    tested = [h["test_accuracy"] for h in history if h.get("test_accuracy") is not None]
    recipe = meta.get("recipe") or {}
    return {
        "file": str(path),
        "arch": meta.get("arch"),
        "config": meta.get("config"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": meta.get("data"),
        "num_classes": len(meta.get("classes") or [])
        or (meta.get("config") or {}).get("num_classes"),
        "classes": meta.get("classes"),
        "input_size": meta.get("input_size"),
        "normalization": meta.get("normalization"),
        "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe,
        "seed": meta.get("seed"),
        "epochs": len(history),
        "final_train_loss": history[-1].get("train_loss") if history else None,
        "final_train_accuracy": history[-1].get("train_accuracy") if history else None,
        "final_test_accuracy": tested[-1] if tested else None,
        "best_test_accuracy": max(tested) if tested else None,
        "training_seconds": sum(h.get("seconds") or 0 for h in history) if history else None,
        "toolkit_version": meta.get("toolkit_version"),
        "history": history,
        "metadata": {k: v for k, v in meta.items() if k not in _SHOWN},
    }


_SHOWN = {
    "format",
    "format_version",
    "arch",
    "config",
    "data",
    "classes",
    "input_size",
    "normalization",
    "recipe",
    "seed",
    "history",
    "toolkit_version",
    "epochs",
    "test_accuracy",
}


def _info(args) -> int:
    info = _summary(args.checkpoint)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0

    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list) and value and isinstance(value[0], float):
            return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
        if isinstance(value, dict):
            return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
        if isinstance(value, list):
            return ", ".join(map(str, value))
        return "-" if value is None else str(value)

    for key, value in info.items():
        if key == "history":
            continue
        if key == "metadata" and not value:
            continue
        print(f"{key + ':':22}{fmt(value)}")
    if info["history"]:
        print("history:")
        rows = [
            {
                "epoch": h.get("epoch"),
                "lr": h.get("lr"),
                "train_loss": h.get("train_loss"),
                "train_acc": h.get("train_accuracy"),
                "test_acc": h.get("test_accuracy", ""),
                "seconds": h.get("seconds"),
            }
            for h in info["history"]
        ]
        emit(rows)
    return 0
