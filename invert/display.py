"""How numbers are written, the same way in the terminal, in reports and in JSON.

* a missing or undefined value (``None``, ``nan``) is ``-`` in text and ``null`` in JSON;
* an infinite one (``B / A`` with ``A = 0``: the operator is not injective) is ``inf``
  in text and the string ``"inf"`` in JSON (JSON has no infinity);
* other floats have 4 significant digits (3 in scientific notation below 1e-3 and from
  1e5 on).

PSNR has one cap convention (:func:`psnr_text`): above :data:`PSNR_CAP` it is written
``> 100 dB`` in the terminal, the figures and the report; JSON keeps the number.

One JSON writer (:func:`json_ready`, :func:`write_json`) and one table writer
(:func:`table_text`: aligned text for the terminal, or markdown for the reports) serve the
command line and the figure scripts alike. Analyses return data (dataclasses, plain
numbers); this module alone turns it into text.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from invert.files import atomic_write_bytes

__all__ = [
    "FRAME_COLUMNS",
    "PSNR_CAP",
    "RANDOM_FRAME_COLUMNS",
    "cell_text",
    "frame_bounds_rows",
    "pooling_rows",
    "json_ready",
    "json_value",
    "psnr_text",
    "table_text",
    "write_json",
]

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


def json_ready(value):
    """``value`` as plain JSON data: dataclasses as dicts, numpy and torch numbers and
    arrays as Python ones, paths as strings, ``nan`` as ``None`` and infinities as
    ``"inf"``/``"-inf"`` (:func:`json_value`).

    Examples
    --------
    >>> import numpy as np
    >>> json_ready({"a": np.float64(1.5), "b": [float("inf"), np.int64(2), float("nan")]})
    {'a': 1.5, 'b': ['inf', 2, None]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_ready(value.tolist())  # numpy / torch scalars and arrays, unimported here
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_value(float(value))
    return value


def write_json(target, data) -> Path | None:
    """Write ``data`` (:func:`json_ready`) as indented JSON: to a path atomically
    (:func:`invert.files.atomic_write_bytes`; returns the path) or to an open text stream.

    Examples
    --------
    >>> import io
    >>> stream = io.StringIO()
    >>> write_json(stream, [{"A": float("inf"), "B": 2.0}])
    >>> print(stream.getvalue(), end="")
    [
      {
        "A": "inf",
        "B": 2.0
      }
    ]
    """
    text = json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n"
    if hasattr(target, "write"):
        target.write(text)
        return None
    return atomic_write_bytes(target, text.encode())


def table_text(
    rows: list[dict],
    columns: list[str] | None = None,
    formats: Mapping[str, Callable[[float], str]] | None = None,
    *,
    style: str = "plain",
) -> str:
    """Dict rows as one table: ``"plain"`` (aligned columns, for the terminal) or
    ``"markdown"`` (GitHub-flavoured, for reports). Cells are :func:`cell_text`;
    ``formats`` maps a column to its own formatter of numbers (e.g. PSNR's cap).

    Examples
    --------
    >>> rows = [{"layer": "conv1", "A": 0.5, "B": float("inf")}, {"layer": "conv2", "A": None}]
    >>> print(table_text(rows, ["layer", "A", "B"]))  # doctest: +NORMALIZE_WHITESPACE
    layer  A    B
    -----  ---  ---
    conv1  0.5  inf
    conv2  -    -
    >>> print(table_text(rows, ["layer", "A"], style="markdown"))
    | layer | A |
    |---|---|
    | conv1 | 0.5 |
    | conv2 | - |
    """
    if style not in ("plain", "markdown"):
        raise ValueError(f"style must be 'plain' or 'markdown'; got {style!r}")
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_cell(row.get(c), (formats or {}).get(c)) for c in columns] for row in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in cells:
            lines.append("| " + " | ".join(v.replace("|", "\\|") for v in r) + " |")
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]  # fmt: skip
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value, formatter) -> str:
    """One cell: ``formatter`` for numbers (``"inf"`` included, as JSON writes it)."""
    if formatter is not None and value in ("inf", "-inf"):
        value = float(value)
    if formatter is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return formatter(value)
    return cell_text(value)


# --- analyses as rows --------------------------------------------------------------------

