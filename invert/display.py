"""How numbers are written, the same way in the terminal, in reports and in JSON.

* a missing or undefined value (``None``, ``nan``) is ``-`` in text and ``null`` in JSON;
* an infinite one (``B / A`` with ``A = 0``: the operator is not injective) is ``inf``
  in text and the string ``"inf"`` in JSON (JSON has no infinity);
* other floats have 4 significant digits (3 in scientific notation below 1e-3 and from
  1e5 on).

PSNR has its own cap convention (:func:`invert.reconstruction.metrics.psnr_text`).
"""

from __future__ import annotations

import math

__all__ = ["cell_text", "json_value"]

MISSING = "-"


def cell_text(value) -> str:
    """One table cell.

    Examples
    --------
    >>> [cell_text(v) for v in (None, float("nan"), float("inf"), 0.123456, 2e-7, True, "a")]
    ['-', '-', 'inf', '0.1235', '2e-07', 'True', 'a']
    """
    if value is None:
        return MISSING
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def json_value(value: float):
    """A float for JSON: itself when finite, ``"inf"``/``"-inf"``, or ``None`` for nan.

    Examples
    --------
    >>> json_value(1.5), json_value(float("inf")), json_value(float("nan"))
    (1.5, 'inf', None)
    """
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
