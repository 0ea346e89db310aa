"""invert.display: the one JSON writer and the one table writer (references: literals)."""

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from invert.display import json_ready, psnr_text, table_text, write_json


@dataclass
class _Row:
    layer: str
    A: float
    values: np.ndarray


def test_json_ready_makes_every_value_plain():
    data = {
        "row": _Row("conv1", math.inf, np.array([1.5, np.nan])),
        "tensor": torch.tensor([[1, 2]]),
        "numpy": (np.float32(0.5), np.int64(3), np.bool_(True)),
        "path": Path("/tmp/x"),
        1: -math.inf,
        "none": None,
    }
    assert json_ready(data) == {
        "row": {"layer": "conv1", "A": "inf", "values": [1.5, None]},
        "tensor": [[1, 2]],
        "numpy": [0.5, 3, True],
        "path": "/tmp/x",
        "1": "-inf",
        "none": None,
    }
    assert type(json_ready(np.bool_(False))) is bool and type(json_ready(np.int32(2))) is int


def test_write_json_to_a_path_and_to_a_stream(tmp_path):
    data = [{"A": math.nan, "B": 2.0, "ok": True}]
    path = write_json(tmp_path / "out.json", data)
    assert path == tmp_path / "out.json"
    assert json.loads(path.read_text()) == [{"A": None, "B": 2.0, "ok": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind
    stream = io.StringIO()
    assert write_json(stream, data) is None
    assert stream.getvalue() == path.read_text()


def test_plain_table_is_aligned_with_a_rule():
    rows = [{"layer": "conv1", "A": 0.123456, "ratio": math.inf},
            {"layer": "conv10", "A": None, "ratio": 2e-7}]  # fmt: skip
    lines = table_text(rows, ["layer", "A", "ratio"]).splitlines()
    assert [line.split() for line in lines] == [
        ["layer", "A", "ratio"], ["------", "------", "-----"],
        ["conv1", "0.1235", "inf"], ["conv10", "-", "2e-07"],
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1  # every line padded to the same width
    assert table_text([]) == "(no rows)"
    assert table_text(rows).splitlines()[0].split() == ["layer", "A", "ratio"]


def test_markdown_table_with_formats_and_pipes():
    rows = [{"name": "a|b", "psnr": 250.0}, {"name": "c", "psnr": "inf"}]
    text = table_text(rows, formats={"psnr": lambda v: psnr_text(v, unit=False)},
                      style="markdown")  # fmt: skip
    assert text.splitlines() == ["| name | psnr |", "|---|---|", "| a\\|b | > 100 |",
                                 "| c | > 100 |"]  # fmt: skip
    with pytest.raises(ValueError, match="style"):
        table_text(rows, style="html")
