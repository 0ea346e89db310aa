"""``crelu reconstruct`` end to end on a tiny checkpoint and small images in real formats."""

import json

import numpy as np
import pytest
import skimage.io
from torch import nn

from invert.cli import main
from invert.data.images import prepare_image
from invert.nn import activation_layers
from invert.nn.zoo import create_model
from invert.train.checkpoints import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    net = create_model("convpool_c_crelu", width=0.1)  # conv1: 10 filters on 3 channels
    net.normalize.set_statistics([0.5, 0.45, 0.4], [0.25, 0.25, 0.3])
    return str(save_checkpoint(net, folder / "net.safetensors", data="textures"))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    rng = np.random.default_rng(0)
    skimage.io.imsave(path, (rng.random((40, 52, 3)) * 255).astype(np.uint8))
    return str(path)


def run(capsys, *argv):
    code = main(["reconstruct", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_layer_writes_a_png_and_a_table(capsys, checkpoint, image, tmp_path):
    out_png = tmp_path / "rec.png"
    code, out, err = run(capsys, checkpoint, "--image", image, "--layers", "conv1",
                         "--out", str(out_png), "--device", "cpu")  # fmt: skip
    assert code == 0, err
    # the projection diagnostic is opt-in (it costs more than the reconstruction)
    assert out.splitlines()[0].split()[:3] == ["layer", "relative_error", "feature_error"]
    assert "> 100" in out.splitlines()[2]  # conv1 is exact: PSNR shown with the cap
    assert "photo.png is 52x40; reconstructing it at 32x32" in err
    assert "shorter side resized, centre-cropped" in err and "PSNR '> 100' (conv1)" in err
    figure = skimage.io.imread(out_png)  # a valid PNG, two panels side by side
    assert figure.ndim == 3 and figure.shape[1] > 1.3 * figure.shape[0]
    assert not list(tmp_path.glob(".rec.png*"))  # no temporary file left behind


def test_the_figure_titles_every_panel_and_labels_psnr():
    from invert.cli.reconstruct import reconstruction_figure

    image = np.full((3, 8, 8), 0.5)
    panels = [
        (f"conv{i}", image, {"psnr": psnr, "relative_error": err})
        for i, (psnr, err) in enumerate([(250.0, 1e-13), (19.53, 0.2), (-0.4, 2.1)] * 2)
    ]
    figure = reconstruction_figure(image, panels)  # 7 panels: two rows of 5
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["original"] + [name for name, *_ in panels]
    labels = [ax.get_xlabel() for ax in shown]
    assert labels[0] == "8x8 input" and labels[1] == "PSNR > 100 dB\nerror 1e-13"
    assert labels[2] == "PSNR 19.5 dB\nerror 0.2" and labels[3] == "PSNR -0.4 dB\nerror 2.1"
    assert figure.get_suptitle().startswith("Reconstructions from each layer")
    # nothing drawn outside the canvas (the old figure cut off its top title line), wide
    # or narrow (one layer: two panels)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in (figure, reconstruction_figure(image, panels[:1])):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        width, height = fig.bbox.width, fig.bbox.height
        texts = [ax.title for ax in fig.axes if ax.get_visible()] + [fig._suptitle]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height


def test_all_layers_json_exact_at_the_frame_layer(capsys, checkpoint, image):
    code, out, err = run(capsys, checkpoint, "--image", image, "--layers", "conv1,conv2,conv3",
                         "--json", "--device", "cpu", "--projection",
                         "--strategy", "layerwise")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "conv3"]
    assert rows[0]["relative_error"] < 1e-8 and rows[0]["psnr"] > 150
    assert rows[0]["projection_error"] < 1e-6 and rows[0]["converged"]
    assert rows[2]["relative_error"] > rows[0]["relative_error"]
    assert rows[1]["steps"][0]["operation"] == "CReLU"
    assert "note: recoverable = ||P u|| / ||u||" in err


def test_the_default_recovers_deep_layers_jointly_with_a_certificate(capsys, checkpoint, image):
    code, out, err = run(capsys, checkpoint, "--image", image, "--layers", "conv2,conv3",
                         "--json", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    for row in rows:  # conv2 and conv3 are not frames: the walk alone cannot be exact
        assert row["strategy"] == "joint" and row["relative_error"] < 1e-8
        assert row["unique"] and row["certificate"]["unique"]
        assert 0 < row["JtJ_min"] <= row["JtJ_max"]
        assert row["gauss_newton"] and row["certificate"]["residual"] < 1e-9
    code, out, err = run(capsys, checkpoint, "--image", image, "--layers", "conv3", "--device",
                         "cpu", "--strategy", "joint", "--bounds", "0,1", "--csv")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("layer,") and ",joint," in out.splitlines()[1]
    code, _, err = run(capsys, checkpoint, "--image", image, "--layers", "conv3",
                       "--bounds", "1,0")  # fmt: skip
    assert code == 2 and "--bounds needs LO < HI" in err


def test_skimage_image_and_float32(capsys, checkpoint):
    args = ["--image", "skimage:camera", "--layers", "conv2", "--float32"]
    code, out, err = run(capsys, checkpoint, *args, "--json", "--device", "cpu")
    assert code == 0, err
    row = json.loads(out)[0]
    assert "projection_error" not in row and 0 < row["relative_error"] < 1


def test_image_preparation_grey_rgba_and_crop():
    grey = prepare_image(np.linspace(0, 255, 60 * 80).reshape(60, 80).astype(np.uint8), 32)
    assert grey.shape == (3, 32, 32) and np.allclose(grey[0], grey[2])
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    red = prepare_image(rgba, 16)
    assert np.allclose(red[0], 1) and np.allclose(red[1:], 0)
    assert prepare_image(np.ones((9, 9, 3)), 32, channels=1).shape == (1, 32, 32)


def test_activation_layers_of_plain_sequentials():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    assert activation_layers(model) == ["2", "3"]
    assert activation_layers(create_model("vgg16", width=0.05))[:2] == ["features.1", "features.3"]
    assert activation_layers(create_model("convpool_c", width=0.1))[:2] == ["conv1", "conv2"]


def test_non_converging_solve_is_reported(capsys, checkpoint, image):
    args = ["--image", image, "--layers", "conv1,conv2", "--cg-iterations", "1"]
    code, out, err = run(capsys, checkpoint, *args, "--strategy", "layerwise", "--json",
                         "--device", "cpu")  # fmt: skip
    assert code == 0
    notes = [line for line in err.splitlines() if "CGLS iterations" in line]
    assert len(notes) == 2  # one note per layer, not one per solve
    assert "note: conv1: " in notes[0] and "note: conv2: " in notes[1]
    assert all("stopped at 1 CGLS iterations" in n and "raise --cg-iterations" in n for n in notes)
    assert [row["converged"] for row in json.loads(out)] == [False, False]


def test_a_walk_that_misses_the_features_names_the_cause_not_the_iterations(
    capsys, checkpoint, image
):
    # conv2's map has a ReLU-free CReLU chain but conv2 has fewer outputs than inputs: its
    # least-squares solves converge, and the walk still misses the features
    args = ["--image", image, "--layers", "conv2", "--strategy", "layerwise", "--json"]
    code, out, err = run(capsys, checkpoint, *args, "--device", "cpu")
    assert code == 0
    (row,) = json.loads(out)
    assert row["solve_residual"] > 1e-3 and not row["converged"], row
    assert all(step["converged"] for step in row["steps"])  # every layer's solve converged
    (line,) = [n for n in err.splitlines() if "note: conv2: " in n]
    assert f"> tol {1e-10:.0e}" in line and "--strategy joint" in line, line
    assert "--cg-iterations" not in line and "--max-iter" not in line and "1e-12" not in line


def test_a_layer_that_is_not_injective_gets_a_note_and_few_steps(capsys, checkpoint, image):
    # conv7 compares 19 x 6 x 6 = 684 numbers with a 3 x 32 x 32 = 3072-value image
    args = ["--image", image, "--layers", "conv7", "--strategy", "joint"]
    code, out, err = run(capsys, checkpoint, *args, "--json", "--device", "cpu")
    assert code == 0
    (row,) = json.loads(out)
    said = [line for line in err.splitlines() if "not injective" in line]
    notes = [line for line in said if "note:" in line]
    assert len(notes) == 1 and "note: conv7: not injective" in notes[0], err
    # and at once, before the solve's progress: a layer-wise or Gauss-Newton bar
    assert said[0].startswith("conv7: not injective") and "before the solve" in said[0], err
    assert err.index(said[0]) < err.index("Gauss-Newton"), err
    assert "joint solve stopped" not in err  # the note above says why, once
    assert "rank <= 684 < 3072" in notes[0] and "--prior tv" in notes[0]
    assert row["unique"] is False and len(row["gauss_newton"]) <= 5


def test_a_joint_solve_that_stops_short_is_reported_as_such(capsys, checkpoint, image):
    args = ["--image", image, "--layers", "conv2", "--strategy", "joint", "--max-steps", "1"]
    code, out, err = run(capsys, checkpoint, *args, "--json", "--device", "cpu")
    assert code == 0
    (row,) = json.loads(out)
    assert row["converged"] is False and row["unique"] is False
    notes = [line for line in err.splitlines() if "joint solve" in line]
    assert len(notes) == 1 and "note: conv2: " in notes[0], err
    assert "used all 1 Gauss-Newton steps" in notes[0] and "raise --max-steps" in notes[0]
    assert f"> tol {1e-10:.0e}" in notes[0]
    assert "CGLS iterations" not in err  # the layer-wise start's solves are not the result


@pytest.fixture
def bad_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    skimage.io.imsave(tiny, np.zeros((4, 6, 3), np.uint8), check_contrast=False)
    return {"text": str(text), "tiny": str(tiny), "folder": str(tmp_path)}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "{text}", "--layers", "conv1"], "cannot read"),
        (["--image", "{folder}/missing.png", "--layers", "conv1"], "no such image file"),
        (["--image", "{tiny}", "--layers", "conv1"], "6x4 pixels, too small"),
        (["--image", "skimage:nothing", "--layers", "conv1"], "unknown image 'skimage:nothing'"),
        (["--image", "skimage:camera", "--layers", "conv12"], "unknown layer .conv12.; valid"),
        (["--image", "skimage:camera", "--layers", "flatten", "--strategy", "layerwise"],
         r"'flatten' \(Flatten\)"),
        (["--image", "skimage:camera"], "give --layer"),
        (["--image", "skimage:camera", "--layers", "conv1", "--out", "{folder}/x.jpg"], ".png"),
        (["--image", "skimage:camera", "--layers", "conv1", "--cg-iterations", "0"],
         "cg-iterations"),
        (["--image", "skimage:camera", "--layers", "conv1", "--tol", "0"], "--tol"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(capsys, checkpoint, bad_files, args, message):
    args = [a.format(**bad_files) for a in args]
    code, out, err = run(capsys, checkpoint, *args, "--device", "cpu")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crelu reconstruct: error:")
    assert __import__("re").search(message, lines[0]), lines[0]


def test_bad_model_spec_exits_2(capsys, image):
    code, _, err = run(capsys, "no_such_model", "--image", image, "--layers", "conv1")
    assert code == 2 and "no_such_model" in err and len(err.strip().splitlines()) == 1


def test_every_setting_a_note_can_advise_has_a_command_line_spelling():
    from invert.cli.reconstruct import _SPELLING
    from invert.reconstruction.result import PYTHON_SPELLING

    assert set(_SPELLING) == set(PYTHON_SPELLING)
