"""The ``crelu`` command line (also ``python -m invert``).

One module per subcommand, each with a ``register(subparsers)`` function; the option
vocabulary, model loading, output and the one error handler live in :mod:`.common`.
This package is the only part of :mod:`invert` that may import :mod:`theory` and
:mod:`figures`. Set ``CRELU_DEBUG=1`` to see a traceback instead of the one-line error.
"""

from __future__ import annotations

import importlib
import sys

from .common import Parser, UserError, emit, flush_notes, note, print_table, run_safely

__all__ = ["UserError", "build_parser", "emit", "main", "print_table"]

# subcommand modules, in the order of `crelu --help` (models: models and info; train:
# train and evaluate)
COMMAND_MODULES = (
    "models",
    "train",
    "reconstruct",
    "frame_bounds",
    "pooling",
    "pairing",
    "invariance",
    "correlations",
    "figures",
)


def build_parser() -> Parser:
    """The ``crelu`` parser with every subcommand."""
    from invert.version import __version__

    parser = Parser(
        prog="crelu",
        description="Reconstruction, frame bounds and filter analyses for CReLU networks.",
    )
    parser.add_argument("--version", action="version", version=f"crelu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None, *, load_model=None) -> int:
    """Run ``crelu`` with ``argv``; returns the exit status.

    ``load_model`` replaces :func:`invert.load_model` for the commands that load a model
    (tests pass small models this way, without training).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    args.load_model = load_model
    status = run_safely(f"crelu {args.command}", args.run, args)
    if status == 0:
        sys.stdout.flush()  # the output first, then what explains it
        for text in getattr(args, "deprecations", None) or []:  # after the run's own notes
            note(args, text)
        flush_notes(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
