"""``crelu train`` and ``crelu evaluate`` (the paper's protocols).

Both also run under ``torchrun`` (one process per GPU, data-parallel; see
:mod:`invert.train.distributed`): results are printed by rank 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import (
    Command,
    Run,
    UserError,
    add_image_size_argument,
    add_quiet_argument,
    at_least_two,
    emit,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["COMMANDS"]


def _train_spec(p) -> None:
    p.add_argument("spec", metavar="MODEL@DATA", help="e.g. convpool_c_crelu@textures or "
                   "vgg@cifar10:PATH (see `crelu models`)")  # fmt: skip


def _evaluate_spec(p) -> None:
    p.add_argument(
        "spec",
        metavar="SPEC",
        help="MODEL@DATA (single, kfold; tencrop trains it into the cache if needed), or a "
        "checkpoint file (tencrop)",
    )
    p.add_argument(
        "--protocol", required=True, choices=("single", "kfold", "tencrop"),
        help="single: hold out, retrain to the held-out loss; kfold: k models, Average and "
        "Vote; tencrop: centre crop and 10 patches of a trained model",
    )  # fmt: skip
    p.add_argument("--folds", type=at_least_two, default=10, help="k for kfold (default 10)")
    p.add_argument("--holdout", type=fraction, default=0.1,
                   help="share of the training set held out by single (default 0.1)")  # fmt: skip
    p.add_argument("--no-stratify", action="store_true",
                   help="split folds / the held-out part without balancing classes")  # fmt: skip


def _recipe_options(p) -> None:
    """The recipe and its overrides."""
    p.add_argument(
        "--recipe",
        default="fast",
        choices=("tiny", "fast", "paper"),
        help="tiny: seconds (tests); fast: minutes on a CPU (default); paper: the paper's "
        "CIFAR setup, for a GPU",
    )
    p.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    p.add_argument("--lr", type=positive_float, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=positive_int, help="override the recipe's batch size")


def _train_out(p) -> None:
    p.add_argument(
        "--out", metavar="PATH",
        help="checkpoint file to write (.safetensors; default: the model cache), with its "
        "resumable training state beside it",
    )  # fmt: skip
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if an interrupted run left a training state")  # fmt: skip


def _evaluate_out(p) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        help="single/kfold: folder for each model's checkpoint and training state (rerun "
        "the command to resume)",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="retrain even if --out holds (partial) runs"
    )


def _ten_crop_options(p) -> None:
    p.add_argument("--data", help="tencrop: the data set (default: from SPEC)")
    add_image_size_argument(p, "tencrop: crop side (default: the model's input size)")
    p.add_argument(
        "--resize",
        type=positive_int,
        help="tencrop: side the test images are loaded at (default: crop * 256 / 224)",
    )


def _device_and_seed(p) -> None:
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")


def _train(run: Run) -> int:
    from invert.train.batches import per_rank_batch_size
    from invert.train.distributed import distributed, distributed_environment
    from invert.train.recipe import get_recipe
    from invert.train.spec import parse_model_spec

    args = run.args
    name, _ = parse_model_spec(args.spec)
    recipe = get_recipe(args.recipe, arch=name).replace(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size
    )
    env = distributed_environment()  # under torchrun: check before waiting for the others
    if env is not None:
        per_rank_batch_size(recipe.batch_size, env["world_size"])
    with distributed(device=args.device) as context:
        return _train_run(args, name, recipe, context)


def _train_run(args, name, recipe, context) -> int:
    from invert.device import resolve_device
    from invert.train.loader import cache_path, partial_path
    from invert.train.spec import fit_spec
    from invert.train.state import training_state_path

    device = context.device if context is not None else resolve_device(args.device)
    main = context is None or context.is_main
    run = _run_settings(args, recipe, device, main)
    if args.out:
        model = fit_spec(args.spec, run)
        where = Path(args.out)
    else:
        where = cache_path(args.spec, recipe=recipe, seed=args.seed)
        if args.no_resume and main:
            training_state_path(partial_path(where)).unlink(missing_ok=True)
        model = _trained_model(args.spec, run, context)
    if not main:
        return 0
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


def _run_settings(args, recipe, device, main: bool):
    """The run's settings from the command line; progress on rank 0 only."""
    from invert.train.settings import RunSettings

    return RunSettings(recipe=recipe, out=args.out or None, resume=not args.no_resume,
                       device=device, progress=not args.quiet and main,
                       seed=args.seed)  # fmt: skip


def _cached_model(spec, run, **options):
    """``load_model(spec)`` with the run's recipe, device, progress and seed."""
    from invert.train.loader import load_model

    return load_model(spec, recipe=run.recipe, device=run.device, progress=run.progress,
                      seed=run.seed, **options)  # fmt: skip


