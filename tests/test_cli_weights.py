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
    assert row["frame_A"] == pytest.approx(reference.A, rel=1e-9)
    assert row["frame_B"] == pytest.approx(reference.B, rel=1e-9)
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


# --- torchvision-layout checkpoints, FILE.py:FUNCTION, and what users get wrong (issue 18) --


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A 10-class fine-tuned resnet18 (small width) saved through DataParallel."""
    from invert.nn.reference import resnet18

    torch.manual_seed(4)
    model = resnet18(num_classes=10, width=1 / 16)
    path = tmp_path_factory.mktemp("r18") / "r18.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path, model


def test_fine_tuned_resnet18_loads_with_a_note(capsys, resnet18_file):
    path, source = resnet18_file
    status, out, err = run(capsys, "frame-bounds", "resnet18", "--weights", str(path),
                           "--layers", "conv1", "--image-size", "16", "--no-random",
                           "--json", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    (row,) = json.loads(out)
    reference = frame_bounds(source.conv1.weight.detach().double(), 16, stride=2)
    assert row["shape"] == "4x3x7x7" and row["frame_B"] == pytest.approx(reference.B, rel=1e-9)
    assert "note: removed the prefix 'module.' (DataParallel" in err


FACTORY = """
from torch import nn


def make_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


def broken():
    raise RuntimeError("no GPU here")


def not_a_model():
    return "a string"
"""


def test_your_own_architecture_from_a_file(capsys, tmp_path):
    (tmp_path / "net.py").write_text(FACTORY)
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(8))
    torch.save({"0.weight": weight, "0.bias": torch.zeros(4)}, tmp_path / "net.pth")
    status, out, err = run(capsys, "frame-bounds", f"{tmp_path}/net.py:make_net",
                           "--weights", str(tmp_path / "net.pth"), "--image-size", "8",
                           "--no-random", "--json", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    (row,) = json.loads(out)
    reference = frame_bounds(weight.double(), 8)
    assert row["layer"] == "0" and row["frame_A"] == pytest.approx(reference.A, rel=1e-9)
    assert row["frame_B"] == pytest.approx(reference.B, rel=1e-9)


def test_spec_help_says_it_runs_your_code(capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "FILE.py:FUNCTION" in text and "this runs your own code, because you named it" in text


def _bad_files(tmp):
    """The files the mistakes below use, written into ``tmp``."""
    from invert.nn.reference import resnet18, resnet50

    (tmp / "net.py").write_text(FACTORY)
    torch.save(resnet50(width=1 / 16, num_classes=4).state_dict(), tmp / "r50.pth")
    torch.save(resnet18(width=1 / 16), tmp / "whole.pt")
    half = {k: v.half() if v.is_floating_point() else v
            for k, v in resnet18(width=1 / 16).state_dict().items()}  # fmt: skip
    torch.save(half, tmp / "half.pth")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet18", "--weights", "{tmp}/r50.pth"],
         "holds resnet50 weights (its keys match resnet50), not resnet18"),
        (["resnet18", "--weights", "{tmp}/whole.pt"],
         "holds a pickled model object (invert.nn.reference.ResNet), not a state dict; "
         "save model.state_dict()"),
        (["resnet18", "--weights", "{tmp}/half.pth"],
         "holds torch.float16 weights (conv1.weight, "),
        (["resnet18", "--weights", "{tmp}/half.pth"], "convert them with .float()"),
        (["{tmp}/nowhere.py:make_net"], "no such file: {tmp}/nowhere.py"),
        (["{tmp}/net.py:make_nett"], "net.py has no function make_nett; its functions: "
         "broken, make_net, not_a_model"),
        (["{tmp}/net.py:broken"], "broken() in {tmp}/net.py raised RuntimeError: no GPU here"),
        (["{tmp}/net.py:not_a_model"], "returned str, not a torch.nn.Module"),
        (["{tmp}/net.py:make_net", "--weights", "{tmp}/r50.pth"],
         "holds resnet50 weights (its keys match resnet50), not the model of"),
    ],
)  # fmt: skip
def test_weights_and_factory_mistakes_are_one_line(capsys, tmp_path, argv, message):
    _bad_files(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    status, _, err = run(capsys, "frame-bounds", *argv, "--image-size", "8", "--device", "cpu")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert message.format(tmp=tmp_path) in err, err


def test_info_of_a_fine_tuned_resnet18(capsys, resnet18_file):
    path, source = resnet18_file
    status, out, err = run(capsys, "info", "resnet18", "--weights", str(path), "--json",
                           "--device", "cpu")  # fmt: skip
    assert status == 0, err
    info = json.loads(out)
    assert info["arch"] == "resnet18" and info["num_classes"] == 10 and info["input_size"] == 224
    assert info["parameters"] == sum(p.numel() for p in source.parameters())
    assert info["file"] == str(path)
