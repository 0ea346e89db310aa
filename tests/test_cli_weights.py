"""``--weights PATH``: a user's own state dict for a reference architecture, from the
command line and from ``invert.load_model``.

The state dict is written independently of the zoo, in torchvision's VGG-16 layout
(``features.N`` for the convs, ``classifier.{0,3,6}`` for the linear layers), and saved
with ``torch.save`` as users' ``.pth`` files are. To keep the file small, every tensor
but the first conv's weight is a stride-0 view of one number (``torch.save`` stores the
one-element storage); loading copies them into full parameters.
"""

import json

import pytest
import torch

from invert.cli import main
from invert.train.loader import load_model
from theory.frames import frame_bounds

# torchvision's VGG-16 ("D"): channels, "M" for max-pooling
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_vgg16_state(first_weight: torch.Tensor, classes: int = 1000) -> dict:
    state, index, channels = {}, 0, 3
    for item in _VGG16:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.full((1,), 0.01).expand(item, channels, 3, 3)
        state[f"features.{index}.bias"] = torch.zeros(1).expand(item)
        channels, index = item, index + 2  # conv, then ReLU
    state["features.0.weight"] = first_weight
    for i, (n_in, n_out) in zip((0, 3, 6), [(512 * 7 * 7, 4096), (4096, 4096), (4096, classes)]):
        state[f"classifier.{i}.weight"] = torch.full((1,), 1e-3).expand(n_out, n_in)
        state[f"classifier.{i}.bias"] = torch.zeros(1).expand(n_out)
    return state


@pytest.fixture(scope="module")
def first_weight():
    return torch.randn(64, 3, 3, 3, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, first_weight):
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(torchvision_vgg16_state(first_weight), path)
    assert path.stat().st_size < 1_000_000  # the views stay small on disk
    return path


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_frame_bounds_of_your_own_vgg16(capsys, weights_file, first_weight):
    status, out, err = run(capsys, "frame-bounds", "vgg16", "--weights", str(weights_file),
                           "--layers", "features.0", "--image-size", "16", "--no-random",
                           "--json", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    (row,) = json.loads(out)
    reference = frame_bounds(first_weight.double(), 16)  # the weight itself, not the model
    assert row["layer"] == "features.0" and row["shape"] == "64x3x3x3"
    assert row["A"] == pytest.approx(reference.A, rel=1e-9)
    assert row["B"] == pytest.approx(reference.B, rel=1e-9)
    assert "random weights" not in err  # the user's weights, not an untrained model


def test_load_model_with_weights(weights_file, first_weight):
    model = load_model("vgg16", weights=weights_file, device="cpu")
    assert torch.equal(model.features[0].weight.detach(), first_weight)
    assert model.config["num_classes"] == 1000 and model.metadata["weights"] == str(weights_file)
    assert model.metadata["trained"] is True and not model.training


def test_key_and_shape_mismatches_are_one_line(capsys, tmp_path, first_weight):
    state = torchvision_vgg16_state(first_weight)
    state["features.99.weight"] = state.pop("features.2.weight")
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)
    status, _, err = run(capsys, "frame-bounds", "vgg16", "--weights", str(renamed),
                         "--device", "cpu")  # fmt: skip
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "missing keys features.2.weight" in err and "unexpected keys features.99.weight" in err

    state = torchvision_vgg16_state(torch.randn(64, 1, 3, 3))  # a grey-image first conv
    grey = tmp_path / "grey.pth"
    torch.save(state, grey)
    status, _, err = run(capsys, "frame-bounds", "vgg16", "--weights", str(grey), "--device", "cpu")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "layer features.0 (features.0.weight) has shape (64, 1, 3, 3) in the file" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frame-bounds", "{file}"], "holds plain weights, not a crelu checkpoint; name the "
         "architecture and pass the file as weights: `crelu COMMAND vgg16 --weights"),
        (["frame-bounds", "vgg16@textures", "--weights", "{file}"], "needs an architecture name"),
        (["frame-bounds", "vgg16", "--weights", "{tmp}/missing.pth"], "missing.pth"),
    ],
)  # fmt: skip
def test_weights_mistakes_are_one_line(capsys, tmp_path, weights_file, argv, message):
    argv = [a.format(file=weights_file, tmp=tmp_path) for a in argv]
    status, _, err = run(capsys, *argv, "--device", "cpu")
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, err