#: The columns of a frame-bounds table. ``frame_A``/``frame_B`` are the extreme
#: eigenvalues of ``T^T T`` of ONE conv layer (its shifted filters as a frame of its input),
#: not those of ``J^T J`` of a whole stack (the certificate's ``JtJ_min``/``JtJ_max``).
FRAME_COLUMNS = ["layer", "shape", "stride", "input", "frame_A", "frame_B", "frame_ratio"]
#: The random-filter baseline's columns of that table.
RANDOM_FRAME_COLUMNS = ["random_A", "random_B", "random_ratio"]


def frame_bounds_rows(layers, *, random_baseline: bool = True) -> list[dict]:
    """Table rows of per-layer frame bounds (``theory.frames.LayerFrameBounds``): ``layer``,
    ``shape`` (``C_out x C_in/g x kh x kw``), ``stride`` (an int when square), ``input``
    (``H x W``), ``frame_A``, ``frame_B``, ``frame_ratio``, ``tol``, ``method``, with the
    baseline ``random_A``, ``random_B``, ``random_ratio``, and ``note``; ``None`` where a
    layer has no bounds.

    Examples
    --------
    >>> from types import SimpleNamespace as Bounds
    >>> fb = Bounds(A=0.5, B=2.0, ratio=4.0, tol=1e-15, method="fft")
    >>> layer = Bounds(layer="conv1", weight_shape=(8, 3, 3, 3), stride=(1, 1),
    ...                input_size=(16, 16), bounds=fb, random=None, note="")
    >>> row = frame_bounds_rows([layer], random_baseline=False)[0]
    >>> row["shape"], row["stride"], row["input"], row["frame_A"], row["frame_ratio"]
    ('8x3x3x3', 1, '16x16', 0.5, 4.0)
    """
    rows = []
    for item in layers:
        sh, sw = item.stride
        size = item.input_size
        row = {"layer": item.layer, "shape": "x".join(str(s) for s in item.weight_shape),
               "stride": sh if sh == sw else [sh, sw],
               "input": None if size is None else f"{size[0]}x{size[1]}"}  # fmt: skip
        fb = item.bounds
        row.update(frame_A=fb and fb.A, frame_B=fb and fb.B, frame_ratio=fb and fb.ratio,
                   tol=fb and fb.tol, method=fb and fb.method)  # fmt: skip
        if random_baseline:
            rb = item.random
            row.update(random_A=rb and rb.A, random_B=rb and rb.B, random_ratio=rb and rb.ratio)
        row["note"] = item.note
        rows.append(row)
    return rows


def pooling_rows(blocks) -> list[dict]:
    """Table rows of switch metrics (``theory.pooling.LayerSwitchMetrics``): ``layer``,
    ``filters``, ``pool`` (``k x k / s``, `` (assumed)`` where no max-pooling follows the
    layer), ``input`` (``C x H x W``), then the means over the images
    (``SwitchMetrics.summary``).

    Examples
    --------
    >>> from types import SimpleNamespace as Block
    >>> metrics = Block(summary=lambda: {"images": 2, "rel_error": 0.25})
    >>> block = Block(layer="conv3", filters="learned", input_shape=(10, 8, 8),
    ...               pool=Block(kernel_size=3, stride=2), pool_assumed=False, metrics=metrics)
    >>> pooling_rows([block])
    [{'layer': 'conv3', 'filters': 'learned', 'pool': '3x3/2', 'input': '10x8x8', 'images': 2, 'rel_error': 0.25}]
    """  # noqa: E501
    rows = []
    for block in blocks:
        pool = _pool_text(block.pool) + (" (assumed)" if block.pool_assumed else "")
        row = {"layer": block.layer, "filters": block.filters, "pool": pool,
               "input": "x".join(str(s) for s in block.input_shape)}  # fmt: skip
        rows.append(row | block.metrics.summary())
    return rows


def _pool_text(pool) -> str:
    """``k x k / s`` of a max-pooling layer (``kh x kw / sh x sw`` when not square)."""
    kh, kw = (pool.kernel_size,) * 2 if isinstance(pool.kernel_size, int) else pool.kernel_size
    sh, sw = (pool.stride,) * 2 if isinstance(pool.stride, int) else pool.stride
    return f"{kh}x{kw}/{sh}" if sh == sw else f"{kh}x{kw}/{sh}x{sw}"
