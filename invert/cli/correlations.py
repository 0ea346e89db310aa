"""``crelu correlations``: correlations of CReLU outgoing weights, pair vs non-pair (Table 6)."""

from __future__ import annotations

from .common import (
    add_layers_argument,
    add_model_arguments,
    add_table_arguments,
    emit_rows,
    layer_list,
    load_model_from_args,
    print_notes,
)

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "correlations",
        help="correlations of CReLU outgoing weights, pair vs non-pair (Table 6)",
        description="For each CReLU layer followed by a conv layer: cosine between the "
        "next layer's weights on the positive and the negative phase of the same filter "
        "(pair) and of different filters (non-pair), mean and std.",
    )
    add_model_arguments(p)
    add_layers_argument(p, "comma-separated CReLU layers (default: all)", old=())
    p.add_argument("--absolute", action="store_true", help="average |cos| instead of cos")
    add_table_arguments(p)
    p.set_defaults(run=_correlations)


def _correlations(args) -> int:
    import warnings

    from theory.correlations import outgoing_correlations

    model, _ = load_model_from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        stats = outgoing_correlations(model, layers=layer_list(args.layers), absolute=args.absolute)
    print_notes(args, caught)
    emit_rows(args, [s.row() for s in stats.values()])
    return 0
