"""``crelu pooling``: what max-pooling switches keep (switch-based reconstruction metrics)."""

from __future__ import annotations

from .common import (
    Command,
    Run,
    add_image_size_argument,
    add_layers_argument,
    add_random_seed_argument,
)

__all__ = ["COMMANDS"]

_COLUMNS = [
    "layer", "filters", "pool", "input", "images", "equations", "rank", "input_dim",
    "rel_error", "A", "A_nonzero",
]  # fmt: skip


def _options(p) -> None:
    add_layers_argument(p, "conv layers, comma-separated (default: layers followed by max-pooling)")
    p.add_argument("--n-images", type=int, default=8, help="crops per layer (default: 8)")
    add_image_size_argument(
        p, "side of the crops (default: per layer, the largest of 32..4 whose layer input is "
        "small enough for the dense rank)",
    )  # fmt: skip
    p.add_argument(
        "--pool", type=int,
        help="k: k x k / k pooling for layers without their own pooling",
    )  # fmt: skip
    p.add_argument("--no-random", action="store_true", help="skip the random-filter baseline")
    add_random_seed_argument(p, "seed of the crops and random filters (default 0)")


def _pooling(run: Run) -> int:
    from invert.display import pooling_rows
    from invert.validation import check_positive_int
    from theory.pooling import pooling_metrics

    args = run.args
    check_positive_int(args.n_images, name="--n-images")
    check_positive_int(args.image_size, name="--image-size", allow_none=True)
    check_positive_int(args.pool, name="--pool", allow_none=True)
    model, device = run.load_model()
    blocks = pooling_metrics(
        model, run.layers(), n_images=args.n_images, image_size=args.image_size,
        pool=args.pool, random_baseline=not args.no_random, seed=args.random_seed,
        device=device, progress=not args.quiet,
    )  # fmt: skip
    rows = pooling_rows(blocks)
    run.emit(rows, _COLUMNS)
    images = rows[0]["images"] if rows else args.n_images
    run.note(
        f"equations, rank, rel_error, A and A_nonzero are means over the {images} crops of "
        f"each layer (so a rank can be fractional); rank out of input_dim; A = 0 below full "
        f"rank, A_nonzero: the lower bound on the part the switches do determine",
    )
    return 0


COMMANDS = (
    Command(
        "pooling",
        run=_pooling,
        help="what max-pooling switches keep: switch-based reconstruction metrics",
        description="Our definition (the paper's supplement is unavailable): each layer "
        "as conv + CReLU + max-pool; the pooled values and their switches give linear "
        "equations on the pre-activation; the least-squares reconstruction's relative "
        "error, the rank of the selected rows and their frame bounds (A over the input "
        "space, 0 below full rank; A_nonzero on the recoverable part), means over crops "
        "of the embedded photographs, for the learned and for random filters.",
        loads_model=True,
        arguments=(_options,),
        table="a table",
    ),
)
