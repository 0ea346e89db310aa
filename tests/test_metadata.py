"""Checkpoint metadata is data from outside: each malformed field is one line, exit 2.

The checkpoints are written with safetensors directly (weights of a real model, the
metadata document edited), as a damaged or hand-edited file would be.
"""

import json

import pytest
from safetensors.torch import save_file

from invert.cli import main
from invert.nn.zoo import create_model
from invert.train.checkpoints import load_checkpoint, read_metadata, save_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meta")
    net = create_model("convpool_c_crelu", width=0.125)
    history = [{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_accuracy": 0.2,
                "test_accuracy": 0.3, "seconds": 1.5}]  # fmt: skip
    path = save_checkpoint(net, folder / "good.safetensors", data="textures",
                           classes=list("abcdefghij"), history=history, seed=0,
                           input_size=[3, 32, 32], recipe={"name": "tiny"})  # fmt: skip
    return net, path


def edited(good, tmp_path, **changes):
    """The good checkpoint with metadata fields replaced (``None`` deletes one)."""
    net, path = good
    meta = read_metadata(path)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    out = tmp_path / "edited.safetensors"
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, out, metadata={"crelu": json.dumps(meta)})
    return out


CASES = [
    # the held-out matrix's two tracebacks
    ({"normalization": {}}, "frame-bounds", "'normalization' must be {\"mean\""),
    ({"history": ["epoch one"]}, "info", "'history[0]' must be an object"),
    # and every other field's type and shape
    ({"normalization": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}}, "info", "3 values each"),
    ({"normalization": {"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}}, "info",
     "'normalization.std' must be positive numbers"),
    ({"normalization": {"mean": ["a", 0, 0], "std": [1, 1, 1]}}, "frame-bounds",
     "'normalization.mean' must be a non-empty list of finite numbers"),
    ({"history": [{"epoch": "one"}]}, "info", "'history[0].epoch' must be an integer >= 1"),
    ({"history": [{"epoch": 1, "train_loss": "low"}]}, "info", "'history[0].train_loss'"),
    ({"history": {"epoch": 1}}, "info", "'history' must be a list"),
    ({"classes": "abc"}, "info", "'classes' must be a list of class names"),
    ({"classes": [1, 2]}, "pairing", "'classes' must be a list of class names"),
    ({"input_size": [3, 32]}, "info", "'input_size' must be [C, H, W]"),
    ({"seed": "0"}, "info", "'seed' must be an integer >= 0"),
    ({"seed": True}, "info", "'seed' must be an integer >= 0"),
    ({"config": ["width", 0.1]}, "frame-bounds", "'config' must be an object"),
    ({"arch": 5}, "info", "'arch' must be a model name"),
    ({"recipe": {"name": 3}}, "info", "'recipe' must be a recipe name"),
    ({"test_accuracy": 7}, "info", "'test_accuracy' must be a number in [0, 1]"),
    ({"data": ["textures"]}, "correlations", "'data' must be a data set spec"),
]  # fmt: skip


@pytest.mark.parametrize("changes, command, message", CASES)
def test_malformed_metadata_is_one_line_and_exit_2(good, tmp_path, capsys, changes, command,
                                                   message):  # fmt: skip
    path = edited(good, tmp_path, **changes)
    status = main([command, str(path), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"crelu {command}: error: {path}: metadata field "), lines[0]
    assert message in lines[0] and "damaged or was edited" in lines[0]


def test_good_metadata_loads_and_optional_fields_may_be_absent(good, tmp_path):
    net, path = good
    assert load_checkpoint(path, device="cpu").metadata["history"][0]["epoch"] == 1
    bare = edited(good, tmp_path, history=None, classes=None, normalization=None, seed=None)
    assert "history" not in load_checkpoint(bare, device="cpu").metadata
    extra = edited(good, tmp_path, mine={"anything": [1, "two"]})  # unknown fields are kept
    assert load_checkpoint(extra, device="cpu").metadata["mine"] == {"anything": [1, "two"]}
