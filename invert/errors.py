"""User mistakes, and the one handler that tells them from the toolkit's own bugs.

A :class:`UserError` (or an ``OSError``: a missing or unreadable file) is something the
user can fix: :func:`run_safely` prints it as one line, exit status 2. Any other exception
escaping a command is a bug of crelu-toolkit: one ``internal error`` line saying so, exit
status 1, and the traceback with ``--debug`` or ``CRELU_DEBUG=1``. Used by the ``crelu``
command line and by the figure scripts run on their own.
"""

from __future__ import annotations

import os
import sys

__all__ = ["USER_ERRORS", "UserError", "UserTypeError", "run_safely"]


class UserError(ValueError):
    """A mistake in what the user asked for; printed as one line, exit status 2.

    A ``ValueError``, so that code catching bad values catches it too.
    """


class UserTypeError(UserError, TypeError):
    """A value of the wrong type passed by the user (also a ``TypeError``)."""


#: Errors that mean "bad input" when they escape a command.
USER_ERRORS = (UserError, OSError)

BUG_ADVICE = "this is a bug in crelu-toolkit; rerun with --debug for the traceback and report it"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def run_safely(prog: str, function, *args, debug: bool | None = None) -> int:
    """``function(*args)`` as a command, returning its exit status.

    A user mistake (:data:`USER_ERRORS`) becomes one line ``PROG: error: ...`` on stderr,
    status 2; any other exception is a bug: one ``PROG: internal error: ...`` line, status
    1. With ``debug`` (default: the ``CRELU_DEBUG`` environment variable) both re-raise,
    traceback and all.

    Examples
    --------
    >>> import contextlib, io
    >>> from invert.errors import UserError
    >>> def fails():
    ...     raise UserError("no such layer 'conv99'\\ntraceback details")
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_safely("crelu demo", fails, debug=False)
    >>> status, err.getvalue()
    (2, "crelu demo: error: no such layer 'conv99'\\n")
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_safely("crelu demo", {}.__getitem__, "conv1", debug=False)
    >>> status, err.getvalue().split(" — ")[0]
    (1, "crelu demo: internal error: KeyError: 'conv1'")
    """
    if debug is None:
        debug = bool(os.environ.get("CRELU_DEBUG"))
    try:
        return int(function(*args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except USER_ERRORS as error:
        if debug:
            raise
        message = _first_line(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except Exception as error:  # not the user's doing: say it is a bug, and where to look
        if debug:
            raise
        print(f"{prog}: internal error: {type(error).__name__}: {_first_line(error)} — "
              f"{BUG_ADVICE}", file=sys.stderr)  # fmt: skip
        return 1
