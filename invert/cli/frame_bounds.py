"""``crelu frame-bounds``: frame bounds frame_A, frame_B and their ratio of every conv layer.

The model SPEC is a checkpoint path, ``MODEL@DATA`` (trained with ``--recipe`` and
cached on a miss, unless ``--no-train``), a bare zoo name (fresh random weights, which is
what frame bounds of a random initialisation need) or a reference architecture with
``--weights`` (your own state dict).
"""

from __future__ import annotations

from .common import (
    Command,
    Run,
    add_image_size_argument,
    add_layers_argument,
    add_random_seed_argument,
    positive_int,
)

__all__ = ["COMMANDS"]


def _options(p) -> None:
    add_image_size_argument(p, "side of the network input (default: the model's own input size)")
    p.add_argument(
        "--padding", default="circular", choices=("circular", "zeros"),
        help="boundary model of every layer (default: circular, exact by FFT)",
    )  # fmt: skip
    add_layers_argument(p, "comma-separated conv layers (default: all)")
    p.add_argument(
        "--max-iter", type=positive_int, default=30, metavar="N",
        help="zero padding on large inputs: products of T^T T per layer (default 30; about "
        "40 s for VGG-16 at 224 on two cores); more products tighten A and B",
    )  # fmt: skip
    p.add_argument("--no-random", action="store_true", help="skip the random-filter baseline")
    add_random_seed_argument(p, "seed of the random filters (default 0)")


def _frame_bounds(run: Run) -> int:
    from invert.display import FRAME_COLUMNS, RANDOM_FRAME_COLUMNS, frame_bounds_rows
    from invert.validation import check_positive_int
    from theory.frames import checkpoint_frame_bounds

    args = run.args
    check_positive_int(args.image_size, name="--image-size", allow_none=True)  # before the load
    model, device = run.load_model()
    layers = checkpoint_frame_bounds(
        model, run.image_size(model), padding=args.padding,
        random_baseline=not args.no_random, seed=args.random_seed, layers=run.layers(),
        device=device, progress=not args.quiet, max_iter=args.max_iter,
    )  # fmt: skip
    rows = frame_bounds_rows(layers, random_baseline=not args.no_random)
    run.emit(rows, FRAME_COLUMNS + ([] if args.no_random else RANDOM_FRAME_COLUMNS))
    if any(row["frame_ratio"] == float("inf") for row in rows):
        run.note(
            "frame_ratio inf: frame_A = 0, some nonzero input gives a zero output (the shifted "
            "filters are not a frame; B / A is infinite, not undefined)",
        )
    return 0


COMMANDS = (
    Command(
        "frame-bounds",
        run=_frame_bounds,
        help="frame bounds frame_A, frame_B and frame_ratio of every conv layer, with a "
        "random-filter baseline",
        description="For every conv layer: the extreme eigenvalues frame_A and frame_B of "
        "T^T T over the layer's input space, the layer alone (frame_A = 0 when some input is "
        "invisible to the layer), the condition frame_ratio = B/A, and the same for Gaussian "
        "filters (random_A, random_B, random_ratio) of the same shape and "
        "per-filter norms. Circular padding is exact by FFT; zero padding is exact "
        "(dense) on small inputs and for 1x1 kernels, and iterative (a Lanczos run with a "
        "budget of 30 products) on large ones, where a row that misses the tolerance says "
        "so: frame_A is then an upper bound and frame_B a lower one.",
        loads_model=True,
        arguments=(_options,),
        table="a table",
    ),
)
