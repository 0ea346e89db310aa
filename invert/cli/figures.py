"""The ``crelu figures`` subcommand: every figure and table of the paper, and a report.

    crelu figures [--out DIR] [--data textures|cifar10:PATH|...] [--recipe tiny|fast|paper]
                  [--cache-dir DIR] [--device cpu|cuda] [--seeds N] [--jobs N] [--quiet]

The options and the run live in :mod:`figures.run_all` (``python -m figures.run_all``
takes the same); this module only declares them to ``crelu``.
"""

from __future__ import annotations

from figures.run_all import add_arguments, run_from_args

from .common import Command, Run

__all__ = ["COMMANDS"]


def _figures(run: Run) -> int:
    return run_from_args(run.args)


COMMANDS = (
    Command(
        "figures",
        run=_figures,
        help="regenerate every figure and table of the paper, with a findings report",
        description="Train (or load from the cache) the paper's models -- the five "
        "ConvPool-CNN-C variants of Table 1 and the AlexNet-layout pair of Figs. 1-3, one "
        "training run per seed (--seeds; the stderr lines say how many and which) -- draw "
        "Figs. 1-5, compute Tables 1 and 6, the frame-bounds and pooling tables, and check "
        "the paper's findings F1-F6 (F6: joint inversion, ours) with a verdict each, in "
        "report.md and report.json.",
        arguments=(add_arguments,),
    ),
)
