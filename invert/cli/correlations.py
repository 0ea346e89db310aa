"""``crelu correlations``: correlations of CReLU outgoing weights, pair vs non-pair (Table 6)."""

from __future__ import annotations

from functools import partial

from .common import (
    Command,
    Run,
    add_layers_argument,
    add_model_arguments,
    add_table_arguments,
    emit_rows,
    layer_list,
    load_model_from_args,
    print_notes,
)

__all__ = ["COMMANDS"]


def _absolute_option(p) -> None:
    p.add_argument("--absolute", action="store_true", help="average |cos| instead of cos")


def _correlations(run: Run) -> int:
    import warnings

    from theory.correlations import outgoing_correlations

    args = run.args
    model, _ = load_model_from_args(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        stats = outgoing_correlations(model, layers=layer_list(args.layers), absolute=args.absolute)
    print_notes(run, caught)
    emit_rows(run, [s.row() for s in stats.values()])
    return 0


COMMANDS = (
    Command(
        "correlations",
        run=_correlations,
        help="correlations of CReLU outgoing weights, pair vs non-pair (Table 6)",
        description="For each CReLU layer followed by a conv layer: cosine between the "
        "next layer's weights on the positive and the negative phase of the same filter "
        "(pair) and of different filters (non-pair), mean and std.",
        arguments=(
            add_model_arguments,
            partial(add_layers_argument, help="comma-separated CReLU layers (default: all)"),
            _absolute_option,
            add_table_arguments,
        ),
    ),
)
