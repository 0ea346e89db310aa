"""User mistakes, and the one handler that turns them into one line and exit status 2.

Used by the ``crelu`` command line and by the figure scripts run on their own.
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
USER_ERRORS = (UserError, ValueError, TypeError, OSError)


def run_safely(prog: str, function, *args) -> int:
    """``function(*args)`` as a command: user mistakes become one line on stderr, status 2.

    Examples
    --------
    >>> def fails():
    ...     raise ValueError("no such layer 'conv99'\\ntraceback details")
    >>> import contextlib, io
    >>> with contextlib.redirect_stderr(io.StringIO()) as err:
    ...     status = run_safely("crelu demo", fails)
    >>> status, err.getvalue()
    (2, "crelu demo: error: no such layer 'conv99'\\n")
    """
    try:
        return int(function(*args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except USER_ERRORS as error:
        if os.environ.get("CRELU_DEBUG"):
            raise
        text = str(error).strip()
        message = text.splitlines()[0] if text else type(error).__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
