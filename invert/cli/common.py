"""What every subcommand shares: the run context, the declarative registration, the option
vocabulary, model loading and output.

A subcommand is one :class:`Command` value: its name, help, the option groups it takes
(in ``--help`` order) and the function that runs it. :func:`invert.cli.main` parses the
command line, builds a :class:`Run` (the parsed options, the notes the run collects and the
model loader) and hands it to that function.

The vocabulary (the same spelling on every command):

* the model is the first positional argument, ``SPEC``: a checkpoint path,
  ``MODEL@DATA`` (trained and cached on a miss unless ``--no-train``; ``--seed N`` picks
  the training run of seed N), a zoo name, or ``FILE.py:FUNCTION`` (the user's own code,
  run because the user named it); ``--weights`` loads a plain state dict into it;
* ``--layers`` (comma-separated; ``all`` where a command takes every layer);
* ``--image-size`` (the side of the square input);
* ``--json`` / ``--csv`` on every command that prints a table;
* ``--quiet`` on every command: progress (tqdm on stderr) is shown on anything that runs
  longer than about 2 s unless it is given;
* ``--out PATH`` where a command writes a file, its help saying what the file holds;
* ``--device``; ``--seed`` (which trained model); ``--random-seed`` (an analysis's own
  random draws: random filters, crops, image samples).

User mistakes escape a command as :class:`~invert.errors.UserError` (or ``OSError`` for a
file problem): :func:`~invert.errors.run_safely` prints them as one line ``PROG: error:
...``, exit status 2. Anything else is a bug of the toolkit, shown as one ``internal
error`` line (exit status 1); ``--debug`` (or ``CRELU_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

from invert.errors import USER_ERRORS, UserError, run_safely  # noqa: F401 (re-exported)

__all__ = [
    "USER_ERRORS",
    "Command",
    "Parser",
    "Progress",
    "Run",
    "UserError",
    "add_image_size_argument",
    "add_layers_argument",
    "add_model_arguments",
    "add_out_argument",
    "add_quiet_argument",
    "add_random_seed_argument",
    "add_table_arguments",
    "at_least_two",
    "emit",
    "fraction",
    "is_trained_spec",
    "non_negative_int",
    "number",
    "positive_float",
    "positive_int",
    "run_safely",
]

DEBUG_HELP = "show the traceback of an error (also CRELU_DEBUG=1)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: ...``), exit status 2.

    Options are taken as spelled in full: no abbreviations (``--layer`` is not ``--layers``),
    so every option has the one spelling ``--help`` shows.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- option parsers ------------------------------------------------------------------------


def number(cast, accept, expected: str):
    """An argparse ``type``: ``cast(text)`` if ``accept`` takes it, else a one-line error.

    Examples
    --------
    >>> number(int, lambda v: v > 0, "a positive integer")("3")
    3
    """

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
at_least_two = number(int, lambda v: v >= 2, "an integer >= 2")
positive_float = number(float, lambda v: 0 < v < math.inf, "a positive number")
fraction = number(float, lambda v: 0 < v < 1, "a number in (0, 1)")


# --- the run context and the registration -------------------------------------------------


@dataclasses.dataclass
class Run:
    """One command's run: its parsed options, the notes it collects for stderr, and the
    model loader; its methods are what every command does with them.

    ``loader`` replaces :func:`invert.load_model` where given (tests pass small models
    this way, without training); ``notes`` are printed by :meth:`flush_notes` once the
    command has succeeded, after its output.

    Examples
    --------
    >>> run = Run(argparse.Namespace(command="models", layers="conv1, conv2,conv1"))
    >>> run.note("counts at the default width"); run.note("counts at the default width")
    >>> run.prog, run.notes, run.layers()
    ('crelu models', ['counts at the default width'], ['conv1', 'conv2'])
    """

    args: argparse.Namespace
    loader: Callable | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def prog(self) -> str:
        return f"crelu {self.args.command}"

    def note(self, text: str) -> None:
        """A ``crelu COMMAND: note: TEXT`` line for stderr, printed once the command has
        succeeded (after its output; an error stays one line), each text once."""
        if text not in self.notes:
            self.notes.append(text)

    def note_warnings(self, caught) -> None:
        """Recorded warnings as notes, each once."""
        for message in dict.fromkeys(str(w.message) for w in caught):
            self.note(message)

    def flush_notes(self) -> None:
        """Print the notes collected (:func:`invert.cli.main` does, on success)."""
        for text in self.notes:
            print(f"{self.prog}: note: {text}", file=sys.stderr)
        self.notes.clear()

    def layers(self) -> list[str] | None:
        """``--layers``: ``"conv1, conv2"`` -> ``["conv1", "conv2"]``; absent or ``all``:
        None (every layer)."""
        text = getattr(self.args, "layers", None)
        if text is None or text.strip().lower() == "all":
            return None
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise UserError("--layers needs at least one layer name (or 'all')")
        return list(dict.fromkeys(names))

    def image_size(self, model) -> int:
        """``--image-size``, else the model's own input size; a one-line error if neither."""
        from invert.validation import check_positive_int

        size = check_positive_int(getattr(self.args, "image_size", None), name="--image-size",
                                  allow_none=True)  # fmt: skip
        if size is not None:
            return size
        from invert.nn import model_input_size

        size = model_input_size(model)
        if size is None:
            raise UserError("the model's input size is unknown (not a zoo architecture); "
                            "pass --image-size")  # fmt: skip
        return size

    def load_model(self):
        """``(model, device)`` as :func:`add_model_arguments` say; the loader's warnings
        become notes. ``loader`` (:func:`invert.cli.main`'s ``load_model=``) replaces
        :func:`invert.load_model`, so tests can run commands on small models."""
        import warnings

        from invert.device import resolve_device

        args = self.args
        if not args.spec:
            raise UserError(
                "give the model: a checkpoint path, MODEL@DATA, a zoo name or FILE.py:FUNCTION"
            )
        device = resolve_device(args.device)
        loader = self.loader
        if loader is None:
            from invert.train.loader import load_model as loader
        options = dict(
            recipe=args.recipe, device=device, cache_dir=args.cache_dir,
            train_if_missing=not args.no_train, progress=not args.quiet,
        )  # fmt: skip
        if getattr(args, "weights", None):
            options["weights"] = args.weights
        if getattr(args, "seed", None) is not None:
            if not is_trained_spec(args.spec):
                raise UserError(f"--seed picks one training run of MODEL@DATA; {args.spec} is not "
                                f"MODEL@DATA")  # fmt: skip
            options["seed"] = args.seed
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                model = loader(args.spec, **options)
            except FileNotFoundError as error:  # the loader speaks to Python callers
                raise _for_the_command_line(error) from None
        self.note_warnings(caught)
        return model, device

    def emit(self, rows: list[dict], columns: list[str] | None = None, *, formats=None):
        """The rows as ``--json``/``--csv`` ask (every field), else a table of ``columns``
        where present (``formats``: per-column text); each row's ``note`` becomes a note."""
        as_json, as_csv = getattr(self.args, "json", False), getattr(self.args, "csv", False)
        if as_json or as_csv:
            emit(rows, as_json=as_json, as_csv=as_csv)
        else:
            if columns is not None:
                columns = [c for c in columns if any(c in r for r in rows)]
            emit(rows, columns=columns, formats=formats)
        for row in rows:
            if row.get("note"):
                self.note(f"{row['layer']}: {row['note']}")


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand, declared: ``crelu NAME`` calls ``run(Run)`` for its exit status.

    ``loads_model`` puts the model ``SPEC`` and its loading options first
    (:func:`add_model_arguments`); ``arguments`` then add the command's own options, in
    ``--help`` order (shared groups of this module, with :func:`functools.partial` where
    they take a help text); ``table`` (what ``--json``/``--csv`` print instead of) adds
    those two last, for a command that prints a table.

    Examples
    --------
    >>> parser = Parser(prog="crelu")
    >>> subparsers = parser.add_subparsers(dest="command", parser_class=Parser)
    >>> hello = Command("hello", run=lambda run: 0, help="say hello",
    ...                 description="Says hello.", arguments=(add_quiet_argument,),
    ...                 table="a table")
    >>> _ = hello.register(subparsers)
    >>> args = parser.parse_args(["hello", "--quiet", "--json"])
    >>> args.quiet, args.json
    (True, True)
    """

    name: str
    run: Callable[[Run], int]
    help: str
    description: str
    arguments: tuple[Callable[[argparse.ArgumentParser], None], ...] = ()
    loads_model: bool = False
    table: str | None = None
    epilog: str | None = None

    def register(self, subparsers) -> argparse.ArgumentParser:
        """Add this command's parser to ``subparsers`` (``crelu``'s)."""
        p = subparsers.add_parser(
            self.name, help=self.help, description=self.description, epilog=self.epilog
        )
        if self.loads_model:
            add_model_arguments(p)
        for add_arguments in self.arguments:
            add_arguments(p)
        if self.table is not None:
            add_table_arguments(p, what=self.table)
        # also after the command (`crelu COMMAND ... --debug`); absent unless given
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        p.set_defaults(run=self.run)
        return p


# --- the shared options --------------------------------------------------------------------

MODEL_HELP = (
    "checkpoint path, MODEL@DATA (e.g. convpool_c_crelu@textures; trained and cached if "
    "missing), a zoo or reference name (e.g. resnet18; random weights, or your own with "
    "--weights), or FILE.py:FUNCTION for any other architecture: imports FILE.py and calls "
    "FUNCTION() with no arguments, which must return the torch.nn.Module -- this runs your "
    "own code, because you named it"
)


def add_model_arguments(p) -> None:
    """The model ``SPEC`` (first positional) and how to load it: weights, recipe, cache,
    seed, device; and ``--quiet``."""
    p.add_argument("spec", metavar="SPEC", nargs="?", help=MODEL_HELP)
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="a plain PyTorch state dict (.pt/.pth/.safetensors, e.g. torchvision's) for the "
        "architecture named by SPEC (e.g. resnet18, or FILE.py:FUNCTION), read with "
        "weights_only=True; 'module.' prefixes (DataParallel) are removed and the class "
        "count is read from the file",
    )
    p.add_argument("--recipe", default="fast", help="training recipe for MODEL@DATA on a miss")
    p.add_argument("--cache-dir", help="where MODEL@DATA checkpoints are cached")
    p.add_argument(
        "--no-train", action="store_true", help="fail instead of training a missing MODEL@DATA"
    )
    p.add_argument(
        "--seed", type=non_negative_int, metavar="N",
        help="MODEL@DATA: the model trained with seed N (`crelu train --seed N`; default 0)",
    )  # fmt: skip
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    add_quiet_argument(p)


def add_quiet_argument(p) -> None:
    """``--quiet``: no progress output."""
    p.add_argument(
        "--quiet", action="store_true",
        help="no progress output on stderr (shown by default on steps over about 2 s)",
    )  # fmt: skip


def add_layers_argument(p, help: str) -> None:
    """``--layers NAME[,NAME...]``."""
    p.add_argument("--layers", metavar="NAMES", help=help)


def add_image_size_argument(p, help: str) -> None:
    """``--image-size N``."""
    p.add_argument("--image-size", type=int, metavar="N", help=help)


def add_random_seed_argument(p, help: str) -> None:
    """``--random-seed N``: the seed of an analysis's own random draws (not the model's)."""
    p.add_argument("--random-seed", type=non_negative_int, default=0, metavar="N", help=help)


def add_out_argument(p, metavar: str, help: str) -> None:
    """``--out PATH``: what the command writes, said in ``help``."""
    p.add_argument("--out", metavar=metavar, help=help)


def add_table_arguments(p, *, what: str = "a table") -> None:
    """``--json`` or ``--csv`` instead of the table."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help=f"print JSON instead of {what}")
    group.add_argument("--csv", action="store_true", help=f"print CSV instead of {what}")


