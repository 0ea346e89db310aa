"""``crelu correlations``: correlations of CReLU outgoing weights, pair vs non-pair (Table 6)."""

from __future__ import annotations

from functools import partial

from .common import Command, Run, add_layers_argument

__all__ = ["COMMANDS"]


def _absolute_option(p) -> None:
    p.add_argument("--absolute", action="store_true", help="average |cos| instead of cos")


def _correlations(run: Run) -> int:
    import warnings

    from theory.correlations import outgoing_correlations

    args = run.args
    model, _ = run.load_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        stats = outgoing_correlations(model, layers=run.layers(), absolute=args.absolute)
    run.note_warnings(caught)
    run.emit([s.row() for s in stats.values()])
    return 0


COMMANDS = (
    Command(
        "correlations",
        run=_correlations,
        help="correlations of CReLU outgoing weights, pair vs non-pair (Table 6)",
        description="For each CReLU layer followed by a conv layer: cosine between the "
        "next layer's weights on the positive and the negative phase of the same filter "
        "(pair) and of different filters (non-pair), mean and std.",
        loads_model=True,
        arguments=(
            partial(add_layers_argument, help="comma-separated CReLU layers (default: all)"),
            _absolute_option,
        ),
        table="a table",
    ),
)
