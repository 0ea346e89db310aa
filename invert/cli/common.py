"""What every subcommand shares: the option vocabulary, model loading, output, and the
one error handler.

The vocabulary (the same spelling on every command):

* the model is the first positional argument, ``SPEC``: a checkpoint path,
  ``MODEL@DATA`` (trained and cached on a miss unless ``--no-train``), a zoo name, or
  ``FILE.py:FUNCTION`` (the user's own code, run because the user named it); ``--weights``
  loads a plain state dict into it;
* ``--layers`` (comma-separated; ``all`` where a command takes every layer);
* ``--image-size`` (the side of the square input);
* ``--json`` / ``--csv`` on every command that prints a table;
* ``--quiet`` on every command: progress (:class:`Progress`, tqdm on stderr) is shown on
  anything that runs longer than about 2 s unless it is given;
* ``--out PATH`` where a command writes a file, its help saying what the file holds;
* ``--device``, ``--seed``.

Older spellings (``--model``, ``--layer``, ``--size``, ``--input-size``, ``--crop-size``,
``--progress``) still work for one release and print a one-line deprecation note.

User mistakes escape a command as :class:`~invert.errors.UserError`, ``ValueError``,
``TypeError`` or ``OSError``; :func:`~invert.errors.run_safely` prints them as one line
``PROG: error: ...`` and returns exit status 2 (``CRELU_DEBUG=1`` re-raises them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from invert.errors import USER_ERRORS, UserError, run_safely  # noqa: F401 (re-exported)

__all__ = [
    "USER_ERRORS",
    "Parser",
    "UserError",
    "Progress",
    "add_image_size_argument",
    "add_layers_argument",
    "add_model_arguments",
    "add_out_argument",
    "add_quiet_argument",
    "add_table_arguments",
    "emit",
    "emit_rows",
    "image_size_of",
    "layer_list",
    "load_model_from_args",
    "flush_notes",
    "note",
    "number",
    "print_notes",
    "print_table",
    "run_safely",
]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: ...``), exit status 2."""

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


class _Deprecated(argparse.Action):
    """An old spelling: stores into the new option's ``dest`` and records a note, which
    :func:`invert.cli.main` prints when the command succeeds (an error stays one line)."""

    def __init__(self, option_strings, dest, *, new: str, append: bool = False, **kwargs):
        self.new, self.append = new, append
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        note = f"{option_string} is deprecated (removed in the next release); use {self.new}"
        namespace.deprecations = [*(getattr(namespace, "deprecations", None) or []), note]
        if self.append:
            values = ",".join(filter(None, [getattr(namespace, self.dest, None), values]))
        setattr(namespace, self.dest, values)
        spellings = getattr(namespace, "spellings", None) or {}
        namespace.spellings = {**spellings, self.dest: option_string}


def deprecated(p, *old: str, new: str, dest: str, nargs=None, append=False, type=None):
    """Accept the old spellings ``old`` of the option ``new`` (hidden from ``--help``)."""
    kwargs = {"nargs": nargs} if nargs is not None else {}
    if type is not None:
        kwargs["type"] = type
    p.add_argument(*old, dest=dest, action=_Deprecated, new=new, append=append, **kwargs)


# --- the shared options --------------------------------------------------------------------

MODEL_HELP = (
    "checkpoint path, MODEL@DATA (e.g. convpool_c_crelu@textures; trained and cached if "
    "missing), a zoo or reference name (e.g. resnet18; random weights, or your own with "
    "--weights), or FILE.py:FUNCTION for any other architecture: imports FILE.py and calls "
    "FUNCTION() with no arguments, which must return the torch.nn.Module -- this runs your "
    "own code, because you named it"
)


def add_model_arguments(p, *, deprecated_option: str | None = None) -> None:
    """The model ``SPEC`` (first positional) and how to load it: recipe, cache, device."""
    p.add_argument("spec", metavar="SPEC", nargs="?", help=MODEL_HELP)
    if deprecated_option:  # its own dest: an absent positional would overwrite it
        deprecated(p, deprecated_option, new="the positional SPEC", dest="spec_option")
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
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    add_quiet_argument(p)


def add_quiet_argument(p) -> None:
    """``--quiet`` (and the older ``--progress``, now the default)."""
    p.add_argument(
        "--quiet", action="store_true",
        help="no progress output on stderr (shown by default on steps over about 2 s)",
    )  # fmt: skip
    deprecated(p, "--progress", new="the default (progress is shown unless --quiet)",
               dest="progress_flag", nargs=0)  # fmt: skip


def add_layers_argument(p, help: str, *, old: tuple[str, ...] = ("--layer",)) -> None:
    """``--layers NAME[,NAME...]`` (and the older ``--layer``, repeatable)."""
    p.add_argument("--layers", metavar="NAMES", help=help)
    if old:
        deprecated(p, *old, new="--layers", dest="layers", append=True)


def add_image_size_argument(p, help: str, *, old: tuple[str, ...] = ()) -> None:
    """``--image-size N`` (and the older spellings ``old``)."""
    p.add_argument("--image-size", type=int, metavar="N", help=help)
    if old:
        deprecated(p, *old, new="--image-size", dest="image_size", type=int)


def spelling(args, dest: str) -> str:
    """The option as the user typed it (an old spelling, or ``--dest-with-dashes``)."""
    return (getattr(args, "spellings", None) or {}).get(dest, "--" + dest.replace("_", "-"))


