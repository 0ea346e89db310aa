"""The paper's protocols: fold and hold-out splits, voting, 10-patch crops, Single and
k-fold runs, and ``crelu evaluate``; references by hand (numpy slicing, numpy softmax,
item-by-item forward passes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invert.cli import main
from invert.data import ImageDataset
from invert.nn.zoo import create_model
from invert.train.checkpoints import save_checkpoint
from invert.train.protocols import (
    center_crop,
    evaluate_ten_crop,
    holdout_indices,
    kfold_indices,
    kfold_protocol,
    single_protocol,
    subset,
    ten_crop,
    topk_error,
    vote,
)
from invert.train.recipe import Hardware, Recipe, get_recipe
from invert.train.settings import RunSettings
from invert.train.trainer import train


def _coloured(n_per_class=12, classes=3, size=8, seed=0):
    """Class c has extra intensity in channel c % 3 (plus noise): learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 90, (classes * n_per_class, 3, size, size), generator=generator)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    for c in range(classes):
        images[labels == c, c % 3] += 120 + 10 * (c // 3)
    names = [f"c{c}" for c in range(classes)]
    return ImageDataset(images.to(torch.uint8), labels, names, spec="coloured")


def _small_net(classes=3):
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, classes),
    )  # fmt: skip


RECIPE = Recipe(name="proto", epochs=3, batch_size=8, lr=0.05, schedule="constant", flip=False,
                hardware=Hardware(eval_batch_size=64, num_workers=0))  # fmt: skip


def _hand_probabilities(model, images) -> np.ndarray:
    """Softmax in float64 numpy of the float32 logits of each image alone.

    ``images``: a data set (its items' images are used) or a list of C x H x W arrays.
    """
    model.eval()
    if hasattr(images, "classes"):
        images = [images[i][0] for i in range(len(images))]
    with torch.no_grad():
        logits = np.stack(
            [model(torch.as_tensor(np.ascontiguousarray(x))[None])[0].double().numpy()
             for x in images]
        )  # fmt: skip
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# --- splits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stratified", [True, False])
@pytest.mark.parametrize(
    "counts, folds", [([5, 5], 10), ([7, 3, 11], 10), ([1, 1, 1, 30], 4), ([13], 2), ([4, 9], 3)]
)
def test_kfold_splits_partition_the_data(counts, folds, stratified):
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(len(labels))]  # classes interleaved in the input
    parts = kfold_indices(labels, folds=folds, seed=3, stratified=stratified)
    assert len(parts) == folds
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))  # disjoint, union = all
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    if stratified:
        for c in range(len(counts)):
            per_fold = [int((labels[p] == c).sum()) for p in parts]
            assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    again = kfold_indices(labels, folds=folds, seed=3, stratified=stratified)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    if len(labels) > folds:
        other = kfold_indices(labels, folds=folds, seed=4, stratified=stratified)
        assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_fewer_samples_than_folds_and_other_bad_splits():
    with pytest.raises(ValueError, match="cannot split 9 samples into 10 folds"):
        kfold_indices(np.zeros(9, dtype=int), folds=10)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        kfold_indices([0, 1, 0], folds=1)
    with pytest.raises(TypeError, match="integers"):
        kfold_indices([0.5, 1.0], folds=2)
    with pytest.raises(ValueError, match="held-out fraction"):
        holdout_indices([0, 1, 0, 1], fraction=1.0)
    with pytest.raises(ValueError, match="both need at least one"):
        holdout_indices([0, 1, 0], fraction=0.05)


def test_holdout_split_is_a_stratified_partition():
    labels = np.repeat([0, 1, 2], [30, 20, 50])
    train_part, held = holdout_indices(labels, fraction=0.1, seed=2)
    assert len(held) == 10 and sorted(np.r_[train_part, held].tolist()) == list(range(100))
    assert [int((labels[held] == c).sum()) for c in range(3)] == [3, 2, 5]
    loose_train, loose_held = holdout_indices(labels, fraction=0.25, seed=2, stratified=False)
    assert len(loose_held) == 25 and not set(loose_train.tolist()) & set(loose_held.tolist())


