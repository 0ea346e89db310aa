"""Subcommands ``crelu frame-bounds`` and ``crelu pooling``.

Both take a model SPEC as :func:`invert.train.loader.load_model` understands it: a checkpoint
path, ``MODEL@DATA`` (trained with ``--recipe`` and cached on a miss, unless
``--no-train``) or a bare zoo name (fresh random weights, which is what frame bounds
of a random initialisation need). Tables go to stdout; ``--json`` / ``--csv`` print
the same rows in those formats.
"""

from __future__ import annotations

import math
import sys

from invert.cli import add_model_arguments, emit, load_model_from_args

_FRAME_COLUMNS = ["layer", "shape", "stride", "input", "A", "B", "ratio"]
_RANDOM_COLUMNS = ["A_random", "B_random", "ratio_random"]
_POOL_COLUMNS = [
    "layer", "filters", "pool", "input", "images", "equations", "rank", "input_dim",
    "rel_error", "A", "A_nonzero",
]  # fmt: skip


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "frame-bounds",
        help="frame bounds A, B and B/A of every conv layer, with a random-filter baseline",
        description="For every conv layer: the extreme eigenvalues A and B of T^T T over "
        "the layer's input space (A = 0 when some input is invisible to the layer), "
        "the condition B/A, and the same for Gaussian filters of the same shape and "
        "per-filter norms. Circular padding is exact by FFT; zero padding is exact "
        "(dense) on small inputs and iterative (Lanczos) on large ones.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--input-size",
        type=int,
        help="side of the network input (default: the zoo model's native size, else 32)",
    )
    p.add_argument("--padding", default="circular", choices=("circular", "zeros"))
    p.add_argument("--layers", help="comma-separated conv layers (default: all)")
    p.add_argument("--no-random", action="store_true", help="skip the random-filter baseline")
    p.add_argument("--seed", type=int, default=0, help="seed of the random filters")
    _format_arguments(p)
    p.set_defaults(run=_frame_bounds)

    p = subparsers.add_parser(
        "pooling",
        help="what max-pooling switches keep: switch-based reconstruction metrics",
        description="Our definition (the paper's supplement is unavailable): each layer "
        "as conv + CReLU + max-pool; the pooled values and their switches give linear "
        "equations on the pre-activation; the least-squares reconstruction's relative "
        "error, the rank of the selected rows and their frame bounds (A over the input "
        "space, 0 below full rank; A_nonzero on the recoverable part), means over crops "
        "of the embedded photographs, for the learned and for random filters.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--layer",
        action="append",
        help="conv layer (repeat or comma-separate; default: layers followed by max-pooling)",
    )
    p.add_argument("--n-images", type=int, default=8, help="crops per layer (default: 8)")
    p.add_argument(
        "--image-size",
        type=int,
        help="side of the crops (default: per layer, the largest of 32..4 whose layer input "
        "is small enough for the dense rank)",
    )
    p.add_argument(
        "--pool", type=int, help="k: k x k / k pooling for layers without their own pooling"
    )
    p.add_argument("--no-random", action="store_true", help="skip the random-filter baseline")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and random filters")
    _format_arguments(p)
    p.set_defaults(run=_pooling)


def _format_arguments(p) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print JSON instead of a table")
    group.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def _names(values) -> list[str] | None:
    if not values:
        return None
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    if not names:
        raise ValueError("give at least one layer name")
    return names


def _positive(value, option):
    if value is not None and value < 1:
        raise ValueError(f"{option} must be a positive integer; got {value}")


def _native_size(model) -> int:
    from invert.nn.zoo import list_models, model_info

    arch = getattr(model, "arch", None)
    return model_info(arch)["input_size"] if arch in list_models() else 32


def _clean(rows: list[dict]) -> list[dict]:
    """JSON has no inf or nan: write them as strings."""
    out = []
    for row in rows:
        out.append(
            {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in row.items()}
        )  # fmt: skip
    return out


def _emit(args, rows, columns):
    if args.json:
        emit(_clean(rows), as_json=True)
    elif args.csv:
        emit(rows, as_csv=True)
    else:
        emit(rows, columns=[c for c in columns if any(c in r for r in rows)])
        notes = [f"{r['layer']}: {r['note']}" for r in rows if r.get("note")]
        for note in notes:
            print(f"note: {note}", file=sys.stderr)


def _frame_bounds(args) -> int:
    from theory.frames import checkpoint_frame_bounds

    _positive(args.input_size, "--input-size")
    model, device = load_model_from_args(args)
    size = args.input_size or _native_size(model)
    rows = checkpoint_frame_bounds(
        model, size, padding=args.padding, random_baseline=not args.no_random,
        seed=args.seed, layers=_names([args.layers] if args.layers else None), device=device,
    )  # fmt: skip
    columns = _FRAME_COLUMNS + ([] if args.no_random else _RANDOM_COLUMNS)
    _emit(args, rows, columns)
    return 0


def _pooling(args) -> int:
    from theory.pooling import pooling_metrics

    _positive(args.n_images, "--n-images")
    _positive(args.image_size, "--image-size")
    _positive(args.pool, "--pool")
    model, device = load_model_from_args(args)
    rows = pooling_metrics(
        model, _names(args.layer), n_images=args.n_images, image_size=args.image_size,
        pool=args.pool, random_baseline=not args.no_random, seed=args.seed, device=device,
    )  # fmt: skip
    _emit(args, rows, _POOL_COLUMNS)
    return 0