def _trained_model(spec, run, context):
    """The cached model of ``spec`` (trained into the cache on a miss). Under torchrun,
    rank 0 owns the cache entry (lock, partial file, rename: :func:`load_model`); the
    other ranks join the same training run without touching the cache."""
    from invert.train.distributed import broadcast_object
    from invert.train.spec import fit_spec

    if context is None:
        return _cached_model(spec, run)
    cached = None
    if context.is_main:
        try:
            cached = _cached_model(spec, run, train_if_missing=False)
        except FileNotFoundError:
            cached = None
    if broadcast_object(cached is not None):
        return cached
    if context.is_main:
        return _cached_model(spec, run)
    return fit_spec(spec, run.replace(out=None, resume=True))


def _evaluate(run: Run) -> int:
    from invert.train.batches import per_rank_batch_size
    from invert.train.distributed import distributed, distributed_environment
    from invert.train.recipe import get_recipe
    from invert.train.spec import parse_model_spec

    args = run.args
    if args.protocol != "tencrop":
        name, _ = parse_model_spec(args.spec)
        for dest in ("data", "image_size", "resize"):
            if getattr(args, dest) is not None:
                option = "--" + dest.replace("_", "-")
                raise UserError(f"{option} only applies to --protocol tencrop")
    else:
        name = args.spec.partition("@")[0].strip() if "@" in args.spec else None
    recipe = get_recipe(args.recipe, arch=name).replace(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size
    )
    env = distributed_environment()
    if env is not None:
        per_rank_batch_size(recipe.batch_size, env["world_size"])
    with distributed(device=args.device) as context:
        device = context.device if context is not None else None
        main = context is None or context.is_main
        if args.protocol == "tencrop":
            result = _ten_crop_run(args, recipe, device, context, main)
        else:
            result = _training_protocol(args, name, recipe, device, main)
    if main:
        _print_protocol(args, result)
    return 0


def _training_protocol(args, name, recipe, device, main) -> dict:
    from invert.device import resolve_device
    from invert.train.protocols import kfold_protocol, single_protocol
    from invert.train.spec import build_model, parse_model_spec, recipe_datasets

    _, data = parse_model_spec(args.spec)
    device = device if device is not None else resolve_device(args.device)
    train_set, test_set = recipe_datasets(name, data, recipe, seed=args.seed)
    run = _run_settings(args, recipe, device, main)
    stratified = not args.no_stratify

    def make_model():
        return build_model(name, train_set, recipe)

    if args.protocol == "single":
        result = single_protocol(make_model, train_set, test_set, holdout=args.holdout,
                                 stratified=stratified, settings=run)  # fmt: skip
    else:
        result = kfold_protocol(make_model, train_set, test_set, folds=args.folds,
                                stratified=stratified, keep_models=False,
                                settings=run)  # fmt: skip
    return {"spec": args.spec, "recipe": recipe.name, "seed": args.seed, **result.to_dict()}


