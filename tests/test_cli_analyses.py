"""The crelu pairing / invariance / correlations commands, through invert.cli.main."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from invert.cli import main
from invert.nn.zoo import create_model
from theory.correlations import outgoing_correlations
from theory.filter_pairing import layer_pairing

LOADER = None  # the loader run() hands the command line; the fixture sets a stand-in


@pytest.fixture
def loaded(monkeypatch):
    """A stand-in for invert.load_model: tiny zoo models, the calls recorded."""
    calls, models = [], []

    def load_model(
        spec, *, recipe="fast", device=None, cache_dir=None, train_if_missing=True, progress=True
    ):
        calls.append(dict(spec=spec, recipe=recipe, device=device, cache_dir=cache_dir,
                          train_if_missing=train_if_missing, progress=progress))  # fmt: skip
        if spec.endswith(".safetensors"):
            raise FileNotFoundError(f"no such checkpoint: {spec}")
        torch.manual_seed(0)
        model = create_model(spec.partition("@")[0], width=0.125).eval()
        models.append(model)
        return model

    monkeypatch.setattr(sys.modules[__name__], "LOADER", load_model)
    return types.SimpleNamespace(calls=calls, models=models)


def run(capsys, *argv):
    status = main(list(argv), load_model=LOADER)
    out, err = capsys.readouterr()
    return status, out, err


def test_pairing_table_json_and_pictures(loaded, capsys, tmp_path):
    hist, pairs = tmp_path / "sub" / "hist.png", tmp_path / "pairs.png"
    status, out, err = run(
        capsys, "pairing", "convpool_c@textures", "--layers", "conv1,conv2", "--trials", "2",
        "--out", str(hist), "--pair-image", str(pairs), "--json", "--device", "cpu",
        "--no-train", "--recipe", "paper",
    )  # fmt: skip
    assert status == 0, err
    assert loaded.calls[0]["spec"] == "convpool_c@textures"
    assert loaded.calls[0]["train_if_missing"] is False and loaded.calls[0]["recipe"] == "paper"
    rows = json.loads(out)
    reference = layer_pairing(loaded.models[0], layers=["conv1", "conv2"], trials=2, seed=0)
    assert [r["layer"] for r in rows] == ["conv1", "conv2"]
    for row, stats in zip(rows, reference.values()):
        assert row["mu_w_mean"] == pytest.approx(stats.mean_w)
        assert row["mu_r_std"] == pytest.approx(stats.std_r)
    picture = imread(hist)
    assert picture.ndim == 3 and picture.shape[0] > 100
    image = imread(pairs)  # 12 conv1 filters: 3 rows of 4 labelled pairs
    assert image.ndim == 3 and image.shape[:2] == (475, 750)
    assert not list(tmp_path.glob("**/.*.tmp"))  # atomic writes leave nothing behind

    status, out, _ = run(capsys, "pairing", "convpool_c", "--layers", "conv3", "--trials", "1")
    assert status == 0 and "mu_w_mean" in out and "conv3" in out


def test_invariance_on_default_images_and_on_a_data_set(loaded, capsys):
    common = ["--layers", "conv1,conv4", "--n-images", "100", "--translations", "1,2",
              "--rotations", "none", "--device", "cpu", "--json"]  # fmt: skip
    status, out, err = run(capsys, "invariance", "convpool_c_crelu", *common)
    assert status == 0, err
    rows = json.loads(out)
    assert [r["layer"] for r in rows] == ["conv1", "conv4"]
    assert set(rows[0]) == {"layer", "units", "score", "translation"}
    assert rows[0]["units"] == 24 and rows[0]["score"] >= 1.0 - 1e-9  # top units beat chance
    status, out, err = run(
        capsys, "invariance", "convpool_c_crelu", "--data", "textures", *common[:-1],
        "--rotations", "10",
    )  # fmt: skip
    assert status == 0, err
    assert "rotation" in out and "conv4" in out.splitlines()[-1]


def test_correlations_table_and_json(loaded, capsys):
    status, out, err = run(capsys, "correlations", "convpool_c_crelu", "--json")
    assert status == 0, err
    rows = json.loads(out)
    reference = outgoing_correlations(loaded.models[0])
    assert [r["layer"] for r in rows] == list(reference)
    np.testing.assert_allclose(
        [r["nonpair_std"] for r in rows], [s.nonpair_std for s in reference.values()]
    )
    status, out, err = run(capsys, "correlations", "allcnn_b_crelu_all", "--layers", "conv1")
    assert status == 0 and "pair_mean" in out and "conv2" in out
    status, out, err = run(capsys, "correlations", "allcnn_b_crelu_all", "--absolute")
    assert status == 0 and "note: skipping CReLU layers" in err
    assert [line.split()[0] for line in out.splitlines()[2:]][-1] == "conv11"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pairing", "convpool_c", "--layers", "conv1,fc9"], "valid conv layers: conv1"),
        (["pairing", "x.safetensors"], "no such checkpoint"),
        (["pairing", "convpool_c", "--trials", "0"], "--trials must be positive"),
        (["pairing", "convpool_c", "--out", "hist.jpg"], "--out must be a .png file"),
        (["invariance", "convpool_c", "--n-images", "50", "--layers", "conv1"],
         "needs at least 100 images"),
        (["invariance", "convpool_c", "--layers", "conv1,nope"], "valid layers: normalize"),
        (["invariance", "convpool_c", "--translations", "a,b"], "--translations takes"),
        (["invariance", "convpool_c", "--rotations", "-5"], "must be positive"),
        (["invariance", "convpool_c", "--device", "tpu"], "unknown device"),
        (["correlations", "convpool_c"], "no CReLU layer"),
        (["correlations", "convpool_c_crelu", "--layers", "pool1"], "not a CReLU layer"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(loaded, capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith(f"crelu {argv[0]}: error:")


def test_real_checkpoint_through_the_real_loader(capsys, tmp_path):
    from invert.train.checkpoints import save_checkpoint

    model = create_model("convpool_c_crelu", width=0.125)
    path = save_checkpoint(model, tmp_path / "net.safetensors", data="textures")
    status, out, err = run(capsys, "correlations", str(path), "--json", "--device", "cpu")
    assert status == 0, err
    rows = json.loads(out)
    expected = outgoing_correlations(model)
    assert rows[0]["pair_mean"] == pytest.approx(expected["conv1"].pair_mean)
    status, out, err = run(capsys, "correlations", "convpool_c_crelu", "--device", "cpu")
    assert status == 0 and "crelu correlations: note:" in err  # untrained: a note, no warning