def is_trained_spec(spec: str) -> bool:
    """Whether ``spec`` names a training run, ``MODEL@DATA`` (not a file that exists)."""
    return "@" in spec and not Path(spec).expanduser().is_file()


def _for_the_command_line(error: FileNotFoundError) -> FileNotFoundError:
    """The loader's error with the command-line option instead of the Python argument."""
    text = str(error)
    if "train_if_missing=True" not in text:
        return error
    return FileNotFoundError(text.replace("pass train_if_missing=True", "leave out --no-train"))


class Progress:
    """A per-step progress bar on stderr (tqdm), silent with ``--quiet``.

    Call it with each step's name *before* the step runs (``crelu reconstruct`` does, per
    layer); the bar appears once the work has run ``delay`` seconds, so quick commands
    print nothing. Use it as a context manager: leaving it completes and removes the bar.

    Examples
    --------
    >>> import io, types
    >>> out = io.StringIO()
    >>> with Progress(types.SimpleNamespace(quiet=False), 2, desc="layers", delay=0,
    ...               file=out) as step:
    ...     step("conv1"); step("conv2")
    >>> step.bar.n, "layers" in out.getvalue()
    (2, True)
    """

    def __init__(self, args, total: int | None, *, desc: str, unit: str = "layer",
                 delay: float = 2.0, file=None):  # fmt: skip
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total, desc=desc, unit=unit, delay=delay, leave=False,
            file=file or sys.stderr, disable=bool(getattr(args, "quiet", False)),
        )  # fmt: skip
        self.started = False

    def __call__(self, name: str) -> None:
        self.bar.set_postfix_str(str(name), refresh=False)  # shown from the next update
        if self.started:
            self.bar.update()
        self.started = True

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc) -> None:
        if self.started and kind is None:
            self.bar.update()
        self.bar.close()


# --- output ----------------------------------------------------------------------------------


def emit(
    rows: list[dict], *, as_json: bool = False, as_csv: bool = False, columns=None, formats=None
) -> None:
    """Write rows to stdout as an aligned table (:func:`invert.display.table_text`;
    ``formats`` maps a column to its own formatter, e.g. PSNR's cap), JSON
    (:func:`invert.display.write_json`) or CSV."""
    from invert.display import json_ready, table_text, write_json

    if as_json:
        write_json(sys.stdout, rows)
    elif as_csv:
        import csv

        columns = columns or (list(rows[0]) if rows else [])
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(json_ready(rows))
    else:
        print(table_text(rows, columns, formats))