def _ten_crop_run(args, recipe, device, context, main) -> dict:
    from invert.device import resolve_device
    from invert.nn import list_models, model_input_size
    from invert.train.loader import check_compatible, load_model
    from invert.train.protocols import evaluate_ten_crop, ten_crop_test_set

    device = device if device is not None else resolve_device(args.device)
    head = args.spec.partition("@")[0].strip()
    if "@" in args.spec and head in list_models() and not Path(args.spec).is_file():
        run = _run_settings(args, recipe, device, main).replace(out=None)  # into the cache
        model = _trained_model(args.spec, run, context)
        data = args.data or args.spec.partition("@")[2].strip()
    else:
        if not Path(args.spec).expanduser().is_file():
            raise FileNotFoundError(f"no such checkpoint file: {args.spec}")
        model = load_model(Path(args.spec).expanduser(), device=device)
        data = args.data or model.metadata.get("data")
        if not data:
            raise UserError(f"{args.spec} does not say which data it was trained on; pass --data")
    crop = args.image_size or model_input_size(model)
    if crop is None:
        raise UserError("the model has no zoo architecture: pass --image-size")
    used = model.metadata.get("recipe") or {}  # older checkpoints: a flat "data_options"
    trained = (used.get("data") or {}).get("options") or used.get("data_options") or {}
    test_set = ten_crop_test_set(
        data, crop_size=crop, resize=args.resize, seed=args.seed,
        data_options=trained or recipe.data.options,
    )  # fmt: skip
    check_compatible(model, test_set)
    result = evaluate_ten_crop(
        model,
        test_set,
        crop_size=crop,
        batch_size=max(1, recipe.hardware.eval_batch_size // 10),
        device=device,
        amp=recipe.hardware.amp,
        num_workers=recipe.hardware.num_workers,
    )
    import torch

    image = torch.as_tensor(test_set[0][0])
    return {
        "protocol": "tencrop",
        "spec": args.spec,
        "data": data,
        "image_size": list(image.shape[1:]),
        **result,
    }


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _print_protocol(args, result: dict) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=float)
        print()
        return
    csv = getattr(args, "csv", False)
    summary = sys.stderr if csv else sys.stdout  # CSV: the rows only on stdout
    if result["protocol"] == "single":
        rows = [
            {"quantity": "training items (held out)",
             "value": f"{result['train_items']} ({result['holdout_items']})"},
            {"quantity": "target: lowest held-out loss",
             "value": f"{result['target_loss']:.4f} (epoch {result['target_epoch']})"},
            {"quantity": "retraining epochs",
             "value": f"{result['epochs']}" + ("" if result["reached"] else " (not reached)")},
            {"quantity": "train loss", "value": f"{result['train_loss']:.4f}"},
            {"quantity": "train error %", "value": _percent(result["train_error"])},
            {"quantity": "test error % (Single)", "value": _percent(result["test_error"])},
        ]  # fmt: skip
        emit(rows, as_csv=csv)
    elif result["protocol"] == "kfold":
        rows = [
            {
                "fold": i + 1,
                "validation items": size,
                "validation error %": _percent(val),
                "test error %": _percent(test),
            }
            for i, (size, val, test) in enumerate(
                zip(result["fold_sizes"], result["validation_errors"], result["test_errors"])
            )
        ]
        emit(rows, as_csv=csv)
        print(
            f"Average: {_percent(result['average_error'])} +- "
            f"{_percent(result['standard_error'])} %   Vote: {_percent(result['vote_error'])} %",
            file=summary,
        )
    else:
        rows = [
            {"evaluation": "centre crop", "top-1 error %": _percent(result["center_top1_error"]),
             "top-5 error %": _percent(result["center_top5_error"])},
            {"evaluation": "10 patches", "top-1 error %": _percent(result["ten_crop_top1_error"]),
             "top-5 error %": _percent(result["ten_crop_top5_error"])},
        ]  # fmt: skip
        emit(rows, as_csv=csv)
        print(
            f"{result['count']} images of {result['image_size'][0]} x {result['image_size'][1]}, "
            f"crops of {result['crop_size'][0]} x {result['crop_size'][1]}",
            file=sys.stderr,
        )


COMMANDS = (
    Command(
        "train",
        run=_train,
        help="train MODEL@DATA and print its test accuracy",
        description=(
            "Train a zoo model on a data set, evaluating on its test split after every "
            "epoch. Without --out the result goes to the model cache (where "
            "load_model('MODEL@DATA') finds it, and `--seed N` picks it on the other "
            "commands); with --out it is written there, with a resumable training state "
            "next to it (same name, suffix .state.pt): run the same command again to resume "
            "an interrupted run."
        ),
        epilog=(
            "examples: crelu train convpool_c_crelu_half@textures; "
            "crelu train vgg_crelu1@cifar10:/data/cifar --recipe paper --out vgg.safetensors"
        ),
        arguments=(_train_spec, _recipe_options, _train_out, _device_and_seed, add_quiet_argument),
    ),
    Command(
        "evaluate",
        run=_evaluate,
        help="the paper's evaluation protocols: single, k-fold average/vote, 10-patch",
        description=(
            "single: train on the training set less a held-out part, note the lowest "
            "held-out loss, retrain on the whole training set until the training loss "
            "reaches it, report train and test errors (Goodfellow et al. 2013). kfold: "
            "train one model per fold on the other folds; Average = mean +- standard error "
            "of their test errors, Vote = test error of their averaged softmax "
            "probabilities. tencrop: top-1/top-5 errors of a trained model from the centre "
            "crop and from 10 patches (corners, centre, mirrored), on the test split loaded "
            "at --resize pixels. Errors are printed in percent (fractions with --json)."
        ),
        epilog=(
            "examples: crelu evaluate convpool_c_crelu@cifar10:/data/cifar --protocol kfold "
            "--recipe paper --out runs/kfold; crelu evaluate ab.safetensors --protocol tencrop "
            "--data folder:/data/imagenet"
        ),
        arguments=(
            _evaluate_spec,
            _recipe_options,
            _evaluate_out,
            _ten_crop_options,
            _device_and_seed,
            add_quiet_argument,
        ),
        table="the table (--json: every number, with per-epoch histories)",
    ),
)