def test_subsets_keep_classes_and_labels():
    data = _coloured(n_per_class=4)
    part = subset(data, [1, 5, 9], label="x")
    assert len(part) == 3 and part.classes == data.classes
    assert part.labels.tolist() == data.labels[[1, 5, 9]].tolist()
    assert torch.equal(part[2][0], data[9][0]) and part.spec == "coloured[x]"


# --- scores -------------------------------------------------------------------------------


def test_vote_is_the_argmax_of_the_averaged_scores():
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(5), size=(7, 40))  # 7 models, 40 items, 5 classes
    by_hand = scores.mean(axis=0).argmax(axis=1)
    assert vote(torch.from_numpy(scores)).tolist() == by_hand.tolist()
    assert vote([torch.from_numpy(s) for s in scores]).tolist() == by_hand.tolist()
    with pytest.raises(ValueError, match="finite"):
        vote(torch.full((2, 3, 4), float("nan")))


def test_topk_error_against_numpy():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 8))
    labels = rng.integers(0, 8, size=50)
    for k in (1, 3, 5):
        top = np.argsort(-scores, axis=1)[:, :k]
        expected = 1 - np.mean([labels[i] in top[i] for i in range(50)])
        assert topk_error(torch.from_numpy(scores), labels, k=k) == pytest.approx(expected)
    assert topk_error(torch.from_numpy(scores), labels, k=9) is None


# --- crops --------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width, h, w", [(7, 9, 4, 5), (8, 8, 3, 3), (5, 6, 5, 6),
                                                 (9, 4, 2, 3), (6, 6, 4, 4)])  # fmt: skip
