"""The ``crelu`` command line (also ``python -m invert``).

Each area keeps its subcommands in a module of its own with a
``register(subparsers)`` function; this module collects them, runs the chosen
one, and turns user mistakes into one line on stderr with exit status 2.
Set ``CRELU_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

__all__ = [
    "main",
    "UserError",
    "print_table",
    "emit",
    "add_model_arguments",
    "load_model_from_args",
]

# modules with a register(subparsers) function, in the order of `crelu --help`
COMMAND_MODULES = (
    "invert.cli.models",
    "invert.cli.reconstruct",
    "invert.cli.frames",
    "invert.cli.analyses",
    "invert.cli.figures",
)


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, exit status 2."""


# errors that mean "bad input" when they escape a command
_USER_ERRORS = (UserError, ValueError, TypeError, FileNotFoundError, PermissionError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crelu",
        description="Reconstruction, frame bounds and filter analyses for CReLU networks.",
    )
    from invert import __version__

    parser.add_argument("--version", action="version", version=f"crelu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a real import failure inside the module
                raise
            continue  # area not installed yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        print("crelu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except _USER_ERRORS as error:
        if os.environ.get("CRELU_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
        print(f"crelu {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


MODEL_HELP = (
    "checkpoint path, MODEL@DATA (e.g. convpool_c_crelu@textures; trained and cached if "
    "missing) or a zoo name (random weights)"
)


def add_model_arguments(p, *, option: str | None = None) -> None:
    """The model SPEC (positional, or the required ``option``) and how to load it."""
    if option is None:
        p.add_argument("spec", metavar="SPEC", help=MODEL_HELP)
    else:
        p.add_argument(option, dest="spec", required=True, metavar="SPEC", help=MODEL_HELP)
    p.add_argument("--recipe", default="fast", help="training recipe for MODEL@DATA on a miss")
    p.add_argument("--cache-dir", help="where MODEL@DATA checkpoints are cached")
    p.add_argument(
        "--no-train", action="store_true", help="fail instead of training a missing MODEL@DATA"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")


def load_model_from_args(args):
    """``(model, device)`` for :func:`add_model_arguments`; loader warnings become notes."""
    import warnings

    from invert.device import resolve_device
    from invert.train.loader import load_model

    device = resolve_device(args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = load_model(
            args.spec,
            recipe=args.recipe,
            device=device,
            cache_dir=args.cache_dir,
            train_if_missing=not args.no_train,
        )
    print_notes(args, caught)
    return model, device


def print_notes(args, caught) -> None:
    """Recorded warnings as one ``crelu COMMAND: note:`` line each on stderr."""
    for warning in caught:
        print(f"crelu {args.command}: note: {warning.message}", file=sys.stderr)


def print_table(rows: list[dict], *, columns: list[str] | None = None, file=None) -> None:
    """Print dict rows as an aligned text table (floats with 4 significant digits)."""
    file = file or sys.stdout
    if not rows:
        print("(no rows)", file=file)
        return
    columns = columns or list(rows[0])

    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=file)


def emit(rows: list[dict], *, as_json: bool = False, as_csv: bool = False, columns=None) -> None:
    """Write rows to stdout as a table, JSON or CSV."""
    if as_json:
        json.dump(rows, sys.stdout, indent=2, default=float)
        print()
    elif as_csv:
        import csv

        columns = columns or (list(rows[0]) if rows else [])
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print_table(rows, columns=columns)


if __name__ == "__main__":
    sys.exit(main())
