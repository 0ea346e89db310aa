"""The checks every public function makes of its options, each with one exception type.

A failed check is the caller's mistake, so it raises :class:`~invert.errors.UserError`
(a ``ValueError``) or, for a value of the wrong type, :class:`~invert.errors.UserTypeError`
(a ``TypeError``); the command line prints either as one line with exit status 2.
"""

from __future__ import annotations

import torch

from invert.errors import UserError, UserTypeError

__all__ = ["check_bool", "check_dtype", "check_positive", "check_positive_int"]

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_dtype(dtype, *, name: str = "dtype") -> torch.dtype:
    """``dtype`` if it is ``torch.float32`` or ``torch.float64``, else :class:`UserError`.

    Examples
    --------
    >>> check_dtype(torch.float64)
    torch.float64
    >>> check_dtype(torch.float16)
    Traceback (most recent call last):
    ...
    invert.errors.UserError: dtype must be torch.float32 or torch.float64; got torch.float16
    """
    if dtype not in FLOAT_DTYPES:
        raise UserError(f"{name} must be torch.float32 or torch.float64; got {dtype}")
    return dtype


def check_positive_int(value, *, name: str, allow_none: bool = False):
    """``value`` if it is an int >= 1 (or ``None`` where allowed), else :class:`UserError`.

    Examples
    --------
    >>> check_positive_int(3, name="max_iter")
    3
    >>> check_positive_int(0, name="max_iter")
    Traceback (most recent call last):
    ...
    invert.errors.UserError: max_iter must be a positive int; got 0
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = " or None" if allow_none else ""
        raise UserError(f"{name} must be a positive int{extra}; got {value!r}")
    return value


def check_positive(value, *, name: str) -> float:
    """``float(value)`` if it is a real number > 0, else :class:`UserError`.

    Examples
    --------
    >>> check_positive(1e-3, name="tol")
    0.001
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{name} must be a positive number; got {value!r}")
    return float(value)


def check_bool(value, *, name: str) -> bool:
    """``value`` if it is ``True`` or ``False``, else :class:`UserTypeError`.

    Examples
    --------
    >>> check_bool("yes", name="progress")
    Traceback (most recent call last):
    ...
    invert.errors.UserTypeError: progress must be True or False; got 'yes'
    """
    if not isinstance(value, bool):
        raise UserTypeError(f"{name} must be True or False; got {value!r}")
    return value