def test_ten_crop_against_hand_computed_coordinates(height, width, h, w):
    images = torch.arange(2 * 3 * height * width, dtype=torch.float32).view(2, 3, height, width)
    x = images.numpy()
    # origins by hand: corners, and the centre rounded towards the top left
    origins = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w),
               ((height - h) // 2, (width - w) // 2)]  # fmt: skip
    expected = [x[:, :, t : t + h, l : l + w] for t, l in origins]
    expected += [e[:, :, :, ::-1] for e in expected]
    got = ten_crop(images, (h, w))
    assert got.shape == (2, 10, 3, h, w)
    for i in range(10):
        np.testing.assert_array_equal(got[:, i].numpy(), expected[i])
    single = ten_crop(images[1], (h, w))
    assert single.shape == (10, 3, h, w) and torch.equal(single, got[1])
    assert torch.equal(center_crop(images, (h, w)), got[:, 4])


def test_ten_crop_of_the_full_size_and_too_large_crops():
    image = torch.rand(3, 5, 5)
    patches = ten_crop(image, 5)
    assert all(torch.equal(patches[i], image) for i in range(5))
    assert all(torch.equal(patches[5 + i], image.flip(-1)) for i in range(5))
    with pytest.raises(ValueError, match="does not fit images of 5 x 5"):
        ten_crop(image, 6)
    with pytest.raises(ValueError, match="crop size"):
        ten_crop(image, 0)


def test_evaluate_ten_crop_against_item_by_item_scores():
    torch.manual_seed(0)
    classes = 7
    data = _coloured(n_per_class=3, classes=classes, size=11)
    model = _small_net(classes)
    result = evaluate_ten_crop(model, data, crop_size=8, batch_size=4, device="cpu")
    centre, ten = [], []
    for i in range(len(data)):
        image = data[i][0].numpy()
        # the 10 patches by hand: crops at the hand-computed origins, then mirrored
        origins = [(0, 0), (0, 3), (3, 0), (3, 3), (1, 1)]
        crops = [image[:, t : t + 8, l : l + 8] for t, l in origins]
        crops += [c[:, :, ::-1] for c in crops]
        p = _hand_probabilities(model, crops)
        centre.append(p[4])
        ten.append(p.mean(axis=0))
    labels = data.labels.numpy()

    def error(scores, k):
        top = np.argsort(-np.stack(scores), axis=1)[:, :k]
        return 1 - np.mean([labels[i] in top[i] for i in range(len(labels))])

    assert result["count"] == len(data) and result["crop_size"] == [8, 8]
    assert result["center_top1_error"] == pytest.approx(error(centre, 1))
    assert result["center_top5_error"] == pytest.approx(error(centre, 5))
    assert result["ten_crop_top1_error"] == pytest.approx(error(ten, 1))
    assert result["ten_crop_top5_error"] == pytest.approx(error(ten, 5))


# --- the training protocols -------------------------------------------------------------------


def test_kfold_protocol_average_and_vote_by_hand():
    train_set, test_set = _coloured(n_per_class=10), _coloured(n_per_class=6, seed=1)
    run = RunSettings(recipe=RECIPE, seed=4, device="cpu", progress=False)
    result = kfold_protocol(_small_net, train_set, test_set, folds=3, settings=run)
    parts = kfold_indices(train_set.labels, folds=3, seed=4)
    assert result.fold_sizes == [10, 10, 10] and len(result.models) == 3
    labels = test_set.labels.numpy()
    probabilities = [_hand_probabilities(m, test_set) for m in result.models]
    errors = [float(np.mean(p.argmax(axis=1) != labels)) for p in probabilities]
    assert result.test_errors == pytest.approx(errors)
    assert result.average_error == pytest.approx(np.mean(errors))
    assert result.standard_error == pytest.approx(np.std(errors, ddof=1) / np.sqrt(3))
    for model, part, measured in zip(result.models, parts, result.validation_errors):
        held = subset(train_set, part)
        p = _hand_probabilities(model, held)
        assert measured == pytest.approx(np.mean(p.argmax(axis=1) != held.labels.numpy()))
    # Vote: argmax of the averaged softmax probabilities, by hand (ignoring near ties)
    mean = np.mean(probabilities, axis=0)
    by_hand = mean.argmax(axis=1)
    ordered = np.sort(mean, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 1e-5
    assert np.array_equal(result.vote_predictions.numpy()[clear], by_hand[clear])
    assert result.vote_error == pytest.approx(np.mean(result.vote_predictions.numpy() != labels))
    assert result.vote_error <= 0.5  # the data are learnable: the ensemble is far above chance
    # the fold models differ (each saw other folds and started from other weights)
    first, second = (dict(m.named_parameters())["0.weight"] for m in result.models[:2])
    assert not torch.equal(first, second)
    json.dumps(result.to_dict())


def test_kfold_protocol_rejects_fewer_samples_than_folds():
    data = _coloured(n_per_class=2)  # 6 items
    with pytest.raises(ValueError, match="cannot split 6 samples into 10 folds"):
        run = RunSettings(recipe=RECIPE, device="cpu", progress=False)
        kfold_protocol(_small_net, data, data, settings=run)


def test_single_protocol_stops_at_the_held_out_loss(tmp_path):
    run = RunSettings(recipe=RECIPE.replace(epochs=4), seed=1, out=tmp_path, device="cpu",
                      progress=False)  # fmt: skip
    train_set, test_set = _coloured(n_per_class=12), _coloured(n_per_class=5, seed=2)
    result = single_protocol(_small_net, train_set, test_set, holdout=0.25, settings=run)
    assert (result.train_items, result.holdout_items) == (27, 9)
    # the target: the lowest held-out loss of a run on the rest, rebuilt here by hand
    part, held = holdout_indices(train_set.labels, fraction=0.25, seed=1)
    from invert.train.batches import INIT, derived_seed

    torch.manual_seed(derived_seed(1, 0, INIT))
    first = _small_net()
    history = train(
        first, subset(train_set, part), test_set=subset(train_set, held),
        recipe=RECIPE.replace(epochs=4), device="cpu", progress=False, seed=1,
    )  # fmt: skip
    losses = [h["test_loss"] for h in history]
    assert result.target_loss == pytest.approx(min(losses), rel=1e-6)
    assert result.target_epoch == int(np.argmin(losses)) + 1
    # the retraining run stopped at the first epoch whose training loss reached it
    measured = [h["train_eval_loss"] for h in result.history]
    assert all(loss > result.target_loss for loss in measured[:-1])
    assert result.reached == (measured[-1] <= result.target_loss)
    assert result.reached or result.epochs == 4
    # the reported numbers are the returned model's, computed here from its logits
    model = result.model.eval()
    with torch.no_grad():
        logits = model(train_set.images.float() / 255)
        test_logits = model(test_set.images.float() / 255)
    assert result.train_loss == pytest.approx(F.cross_entropy(logits, train_set.labels).item(),
                                              rel=1e-5)  # fmt: skip
    assert result.train_error == pytest.approx(
        (logits.argmax(1) != train_set.labels).float().mean().item()
    )
    assert result.test_error == pytest.approx(
        (test_logits.argmax(1) != test_set.labels).float().mean().item()
    )
    # both runs were saved in out/ and a second call resumes them without training
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "single-full.safetensors", "single-subset.safetensors",
    ]  # fmt: skip
    again = single_protocol(_small_net, train_set, test_set, holdout=0.25, settings=run)
    assert again.epochs == result.epochs and again.test_error == result.test_error
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), model.parameters()))


