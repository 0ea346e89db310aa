"""``crelu frame-bounds`` and ``crelu pooling`` through the real command line."""

import csv
import io
import json

import pytest

from invert.cli import main
from invert.nn.zoo import create_model
from theory.frames import frame_bounds


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_frame_bounds_json_csv_and_table(capsys):
    args = ("frame-bounds", "convpool_c", "--image-size", "8", "--layers", "conv1,conv4")
    status, out, err = run(capsys, *args, "--json", "--device", "cpu")
    assert status == 0, err
    assert "note:" in err  # a bare zoo name: random weights, said once on stderr
    rows = json.loads(out)
    assert [(r["layer"], r["input"], r["shape"]) for r in rows] == [
        ("conv1", "8x8", "96x3x3x3"), ("conv4", "4x4", "192x96x3x3")
    ]  # fmt: skip
    for row in rows:
        assert (
            0 <= row["frame_A"] <= row["frame_B"] and row["random_B"] > 0 and row["method"] == "fft"
        )
    status, out, err = run(capsys, *args, "--csv", "--no-random", "--padding", "zeros")
    assert status == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["layer"] for r in table] == ["conv1", "conv4"] and "random_A" not in table[0]
    assert table[0]["method"] == "dense"
    status, out, err = run(capsys, *args, "--no-random")
    assert status == 0, err
    header = out.splitlines()[0].split()
    assert header == ["layer", "shape", "stride", "input", "frame_A", "frame_B", "frame_ratio"]


def test_zero_padding_on_large_inputs_says_what_a_short_solve_means(capsys, monkeypatch):
    from theory import frames

    monkeypatch.setattr(frames, "DENSE_MAX_DIM", 100)  # every layer iterative
    args = ("frame-bounds", "convpool_c", "--image-size", "8", "--layers", "conv4",
            "--padding", "zeros", "--no-random", "--device", "cpu", "--max-iter", "3")  # fmt: skip
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    (row,) = json.loads(out)
    assert row["method"] == "krylov" and "short of rtol" in row["note"]
    assert "note: conv4: krylov short of rtol: A is an upper bound" in err
    from invert.nn import conv_layers
    from invert.train.loader import load_model

    with pytest.warns(UserWarning, match="random weights"):  # the model the CLI ran
        conv = conv_layers(load_model("convpool_c", device="cpu"))["conv4"]
    monkeypatch.undo()
    exact = frame_bounds(conv, 4, padding="zeros", method="dense")  # conv4 sees 4x4
    assert row["input"] == "4x4"
    assert exact.A <= row["frame_A"] and row["frame_B"] <= exact.B + row["tol"]


def test_frame_bounds_of_a_checkpoint_file(capsys, tmp_path):
    from invert.train.checkpoints import save_checkpoint

    model = create_model("convpool_c_crelu", width=0.125)
    path = save_checkpoint(model, tmp_path / "net.safetensors", data="textures")
    status, out, err = run(capsys, "frame-bounds", str(path), "--image-size", "16", "--json",
                           "--layers", "conv2", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    (row,) = json.loads(out)
    ref = frame_bounds(model.conv2.conv, 16)
    assert row["frame_A"] == pytest.approx(ref.A, rel=1e-9)
    assert row["frame_B"] == pytest.approx(ref.B)
    # a wide layer: B/A is infinite, written as a string in JSON
    status, out, err = run(capsys, "frame-bounds", str(path), "--image-size", "16", "--json",
                           "--layers", "conv9", "--no-random", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    assert json.loads(out)[0]["frame_ratio"] == "inf"


def test_pooling_table_and_json(capsys):
    args = ("pooling", "convpool_c_crelu", "--layers", "conv3", "--n-images", "2",
            "--image-size", "8", "--device", "cpu")  # fmt: skip
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    rows = json.loads(out)
    assert [(r["layer"], r["filters"]) for r in rows] == [("conv3", "learned"), ("conv3", "random")]
    assert rows[0]["pool"] == "3x3/2" and rows[0]["images"] == 2
    status, out, err = run(capsys, *args, "--no-random")
    assert status == 0, err
    assert out.splitlines()[0].split()[:4] == ["layer", "filters", "pool", "input"]
    assert len(out.strip().splitlines()) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frame-bounds", "convpool_c", "--image-size", "0"], "--image-size"),
        (["frame-bounds", "no_such_model"], "no_such_model"),
        (["frame-bounds", "/nonexistent/net.safetensors"], "net.safetensors"),
        (["frame-bounds", "convpool_c", "--layers", "pool1"], "unknown conv layers"),
        (["frame-bounds", "convpool_c", "--image-size", "2"], "forward pass"),
        # sizes are checked before anything is allocated: the number, then what to do
        (
            ["frame-bounds", "convpool_c", "--image-size", "100000"],
            "a forward pass of a 3x100000x100000 input needs about 7.68 TB of memory",
        ),
        (["pooling", "convpool_c", "--n-images", "0"], "--n-images"),
        (["pooling", "convpool_c", "--layers", "conv99"], "unknown conv layers"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    status, out, err = run(capsys, *argv, "--device", "cpu")
    assert status == 2
    lines = [line for line in err.strip().splitlines() if ": note:" not in line]
    assert len(lines) == 1 and message in lines[0]
    assert lines[0].startswith(f"crelu {argv[0]}: error:")
