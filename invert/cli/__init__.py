"""The ``crelu`` command line (also ``python -m invert``).

One module per subcommand, each declaring its subcommands as :class:`~.common.Command`
values in ``COMMANDS``; the run context, the option vocabulary, model loading, output and
the one error handler live in :mod:`.common`. This package is the only part of
:mod:`invert` that may import :mod:`theory` and :mod:`figures`. ``--debug`` (or
``CRELU_DEBUG=1``) shows a traceback instead of the one-line error.
"""

from __future__ import annotations

import importlib
import os
import sys

from .common import DEBUG_HELP, Parser, Run, UserError, emit, run_safely

__all__ = ["UserError", "build_parser", "emit", "main"]

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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        for command in importlib.import_module(f"{__name__}.{name}").COMMANDS:
            command.register(subparsers)
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
    run = Run(args, loader=load_model)
    debug = args.debug or bool(os.environ.get("CRELU_DEBUG"))
    status = run_safely(run.prog, args.run, run, debug=debug)
    if status == 0:
        sys.stdout.flush()  # the output first, then what explains it
        run.flush_notes()
    return status


if __name__ == "__main__":
    sys.exit(main())