def check_positive(args, *dests: str) -> None:
    """A one-line error for each option among ``dests`` that was given and is below 1."""
    for dest in dests:
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            raise UserError(f"{spelling(args, dest)} must be a positive integer; got {value}")


def add_out_argument(p, metavar: str, help: str) -> None:
    """``--out PATH``: what the command writes, said in ``help``."""
    p.add_argument("--out", metavar=metavar, help=help)


def add_table_arguments(p, *, what: str = "a table") -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help=f"print JSON instead of {what}")
    group.add_argument("--csv", action="store_true", help=f"print CSV instead of {what}")


def layer_list(text: str | None) -> list[str] | None:
    """``"conv1, conv2"`` -> ``["conv1", "conv2"]``; None (or ``all``) -> None (every layer)."""
    if text is None or text.strip().lower() == "all":
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UserError("--layers needs at least one layer name (or 'all')")
    return list(dict.fromkeys(names))


def image_size_of(args, model) -> int:
    """``--image-size``, else the model's own input size; a one-line error if neither."""
    check_positive(args, "image_size")
    if getattr(args, "image_size", None):
        return args.image_size
    from invert.nn import model_input_size

    size = model_input_size(model)
    if size is None:
        raise UserError("the model's input size is unknown (not a zoo architecture); "
                        "pass --image-size")  # fmt: skip
    return size


def load_model_from_args(args):
    """``(model, device)`` for :func:`add_model_arguments`; loader warnings become notes.

    ``args.load_model`` (set by :func:`invert.cli.main`'s ``load_model=``) replaces
    :func:`invert.load_model`, so tests can run commands on small models without training.
    """
    import warnings

    from invert.device import resolve_device

    spec = args.spec or getattr(args, "spec_option", None)
    if not spec:
        raise UserError(
            "give the model: a checkpoint path, MODEL@DATA, a zoo name or FILE.py:FUNCTION"
        )
    device = resolve_device(args.device)
    loader = getattr(args, "load_model", None)
    if loader is None:
        from invert.train.loader import load_model as loader
    options = dict(
        recipe=args.recipe, device=device, cache_dir=args.cache_dir,
        train_if_missing=not args.no_train, progress=not args.quiet,
    )  # fmt: skip
    if getattr(args, "weights", None):
        options["weights"] = args.weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = loader(spec, **options)
    print_notes(args, caught)
    return model, device


def print_notes(args, caught) -> None:
    """Recorded warnings as one ``crelu COMMAND: note:`` line each on stderr."""
    for message in dict.fromkeys(str(w.message) for w in caught):  # each once
        note(args, message)


class Progress:
    """A per-step progress bar on stderr (tqdm), silent with ``--quiet``.

    Call it with each step's name *before* the step runs (the ``progress`` callback of
    :func:`theory.frames.checkpoint_frame_bounds` and friends); the bar appears once the
    work has run ``delay`` seconds, so quick commands print nothing. Use it as a context
    manager: leaving it completes and removes the bar.

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


def print_table(
    rows: list[dict], *, columns: list[str] | None = None, formats=None, file=None
) -> None:
    """Print dict rows as an aligned text table (:func:`invert.display.cell_text`);
    ``formats`` maps a column to its own formatter (e.g. PSNR's cap)."""
    from invert.display import cell_text

    file = file or sys.stdout
    if not rows:
        print("(no rows)", file=file)
        return
    columns = columns or list(rows[0])
    formats = formats or {}

    def fmt(column, value):
        if column in formats and isinstance(value, (int, float)) and value is not None:
            return formats[column](value)
        return cell_text(value)

    cells = [[fmt(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=file)


def json_safe(value):
    """JSON has no inf or nan: ``"inf"``/``"-inf"`` and ``null`` (:mod:`invert.display`)."""
    from invert.display import json_value

    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return json_value(value)
    return value


def emit(
    rows: list[dict], *, as_json: bool = False, as_csv: bool = False, columns=None, formats=None
) -> None:
    """Write rows to stdout as a table, JSON or CSV."""
    if as_json:
        json.dump(json_safe(rows), sys.stdout, indent=2, default=float, allow_nan=False)
        print()
    elif as_csv:
        import csv

        columns = columns or (list(rows[0]) if rows else [])
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(json_safe(rows))
    else:
        print_table(rows, columns=columns, formats=formats)


def emit_rows(args, rows: list[dict], columns: list[str] | None = None, *, formats=None) -> None:
    """:func:`emit` as ``--json``/``--csv`` ask (every field); the table shows ``columns``
    where present (``formats``: per-column text), and each row's ``note`` becomes a
    ``note:`` line on stderr."""
    if getattr(args, "json", False) or getattr(args, "csv", False):
        emit(rows, as_json=getattr(args, "json", False), as_csv=getattr(args, "csv", False))
    else:
        if columns is not None:
            columns = [c for c in columns if any(c in r for r in rows)]
        emit(rows, columns=columns, formats=formats)
    for row in rows:
        if row.get("note"):
            note(args, f"{row['layer']}: {row['note']}")


def note(args, text: str) -> None:
    """A ``crelu COMMAND: note: TEXT`` line for stderr, printed once the command has
    succeeded (after its output; an error stays one line), each text once."""
    notes = getattr(args, "notes", None)
    if notes is None:
        notes = args.notes = []
    if text not in notes:
        notes.append(text)


def flush_notes(args) -> None:
    """Print the notes :func:`note` collected (:func:`invert.cli.main` does, on success)."""
    for text in getattr(args, "notes", None) or []:
        print(f"crelu {args.command}: note: {text}", file=sys.stderr)
    args.notes = []
