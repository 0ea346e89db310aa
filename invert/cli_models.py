"""Subcommands about models: ``crelu models``, ``crelu train``, ``crelu info``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import emit

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_models)

    p = subparsers.add_parser(
        "train",
        help="train MODEL@DATA and print its test accuracy",
        description=(
            "Train a zoo model on a data set, evaluating on its test split after every "
            "epoch. Without --out the result goes to the model cache (where "
            "load_model('MODEL@DATA') finds it); with --out it is written there, with a "
            "resumable training state next to it (same name, suffix .state.pt): run the "
            "same command again to resume an interrupted run."
        ),
        epilog=(
            "examples: crelu train convpool_c_crelu_half@textures; "
            "crelu train vgg_crelu1@cifar10:/data/cifar --recipe paper --out vgg.safetensors"
        ),
    )
    p.add_argument(
        "spec",
        metavar="MODEL@DATA",
        help="e.g. convpool_c_crelu@textures or vgg@cifar10:PATH (see `crelu models`)",
    )
    p.add_argument(
        "--recipe",
        default="fast",
        choices=("tiny", "fast", "paper"),
        help="tiny: seconds (tests); fast: minutes on a CPU (default); paper: the paper's "
        "CIFAR setup, for a GPU",
    )
    p.add_argument("--out", metavar="PATH", help="checkpoint file to write (default: the cache)")
    p.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs")
    p.add_argument("--lr", type=_positive_float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=_positive_int, help="override the recipe's batch size")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over even if a training state from an interrupted run exists",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=_train)

    p = subparsers.add_parser(
        "info",
        help="describe a checkpoint",
        description="Architecture, data, classes, normalization, training history and "
        "parameter count of a checkpoint written by crelu.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .safetensors checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON (with the full history)")
    p.set_defaults(run=_info)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _models(args) -> int:
    from .zoo import list_models, model_info

    emit([model_info(name) for name in list_models()], as_json=args.json)
    return 0


def _train(args) -> int:
    from .checkpoints import resolve_device
    from .loader import cache_path, load_model
    from .train import get_recipe, parse_model_spec, train_from_spec

    name, _ = parse_model_spec(args.spec)
    recipe = get_recipe(args.recipe, arch=name).replace(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size
    )
    device = resolve_device(args.device)
    progress = not args.quiet
    if args.out:
        model = train_from_spec(
            args.spec,
            recipe=recipe,
            out=args.out,
            resume=not args.no_resume,
            device=device,
            progress=progress,
            seed=args.seed,
        )
        where = Path(args.out)
    else:
        where = cache_path(args.spec, recipe=recipe, seed=args.seed)
        if args.no_resume:
            state = where.with_name(where.name.replace(".safetensors", ".partial.state.pt"))
            state.unlink(missing_ok=True)
        model = load_model(
            args.spec, recipe=recipe, device=device, progress=progress, seed=args.seed
        )
    meta = model.metadata
    accuracy = meta.get("test_accuracy")
    shown = "n/a" if accuracy is None else f"{accuracy:.4f}"
    print(f"test accuracy: {shown}")
    print(
        f"{name} on {meta.get('data')}, recipe {recipe.name}, {meta.get('epochs')} epochs, "
        f"{len(meta.get('classes') or [])} classes -> {where}",
        file=sys.stderr,
    )
    return 0


def _summary(path: str) -> dict:
    from .checkpoints import load_checkpoint

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