# --- crelu evaluate -------------------------------------------------------------------------


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_crelu_evaluate_kfold_json(capsys):
    status, out, err = run(
        capsys, "evaluate", "convpool_c@textures", "--protocol", "kfold", "--folds", "2",
        "--recipe", "tiny", "--epochs", "1", "--device", "cpu", "--quiet", "--json",
    )  # fmt: skip
    assert status == 0, err
    result = json.loads(out)
    assert result["protocol"] == "kfold" and result["folds"] == 2
    assert result["fold_sizes"] == [104, 104] and len(result["test_errors"]) == 2
    assert result["average_error"] == pytest.approx(np.mean(result["test_errors"]))


def test_crelu_evaluate_tencrop_on_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("convpool_c", num_classes=13, width=0.125)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, data="textures", recipe=get_recipe("tiny").to_dict())
    status, out, err = run(capsys, "evaluate", str(path), "--protocol", "tencrop", "--device",
                           "cpu", "--json")  # fmt: skip
    assert status == 0, err
    result = json.loads(out)
    assert result["count"] == 13 * 8 and result["image_size"] == [37, 37]
    assert result["crop_size"] == [32, 32] and 0 <= result["ten_crop_top5_error"] <= 1
    status, out, err = run(capsys, "evaluate", str(path), "--protocol", "tencrop", "--device",
                           "cpu")  # fmt: skip
    assert status == 0 and "10 patches" in out and "top-5 error %" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convpool_c@textures", "--protocol", "kfold", "--folds", "300"],
         "cannot split 208 samples into 300 folds"),
        (["convpool_c@textures", "--protocol", "kfold", "--image-size", "8"],
         "--image-size only applies to --protocol tencrop"),
        (["{tmp}/missing.safetensors", "--protocol", "tencrop"], "missing.safetensors"),
        (["nope@textures", "--protocol", "single"], "unknown model 'nope'"),
    ],
)  # fmt: skip
def test_crelu_evaluate_bad_input_is_one_line(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    status, _, err = run(capsys, "evaluate", *argv, "--recipe", "tiny", "--device", "cpu")
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("crelu evaluate: error:") and message in err


def test_crelu_evaluate_option_values(capsys):
    for bad in (["--folds", "1"], ["--holdout", "1.5"], ["--protocol", "vote"]):
        argv = ["evaluate", "convpool_c@textures", "--protocol", "kfold", *bad]
        with pytest.raises(SystemExit) as excinfo:
            main(argv)
        assert excinfo.value.code == 2
    capsys.readouterr()


def test_crelu_evaluate_has_help(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["evaluate", "--help"])
    assert excinfo.value.code == 0
    text = capsys.readouterr().out
    assert "usage: crelu evaluate" in text and "--protocol {single,kfold,tencrop}" in text
