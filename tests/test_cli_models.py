"""``crelu models``, ``crelu train``, ``crelu info``: results and one-line errors."""

from __future__ import annotations

import json

import pytest

from invert.cli import main
from invert.data import TEXTURE_NAMES
from invert.nn.zoo import create_model, list_models
from invert.train.checkpoints import save_checkpoint


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_train_then_info(tmp_path, capsys):
    out = tmp_path / "X"
    status, stdout, err = run(
        capsys, "train", "convpool_c_crelu@textures", "--recipe", "tiny", "--out", str(out),
        "--device", "cpu", "--quiet", "--epochs", "1",
    )  # fmt: skip
    assert status == 0, err
    accuracy = float(stdout.strip().splitlines()[-1].split(":")[1])
    assert 0.0 <= accuracy <= 1.0
    assert out.is_file()

    status, stdout, err = run(capsys, "info", str(out), "--json")
    assert status == 0, err
    info = json.loads(stdout)
    reference = create_model("convpool_c_crelu", **info["config"])
    assert info["arch"] == "convpool_c_crelu" and info["data"] == "textures"
    assert info["parameters"] == sum(p.numel() for p in reference.parameters())
    assert info["classes"] == list(TEXTURE_NAMES) and info["num_classes"] == len(TEXTURE_NAMES)
    assert info["epochs"] == 1 and info["final_test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert info["recipe"] == "tiny" and len(info["normalization"]["mean"]) == 3

    status, stdout, err = run(capsys, "info", str(out))
    assert status == 0, err
    assert "convpool_c_crelu" in stdout and "parameters:" in stdout and "history:" in stdout


def test_train_into_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRELU_CACHE", str(tmp_path))
    argv = ("train", "convpool_c@textures", "--recipe", "tiny", "--device", "cpu", "--quiet")
    status, stdout, err = run(capsys, *argv)
    assert status == 0, err and stdout.startswith("test accuracy:")
    entries = list(tmp_path.glob("convpool_c@textures-tiny-*.safetensors"))
    assert len(entries) == 1
    stamp = entries[0].stat().st_mtime_ns
    status, again, err = run(capsys, *argv)  # a cache hit: same answer, nothing rewritten
    assert status == 0 and again == stdout and entries[0].stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.lock"))  # no empty lock files stay in the cache
    # crelu info takes MODEL@DATA like every other command: the cached entry
    status, out, err = run(capsys, "info", "convpool_c@textures", "--recipe", "tiny",
                           "--no-train", "--json", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    info = json.loads(out)
    assert info["file"] == str(entries[0]) and info["arch"] == "convpool_c"
    assert info["recipe"] == "tiny" and info["epochs"] >= 1
    status, out, err = run(capsys, "info", "convpool_c@textures", "--recipe", "tiny",
                           "--no-train", "--csv", "--device", "cpu")  # fmt: skip
    assert status == 0 and out.splitlines()[0] == "epoch,lr,train_loss,train_acc,test_acc,seconds"
    assert len(out.splitlines()) == 1 + info["epochs"]


def test_models_lists_the_registry_with_parameter_counts(capsys):
    status, stdout, _ = run(capsys, "models", "--json")
    rows = json.loads(stdout)
    assert status == 0 and [row["name"] for row in rows] == list_models()
    counts = {row["name"]: row["parameters"] for row in rows}
    for name in ("convpool_c", "convpool_c_crelu_half", "allcnn_b_crelu1_4"):  # real weights
        assert counts[name] == sum(p.numel() for p in create_model(name).parameters())
    assert counts["vgg16"] == 138_357_544 - 4096 * 990 - 990  # torchvision's, 10 classes
    status, stdout, _ = run(capsys, "models")
    assert stdout.splitlines()[0].split() == ["name", "family", "input_size", "parameters",
                                              "summary"]  # fmt: skip


@pytest.mark.parametrize("command", ["train", "info", "models"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as excinfo:
        main([command, "--help"])
    assert excinfo.value.code == 0
    assert "usage: crelu " + command in capsys.readouterr().out


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    save_checkpoint(create_model("convpool_c", width=0.125), path)
    path.write_bytes(path.read_bytes()[:300])
    return path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nope@textures", "--recipe", "tiny"], "unknown model 'nope'"),
        (["train", "convpool_c", "--recipe", "tiny"], "MODEL@DATA"),
        (["train", "convpool_c@imagenet", "--recipe", "tiny"], "unknown data set"),
        (["train", "convpool_c@cifar10:{tmp}/missing", "--recipe", "tiny"], "missing"),
        (["train", "convpool_c@textures", "--device", "tpu"], "device"),
        (["info", "{tmp}/missing.safetensors"], "missing.safetensors"),
        (["info", "{corrupt}"], "corrupt or truncated"),
        (["info", "{tmp}"], "not a file"),
        (["info", "convpool_c@textures", "--no-train", "--cache-dir", "{tmp}/c"],
         "no cached model for convpool_c@textures"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    corrupt = _corrupt(tmp_path)
    argv = [a.format(tmp=tmp_path, corrupt=corrupt) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "o")]
    status, stdout, err = run(capsys, *argv)
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"crelu {argv[0]}: error:") and message in err
    assert not (tmp_path / "o").exists()


def test_bad_option_values_exit_2(capsys):
    for bad in (["--epochs", "0"], ["--lr", "-1"], ["--recipe", "slow"]):
        with pytest.raises(SystemExit) as excinfo:
            main(["train", "convpool_c@textures", *bad])
        assert excinfo.value.code == 2
    capsys.readouterr()
