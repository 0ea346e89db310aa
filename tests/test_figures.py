"""Tests of the figures package: the whole pipeline on the tiny recipe, each script on its
own, the report's completeness and numbers (checked against independent computations),
the findings' criteria on hand-made numbers, and bad input (one line, exit status 2)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io as skio

from figures import findings
from figures.common import FIRST_SEED_ONLY, MODELS, Session, json_ready, markdown_table
from figures.run_all import SCRIPTS, run_figures
from invert.cli import main as crelu_main
from invert.nn.zoo import create_model

REPO = Path(__file__).resolve().parents[1]

# (height, width) of each PNG, as designed (figsize x 200 dpi, a slide's resolution): a
# spec, not a computed result (fig1: 12 conv1 filters of the AlexNet layout at the tiny
# width, 3 rows of pairs; fig5: two photographs x two models x layer-wise and joint at the
# input size, and layer-wise at the tiny sizes' larger one: 10 rows)
EXPECTED_PNGS = {
    "fig1_filter_pairs.png": (950, 2600),
    "fig2_pairing_relu.png": (1300, 2400),
    "fig3_pairing_crelu.png": (1300, 2400),
    "fig4_invariance.png": (900, 1600),
    "fig5_reconstructions.png": (4500, 2000),
}
FIGURE_IDS = {"fig1", "fig2", "fig3", "fig4", "fig5"}
TABLE_IDS = {"table1", "table6", "frame_bounds", "pooling"}
VERDICTS = {"holds", "does not hold", "inconclusive", "not testable"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole pipeline once on the tiny recipe, with its own model cache.

    Under pytest-xdist the workers share one run (the first to take the lock does it,
    the others read its report), so ``-n 2`` does not pay for it twice.
    """
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session only
    out, cache = root / "figures-tiny", root / "figures-tiny-cache"
    with open(root / "figures-tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "report.json").is_file():
            report = json.loads((out / "report.json").read_text())
        else:
            report = run_figures(
                out, recipe="tiny", cache_dir=cache, jobs=1, seeds=1, progress=False
            )
    return out, cache, report


@pytest.fixture(scope="session")
def tiny_session(tiny_run):
    """A session on the tiny models the pipeline cached (loaded once, shared)."""
    _, cache, _ = tiny_run
    return Session(recipe="tiny", cache_dir=cache, progress=False, train_if_missing=False)


# --- the whole pipeline -------------------------------------------------------------------


def test_every_png_is_a_valid_image_of_the_designed_size(tiny_run):
    out, _, report = tiny_run
    files = [name for item in report["figures"] for name in item["files"]]
    assert sorted(files) == sorted(EXPECTED_PNGS)
    for name, (height, width) in EXPECTED_PNGS.items():
        path = out / name
        image = skio.imread(path)
        assert image.shape[:2] == (height, width), name
        assert image.ndim == 3 and image.shape[2] in (3, 4), name
        assert image[..., :3].std() > 10, f"{name} is blank"
        # compressed: plots well under 200 KB, the photograph grid under 0.25 byte/pixel
        budget = 200_000 if name != "fig5_reconstructions.png" else 0.25 * height * width
        assert path.stat().st_size < budget, f"{name} is {path.stat().st_size} bytes"


def test_report_json_has_every_figure_table_and_finding(tiny_run):
    out, _, report = tiny_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert {f["id"] for f in report["figures"]} == FIGURE_IDS
    assert {t["id"] for t in report["tables"]} == TABLE_IDS
    for item in report["figures"] + report["tables"]:
        assert item["rows"], item["id"]
        assert item["title"]
    assert [f["id"] for f in report["findings"]] == ["F1", "F2", "F3", "F4", "F5", "F6"]
    for finding in report["findings"]:
        assert finding["verdict"] in VERDICTS, finding
        assert finding["criterion"] and finding["claim"] and finding["summary"]
        numbers = [v for v in _flatten(finding["numbers"]) if isinstance(v, (int, float))]
        if finding["verdict"] != "not testable":
            assert any(math.isfinite(v) for v in numbers if not isinstance(v, bool)), finding["id"]
    assert report["data"]["spec"] == "textures" and report["data"]["classes"] == 13
    assert report["recipe"]["name"] == "tiny"
    assert report["wall_time_s"] > 0 and report["machine"]["cpus"] >= 1
    assert {m["role"] for m in report["models"]} == set(MODELS)


def test_report_md_states_everything(tiny_run):
    out, _, report = tiny_run
    text = (out / "report.md").read_text()
    for name in EXPECTED_PNGS:
        assert f"]({name})" in text
    for item in report["figures"] + report["tables"]:
        assert item["title"] in text
    for finding in report["findings"]:
        assert f"| {finding['id']} |" in text
        assert f"**{finding['verdict']}**" in text
        assert finding["criterion"] in text
    for needle in ("Data: `textures`", "Recipe: `tiny`", "Wall time:", "Machine:", "params"):
        assert needle in text


def _flatten(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def test_table1_parameters_match_fresh_zoo_models(tiny_run):
    # independent of the loader and the cache: count the parameters of fresh models
    _, _, report = tiny_run
    table1 = next(t for t in report["tables"] if t["id"] == "table1")
    for row in table1["rows"]:
        fresh = create_model(row["name"], num_classes=13, width=0.125, dropout=0.0)
        assert row["params"] == sum(p.numel() for p in fresh.parameters())
    ratio = table1["rows"][-1]["params"] / table1["rows"][0]["params"]
    assert 0.45 < ratio < 0.55  # CReLU-half: about half the baseline


def test_pairing_numbers_match_a_numpy_reference(tiny_run, tiny_session):
    _, _, report = tiny_run
    fig1 = next(f for f in report["figures"] if f["id"] == "fig1")
    for row, role in zip(fig1["rows"], ("alex_relu", "alex_crelu")):
        weight = tiny_session.model(role).conv1.conv.weight.detach().double().numpy()
        flat = weight.reshape(len(weight), -1)
        unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        gram = unit @ unit.T
        np.fill_diagonal(gram, np.inf)
        assert row["mu_w_mean"] == pytest.approx(gram.min(axis=1).mean(), abs=1e-12)
    f1 = report["findings"][0]
    relu = fig1["rows"][0]
    expected_gap = (relu["mu_r_mean"] - relu["mu_w_mean"]) / relu["mu_r_std"]
    assert f1["numbers"]["relu_gap"] == pytest.approx(expected_gap)


def test_crelu_conv1_reconstruction_is_exact(tiny_run):
    # conv1 of the CReLU model: 12 filters on 3 channels, a frame; float64 walk back
    _, _, report = tiny_run
    fig5 = next(f for f in report["figures"] if f["id"] == "fig5")
    row = next(r for r in fig5["rows"] if r["model"] == "CReLU" and r["layer"] == "conv1")
    assert row["frame_path"] and not row["pooling_before"]
    assert row["rel_error"] < 1e-8
    conv4 = next(r for r in fig5["rows"] if r["model"] == "CReLU" and r["layer"] == "conv4")
    assert conv4["pooling_before"]


# --- what the figures show, through matplotlib's objects ---------------------------------


def _shown(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _all_text_inside(fig):
    """Every title, label and legend lies within the canvas (nothing clipped)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    holders = [fig, *getattr(fig, "subfigs", [])]
    texts = [h._suptitle for h in holders if h._suptitle is not None]
    texts += [t for ax in _shown(fig) for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    texts = [t for t in texts if t.get_text()] + list(fig.legends)  # (empty labels: no box)
    for text in texts:
        box = text.get_window_extent(renderer)
        assert -1 <= box.x0 and box.x1 <= width + 1, (text, box)
        assert -1 <= box.y0 and box.y1 <= height + 1, (text, box)


def test_pairing_histograms_have_labels_shared_bins_and_one_legend(tiny_session):
    from matplotlib.collections import Collection
    from matplotlib.patches import StepPatch

    from figures.fig2_pairing_relu import histogram_figure
    from theory.filter_pairing import layer_pairing

    stats = layer_pairing(tiny_session.model("relu"), layers=["conv1", "conv2", "conv4"],
                          trials=2)  # fmt: skip
    fig = histogram_figure(stats, title="Fig. 2: test", columns=2)
    axes = _shown(fig)
    assert len(axes) == 3 and fig.get_suptitle() == "Fig. 2: test"
    for ax, (name, layer) in zip(axes, stats.items()):
        assert ax.get_title().startswith(f"{name}: mean μ_w {layer.mean_w:.2f}")
        assert ax.get_xlabel().startswith("μ")
        learned, random = [p for p in ax.patches if isinstance(p, StepPatch)]
        assert np.array_equal(learned.get_data().edges, random.get_data().edges)  # bars align
        edges = learned.get_data().edges  # the bins cover both samples
        assert edges[0] <= min(layer.mu_w.min(), layer.mu_r.min())
        assert edges[-1] >= max(layer.mu_w.max(), layer.mu_r.max())
        assert not [c for c in ax.collections if isinstance(c, Collection) and c.get_label()
                    and not c.get_label().startswith("_")]  # fmt: skip
        assert ax.get_legend() is None  # one legend, for the figure
    assert [ax.get_ylabel() for ax in axes] == ["density", "", "density"]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()][:2] == [
        "μ_w: learned filters", "μ_r: Gaussian filters, same shape"]  # fmt: skip
    _all_text_inside(fig)
    one = histogram_figure(
        {"conv1": stats["conv1"]}, title="Pairing statistic μ per conv layer, convpool_c_crelu"
    )  # fmt: skip (crelu pairing --out, 1 layer)
    _all_text_inside(one)


def test_filter_pairs_are_drawn_as_labelled_pairs(tiny_session):
    from figures.fig1_filter_pairs import pairs_figure
    from theory.filter_pairing import layer_pairing

    model = tiny_session.model("crelu")
    weight = model.conv1.conv.weight.detach()
    stats = layer_pairing(model, layers="conv1", trials=2)["conv1"]
    fig = pairs_figure([("CReLU", weight, stats)])
    axes = _shown(fig)
    # numbers independent of the drawing and of theory.filter_pairing: numpy cosines
    flat = weight.double().numpy().reshape(len(weight), -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    gram = unit @ unit.T
    np.fill_diagonal(gram, np.inf)
    expected = {tuple(sorted((i, int(gram[i].argmin())))) for i in range(len(gram))}
    assert len(axes) == len(expected) < weight.shape[0] == 12  # each pair once
    shown_mu, drawn = [], set()
    for ax in axes:
        top, bottom = ax.get_xlabel().split("\n")
        i, j = (int(part.strip().lstrip("#")) for part in top.split("|"))
        drawn.add((i, j))
        assert bottom == f"μ = {unit[i] @ unit[j]:.2f}"
        shown_mu.append(unit[i] @ unit[j])
        assert ax.images[0].get_array().shape[:2] == (3, 7)  # 3x3 filter, gap, 3x3 pair
    assert drawn == expected
    assert shown_mu == sorted(shown_mu)  # most opposite first
    (block,) = fig.subfigs
    assert block._suptitle.get_text().startswith("CReLU conv1: 12 filters 3x3")
    _all_text_inside(fig)
    both = pairs_figure([("ReLU", weight, stats), ("CReLU", weight, stats)])
    _all_text_inside(both)
    from figures.fig1_filter_pairs import figure_size

    narrow = pairs_figure(
        [("convpool_c_crelu", weight, stats)], figsize=figure_size(12, width=7.5), title=""
    )  # crelu pairing's
    _all_text_inside(narrow)


def test_fig5_grid_titles_and_psnr_labels():
    from figures.fig5_reconstructions import LAYERS, natural_image, reconstruction_grid

    image = natural_image(32)[0].permute(1, 2, 0).numpy()
    assert image.std() > 0.1  # a photograph with content, not a dark crop
    rows = [{"psnr": p} for p in (300.0, 15.44, 12.9, -0.4)]
    fig = reconstruction_grid([("CReLU, 32 px", image, [image] * 4, rows)], figsize=(10, 2.5))
    axes = _shown(fig)
    assert [ax.get_title() for ax in axes] == ["input", *LAYERS]
    assert [ax.get_xlabel() for ax in axes] == [
        "32x32 input", "PSNR > 100 dB", "PSNR 15.4 dB", "PSNR 12.9 dB", "PSNR -0.4 dB"]  # fmt: skip
    assert axes[0].get_ylabel() == "CReLU, 32 px"
    _all_text_inside(fig)


def test_fig5_reconstructs_a_larger_input_too(tiny_run):
    _, _, report = tiny_run
    fig5 = next(f for f in report["figures"] if f["id"] == "fig5")
    assert fig5["image"] == "skimage:astronaut"
    # F2/F6 rest on two photographs, one outside the textures' sources
    assert {r["image"] for r in fig5["rows"]} == {"astronaut", "grace_hopper"}
    ((title, table),) = fig5["more_tables"].items()
    assert title == "The same at 48x48 pixels"
    assert {r["input"] for r in table["rows"]} == {"48x48"}
    assert [r["layer"] for r in table["rows"] if r["model"] == "CReLU"] == [
        "conv1", "conv2", "conv3", "conv4"]  # fmt: skip
    conv1 = table["rows"][0]
    assert conv1["rel_error"] < 1e-8  # conv1 is a frame at any size: exact
    text = (tiny_run[0] / "report.md").read_text()
    assert "The same at 48x48 pixels:" in text


def test_training_eta_from_measured_epochs():
    from figures.run_all import training_eta

    assert training_eta([(0, 10, None, 4.0, 0.0), (0, 10, None, 1.0, 0.0)], 2) is None
    assert training_eta([(10, 10, 3.0, 1.0, 0.0)], 2) == 0.0
    # one worker: everything in a row; the unmeasured model scaled by its cost (2x)
    assert training_eta([(5, 10, 1.0, 1.0, 0.5), (0, 4, None, 2.0, 0.0)], 1) == 4.5 + 8.0
    # two workers: the long job dominates, the short ones share the other worker
    eta = training_eta([(0, 10, 4.0, 4.0, 0.0), (2, 10, 1.0, 1.0, 0.0), (0, 10, None, 1.0, 0.0)],
                       2)  # fmt: skip
    assert eta == 40.0


# --- each script on its own -----------------------------------------------------------------


def test_python_m_runs_a_script_on_its_own(tiny_run, tmp_path):
    _, cache, _ = tiny_run
    out = tmp_path / "alone"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "figures.fig1_filter_pairs", "--out", str(out), "--recipe",
         "tiny", "--cache-dir", str(cache), "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        skio.imread(out / "fig1_filter_pairs.png").shape[:2]
        == EXPECTED_PNGS["fig1_filter_pairs.png"]
    )
    result = json.loads((out / "fig1_filter_pairs.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["ReLU", "CReLU"]


CHEAP = ("fig2_pairing_relu", "fig3_pairing_crelu", "table1_errors", "table6_correlations",
         "table_frame_bounds")  # fmt: skip


@pytest.mark.parametrize(
    "script",
    [
        s if s.__name__.split(".")[-1] in CHEAP else pytest.param(s, marks=pytest.mark.slow)
        for s in SCRIPTS
        if s.__name__ != "figures.fig1_filter_pairs"
    ],
    ids=lambda s: s.__name__.split(".")[-1],
)
def test_each_script_main_runs_on_its_own(script, tiny_session, tmp_path):
    result = script.main(tmp_path, session=tiny_session)
    assert result.rows and result.title
    for name in result.files:
        assert skio.imread(tmp_path / name).shape[:2] == EXPECTED_PNGS[name]


def test_script_main_builds_its_own_session(tiny_run, tmp_path):
    _, cache, _ = tiny_run
    from figures import table6_correlations

    result = table6_correlations.main(tmp_path, recipe="tiny", cache_dir=cache, progress=False)
    assert [r["layer"] for r in result.rows][:2] == ["conv1", "conv2"]


# --- bad input: one line, exit status 2, nothing trained ------------------------------------


def _one_error_line(capsys, prefix="crelu figures: error: "):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(prefix), err
    return err[0]


@pytest.mark.parametrize(
    "data, needle",
    [("cifar10:/nonexistent/cifar", "/nonexistent"), ("imagenet", "unknown data set spec")],
)
def test_bad_data_spec(data, needle, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["figures", "--out", str(tmp_path / "o"), "--data", data, "--recipe", "tiny",
            "--cache-dir", str(cache), "--quiet"]  # fmt: skip
    assert crelu_main(argv) == 2
    assert needle in _one_error_line(capsys)
    assert not cache.exists()  # failed before any training


@pytest.mark.parametrize("below", [False, True])
def test_unwritable_output_folder(below, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "figs" if below else blocker
    cache = tmp_path / "cache"
    argv = ["figures", "--out", str(out), "--recipe", "tiny", "--cache-dir", str(cache),
            "--quiet"]  # fmt: skip
    assert crelu_main(argv) == 2
    assert "cannot write to the output folder" in _one_error_line(capsys)
    assert not cache.exists()


def test_unwritable_cache_is_found_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = ["figures", "--out", str(tmp_path / "o"), "--recipe", "tiny", "--cache-dir",
            str(blocker / "cache"), "--quiet"]  # fmt: skip
    assert crelu_main(argv) == 2
    assert "cannot write to the model cache" in _one_error_line(capsys)


def test_bad_recipe_and_jobs(tmp_path, capsys):
    assert crelu_main(["figures", "--out", str(tmp_path), "--recipe", "huge", "--quiet"]) == 2
    assert "unknown recipe" in _one_error_line(capsys)
    assert crelu_main(["figures", "--out", str(tmp_path), "--jobs", "0", "--quiet"]) == 2
    assert "--jobs" in _one_error_line(capsys)


def test_standalone_script_bad_input_is_one_line(tmp_path, capsys):
    from figures import common, fig4_invariance

    argv = ["--out", str(tmp_path), "--data", "cifar100:/nonexistent", "--recipe", "tiny"]
    assert common.run_standalone(fig4_invariance.main, fig4_invariance.__doc__,
                                 fig4_invariance.STEM, argv) == 2  # fmt: skip
    _one_error_line(capsys, prefix="python -m figures.fig4_invariance: error: ")


def test_cache_from_an_older_toolkit_version_is_retrained_with_a_message(
    tiny_run, tiny_session, tmp_path, capfd
):
    old_cache = tmp_path / "old"
    old_cache.mkdir()
    current = tiny_session.cache_file("relu")
    older = old_cache / current.name.replace(current.name.rsplit("-v", 1)[1], "0.0.1.safetensors")
    shutil.copy(current, older)
    session = Session(recipe="tiny", cache_dir=old_cache, progress=False, device="cpu")
    capfd.readouterr()
    model = session.model("relu")
    err = capfd.readouterr().err
    assert "trained by another toolkit version" in err and "retraining" in err
    assert session.is_cached("relu") and older.exists()  # old entry left for its version
    assert model.metadata["toolkit_version"] != "0.0.1"


# --- the findings' criteria on hand-made numbers --------------------------------------------


def _crelu_rows(changes=None):
    rows = [
        dict(layer="conv1", pooling_before=False, frame_path=True, A_layer=1.0, rel_error=1e-13,
             psnr=math.inf),
        dict(layer="conv2", pooling_before=False, frame_path=False, A_layer=0.0, rel_error=0.5,
             psnr=12.0),
        dict(layer="conv3", pooling_before=False, frame_path=False, A_layer=0.0, rel_error=0.7,
             psnr=10.0),
        dict(layer="conv4", pooling_before=True, frame_path=False, A_layer=0.1, rel_error=0.9,
             psnr=8.0),
    ]  # fmt: skip
    for (index, key), value in (changes or {}).items():
        rows[index][key] = value
    return rows


def test_f2_criterion():
    assert findings.f2_reconstruction(_crelu_rows())["verdict"] == "holds"
    # an exact-looking layer on a frame path with a real error: not exact
    assert findings.f2_reconstruction(_crelu_rows({(0, "rel_error"): 1e-3}))["verdict"] == (
        "does not hold"
    )
    # no layer reached through frames only: exactness cannot be shown
    assert findings.f2_reconstruction(_crelu_rows({(0, "frame_path"): False}))["verdict"] == (
        "does not hold"
    )
    # PSNR rising from conv3 to conv4
    assert findings.f2_reconstruction(_crelu_rows({(3, "psnr"): 11.0}))["verdict"] == (
        "does not hold"
    )
    # two exact layers: 150 dB then 300 dB both count as the cap, not a rise
    rows = _crelu_rows({(0, "psnr"): 150.0, (1, "psnr"): 300.0, (1, "frame_path"): True,
                          (1, "rel_error"): 1e-12})  # fmt: skip
    assert findings.f2_reconstruction(rows)["verdict"] == "holds"
    assert findings.f2_reconstruction(_crelu_rows({(2, "psnr"): math.nan}))["verdict"] == (
        "does not hold"
    )


def test_f1_criterion_margin():
    crelu = {"mu_w_mean": -0.40, "mu_r_mean": -0.40, "mu_r_std": 0.1}
    at_margin = {"mu_w_mean": -0.50, "mu_r_mean": -0.40, "mu_r_std": 0.1}
    beyond = {"mu_w_mean": -0.51, "mu_r_mean": -0.40, "mu_r_std": 0.1}
    assert findings.f1_pairing(at_margin, crelu)["verdict"] == "does not hold"  # g = 1: not > 1
    assert findings.f1_pairing(beyond, crelu)["verdict"] == "holds"
    assert findings.f1_pairing(beyond, beyond)["verdict"] == "does not hold"


def test_f3_f4_f5_criteria():
    rows = [dict(layer=f"conv{i}", relu=2.0, crelu=2.0 if i <= 4 else 1.0) for i in range(1, 9)]
    assert findings.f3_invariance(rows)["verdict"] == "does not hold"  # ties on 4 of 8: not most
    rows[4]["crelu"] = 2.5
    assert findings.f3_invariance(rows)["verdict"] == "holds"
    table = [dict(role="relu", test_error=20.0, test_error_se=1.0, params=100),
             dict(role="crelu_half", test_error=20.0, test_error_se=1.0, params=56)]  # fmt: skip
    assert findings.f4_errors(table)["verdict"] == "does not hold"  # 0.56 > 0.55
    table[1]["params"] = 50
    assert findings.f4_errors(table)["verdict"] == "holds"  # equal errors count
    table[1]["test_error"] = None
    assert findings.f4_errors(table)["verdict"] == "not testable"
    corr = [dict(layer="conv1", abs_pair_mean=0.49, pair_mean=0.1, abs_nonpair_mean=0.1)]
    assert findings.f5_correlations(corr)["verdict"] == "holds"
    corr[0]["abs_pair_mean"] = 0.5
    assert findings.f5_correlations(corr)["verdict"] == "does not hold"
    assert findings.f5_correlations([])["verdict"] == "not testable"


def test_f6_criterion():
    rows = [dict(model=m, layer=f"conv{i}", pooling_before=i > 3, psnr=300.0 if i <= 3 else 9.0)
            for m in ("CReLU", "ReLU") for i in range(1, 5)]  # fmt: skip
    assert findings.f6_joint(rows)["verdict"] == "holds"  # conv4 after the pool is not judged
    rows[1]["psnr"] = 99.0
    assert findings.f6_joint(rows)["verdict"] == "does not hold"
    assert findings.f6_joint(rows[:4])["verdict"] == "not testable"


def test_missing_script_results_are_not_testable():
    verdicts = [f["verdict"] for f in findings.evaluate_findings({})]
    assert verdicts == ["not testable"] * 6


def test_helpers():
    assert json_ready({"x": torch.tensor([1.0, float("nan")])}) == {"x": [1.0, None]}
    table = markdown_table([{"a": 1, "b": math.inf}], ["b", "a"])
    assert table.splitlines()[0] == "| b | a |" and table.splitlines()[2] == "| inf | 1 |"


# keys of report.json that measure the run rather than the models (time, load, paths)
_RUN_KEYS = {"wall_time_s", "training_s", "step_seconds", "machine", "load_average_end",
             "source", "command", "seconds", "images_per_second"}  # fmt: skip


def _numbers_of(value):
    """The report without what measures the run, for an exact comparison."""
    if isinstance(value, dict):
        return {k: _numbers_of(v) for k, v in value.items() if k not in _RUN_KEYS}
    if isinstance(value, list):
        return [_numbers_of(v) for v in value]
    return value


def test_the_pipeline_gives_the_same_numbers_however_it_trains(tiny_run, tmp_path):
    """Again from an empty cache, one model after the other in this process, where the
    shared run trained two at a time in worker processes: every number of the report is
    the same (the training order and processes do not matter; the thread count of the
    training is pinned, tests/test_train.py; the analyses run here at the same count)."""
    _, _, first = tiny_run
    again = run_figures(tmp_path / "out", recipe="tiny", cache_dir=tmp_path / "cache", jobs=1,
                        seeds=1, progress=False)  # fmt: skip
    assert _numbers_of(json.loads(json.dumps(again))) == _numbers_of(first)


def test_two_seeds_give_per_seed_rows_and_seed_spread(tiny_run, tmp_path):
    from figures import fig1_filter_pairs, table1_errors

    _, cache, _ = tiny_run
    session = Session(recipe="tiny", cache_dir=cache, progress=False, seeds=2)
    fig1 = fig1_filter_pairs.main(tmp_path, session=session)
    assert [(r["model"], r["seed"]) for r in fig1.rows] == [
        ("ReLU", 0), ("CReLU", 0), ("ReLU", 1), ("CReLU", 1)
    ]  # fmt: skip
    table = table1_errors.main(tmp_path, session=session)
    for row in table.rows:
        seeds = (0,) if row["role"] in FIRST_SEED_ONLY else (0, 1)
        assert row["seeds"] == len(seeds)
        errors = [
            100 * (1 - session.model(row["role"], seed).metadata["test_accuracy"]) for seed in seeds
        ]
        if len(seeds) == 1:  # Table 1's context rows: the first seed only
            assert "test_errors" not in row and row["test_error"] == pytest.approx(errors[0])
            continue
        assert row["test_errors"] == pytest.approx(errors)
        assert row["test_error"] == pytest.approx(np.mean(errors))
        assert row["test_error_seed_std"] == pytest.approx(np.std(errors, ddof=1))
    f4 = findings.f4_errors(table.rows)
    assert f4["numbers"]["seeds"] == 2 and f4["verdict"] in VERDICTS
    f1 = findings.f1_pairing(fig1.where(model="ReLU"), fig1.where(model="CReLU"))
    assert f1["numbers"]["seeds"] == 2


def test_conv1_initial_weights_are_rebuilt_exactly(tmp_path):
    """F1 reports how far conv1 learned against its initial filters, which it rebuilds from
    the seed: with a vanishing learning rate the trained filters must be those filters."""
    from figures.fig1_filter_pairs import initial_conv1, mean_cosine
    from invert.train.recipe import get_recipe

    still = get_recipe("tiny").replace(name="still", lr=1e-12, epochs=1)
    session = Session(recipe=still, cache_dir=tmp_path, progress=False, device="cpu")
    trained = session.model("alex_relu", 0).conv1.conv.weight.detach()
    torch.testing.assert_close(initial_conv1(session, "alex_relu", 0), trained, rtol=1e-6,
                               atol=1e-9)  # fmt: skip
    assert abs(mean_cosine(initial_conv1(session, "alex_relu", 1), trained)) < 0.1
