"""The ``crelu figures`` subcommand: every figure and table of the paper, and a report.

    crelu figures [--out DIR] [--data textures|cifar10:PATH|...] [--recipe tiny|fast|paper]
                  [--cache-dir DIR] [--device cpu|cuda] [--jobs N] [--quiet]

The options and the run live in :mod:`figures.run_all` (``python -m figures.run_all``
takes the same); this module only registers them with ``crelu``.
"""

from __future__ import annotations

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "figures",
        help="regenerate every figure and table of the paper, with a findings report",
        description="Train (or load from the cache) the five ConvPool-CNN-C models, draw "
        "Figs. 1-5, compute Tables 1 and 6, the frame-bounds and pooling tables, and check "
        "the paper's findings F1-F5 with a verdict each, in report.md and report.json.",
    )
    from figures.run_all import add_arguments, run_from_args

    add_arguments(p)
    p.set_defaults(run=run_from_args)
