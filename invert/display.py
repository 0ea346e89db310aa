"""How numbers are written, the same way in the terminal, in reports and in JSON.

* a missing or undefined value (``None``, ``nan``) is ``-`` in text and ``null`` in JSON;
* an infinite one (``B / A`` with ``A = 0``: the operator is not injective) is ``inf``
  in text and the string ``"inf"`` in JSON (JSON has no infinity);
* other floats have 4 significant digits (3 in scientific notation below 1e-3 and from
  1e5 on).

PSNR has one cap convention (:func:`psnr_text`): above :data:`PSNR_CAP` it is written
``> 100 dB`` in the terminal, the figures and the report; JSON keeps the number.
"""

from __future__ import annotations

import math

__all__ = ["PSNR_CAP", "cell_text", "json_value", "psnr_text"]

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


#: PSNR (dB) above which a reconstruction is shown as exact (``> 100 dB``), everywhere:
#: the terminal, the figures and the findings compare and print PSNR this way.
PSNR_CAP = 100.0


def psnr_text(value: float, *, unit: bool = True) -> str:
    """PSNR as text with the one cap convention: ``> 100 dB`` above :data:`PSNR_CAP`.

    Examples
    --------
    >>> psnr_text(254.9), psnr_text(float("inf")), psnr_text(-0.37), psnr_text(19.53, unit=False)
    ('> 100 dB', '> 100 dB', '-0.4 dB', '19.5')
    """
    suffix = " dB" if unit else ""
    if math.isnan(value):
        return "nan"
    if value > PSNR_CAP:
        return f"> {PSNR_CAP:g}{suffix}"
    return f"{value:.1f}{suffix}"
