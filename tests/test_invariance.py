"""Invariance scores: thresholds with ties, known-answer units, references in numpy/skimage."""

import math

import numpy as np
import pytest
import torch
from skimage.transform import rotate
from torch import nn

from invert.data import natural_images
from invert.nn.zoo import create_model
from theory.invariance import (
    InvarianceScore,
    firing_weights,
    invariance_scores,
    transform_crops,
)


class GlobalAverage(nn.Module):
    """One unit: the mean of the image, on a 3 x 3 map (the centre is what counts)."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None, None, None].expand(-1, 1, 3, 3)


class PixelDetector(nn.Module):
    """Units = the values of fixed pixels of channel 0 (a 2-D output, one unit each)."""

    def __init__(self, pixels):
        super().__init__()
        self.pixels = pixels

    def forward(self, x):
        return torch.stack([x[:, 0, r, c] for r, c in self.pixels], dim=1)


class Quantized(nn.Module):
    """Heavily tied responses: pixel values rounded to 4 levels."""

    def __init__(self, pixels):
        super().__init__()
        self.detect = PixelDetector(pixels)

    def forward(self, x):
        return torch.round(self.detect(x) * 3)


def wrap(module):
    return nn.Sequential(module)  # layer "0"


def numpy_local_rate(base, moved, k):
    """L of one unit without ties: base (N,), moved (N, T) responses."""
    t = np.sort(base)[::-1][k - 1]
    firing = base >= t
    assert firing.sum() == k  # no ties in the data of these tests
    return (moved[firing] >= t).mean()


# --- thresholds --------------------------------------------------------------------


@pytest.mark.parametrize("n, rate", [(200, 0.05), (300, 0.01), (101, 0.03), (10, 0.5)])
def test_threshold_gives_the_requested_rate_with_heavy_ties(n, rate):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3, size=(n, 6)).astype(np.float32)
    values[:, 4] = 0  # a dead unit: every response ties
    values[:, 5] = rng.permutation(n)  # no ties at all
    threshold, tie, weights = firing_weights(torch.from_numpy(values), rate)
    k = math.ceil(round(rate * n, 9))
    assert abs(k - rate * n) < 1  # within one image of the requested count
    for unit in range(6):
        column = values[:, unit]
        t = np.sort(column)[::-1][k - 1]  # k-th largest
        above, at = (column > t).sum(), (column == t).sum()
        p = (k - above) / at
        assert threshold[unit].item() == t
        assert tie[unit].item() == pytest.approx(p, abs=1e-15)
        expected = np.where(column > t, 1.0, np.where(column == t, p, 0.0))
        np.testing.assert_allclose(weights[:, unit].numpy(), expected, atol=1e-15)
        assert weights[:, unit].sum().item() == pytest.approx(k, abs=1e-9)  # G = k / N exactly
    assert tie[4].item() == pytest.approx(k / n)
    assert tie[5].item() == 1.0 and (weights[:, 5] > 0).sum() == k


def test_local_rate_with_ties_is_the_expectation_of_random_tie_breaking():
    """Monte Carlo reference: break each tie at random, keep exactly k firing images."""
    pixels = [(3, 3), (0, 5)]
    rng = np.random.default_rng(1)
    images = rng.random((60, 1, 8, 8)).astype(np.float32)
    shifts = [(0, 1), (1, 0), (-2, 3)]
    result = invariance_scores(
        wrap(Quantized(pixels)),
        torch.from_numpy(images),
        score=InvarianceScore(
            translations=shifts, rotations=(), boundary="circular", firing_rate=0.1
        ),
        layers="0",
        device="cpu",
    )
    k = 6
    for unit, (r, c) in enumerate(pixels):
        base = np.round(images[:, 0, r, c] * 3)
        moved = np.stack(
            [np.round(np.roll(images[:, 0], s, axis=(-2, -1))[:, r, c] * 3) for s in shifts], 1
        )
        t = np.sort(base)[::-1][k - 1]
        above, tied = np.flatnonzero(base > t), np.flatnonzero(base == t)
        p = (k - len(above)) / len(tied)
        draws = []
        for _ in range(4000):
            chosen = np.concatenate([above, rng.choice(tied, k - len(above), replace=False)])
            fire = (moved[chosen] > t) | ((moved[chosen] == t) & (rng.random((k, 3)) < p))
            draws.append(fire.mean())
        error = np.std(draws) / math.sqrt(len(draws))
        assert result.L["0"][unit] == pytest.approx(np.mean(draws), abs=5 * error + 1e-12)
        assert result.G["0"][unit] == pytest.approx(0.1)


# --- known-answer units ------------------------------------------------------------


def test_global_average_is_invariant_to_circular_shifts():
    rng = np.random.default_rng(2)
    n = 120
    # multiples of 1/64: every sum is exact in float32, whatever the order of the terms
    pool = rng.integers(0, 64, size=(3 * n, 1, 16, 16)).astype(np.float32) / 64
    _, first = np.unique(pool.sum(axis=(1, 2, 3)), return_index=True)
    images = pool[np.sort(first)[:n]]  # distinct means: no ties, so L = 1 exactly
    assert len(images) == n
    shifts = [(0, 3), (5, 0), (-4, -7), (8, 8)]
    x = torch.from_numpy(images)
    average = invariance_scores(
        wrap(GlobalAverage()),
        x,
        score=InvarianceScore(
            translations=shifts, rotations=(), boundary="circular", firing_rate=0.05
        ),
        layers="0",
        device="cpu",
    )
    k = 6
    assert average.firing_count == k
    assert average.L["0"].tolist() == [1.0]
    assert average.S["0"][0] == pytest.approx(1 / average.G["0"][0]) == pytest.approx(n / k)
    assert average.family_scores["translation"]["0"] == pytest.approx(n / k)


def _pixel_reference(images, pixels, shifts, k):
    out = []
    for r, c in pixels:
        base = images[:, 0, r, c]
        moved = np.stack([np.roll(images[:, 0], s, axis=(-2, -1))[:, r, c] for s in shifts], 1)
        out.append(numpy_local_rate(base, moved, k))
    return np.array(out)


def test_single_pixel_detector_matches_numpy_roll_and_is_not_invariant():
    rng = np.random.default_rng(3)
    images = rng.random((200, 1, 16, 16)).astype(np.float32)
    shifts = [(0, 3), (5, 0), (-4, -7), (8, 8), (1, 1)]
    pixels = [(2, 3), (8, 8), (15, 0)]
    result = invariance_scores(
        wrap(PixelDetector(pixels)),
        torch.from_numpy(images),
        score=InvarianceScore(
            translations=shifts, rotations=(), boundary="circular", firing_rate=0.05
        ),
        layers="0",
        device="cpu",
    )
    expected = _pixel_reference(images, pixels, shifts, k=10)
    np.testing.assert_array_equal(result.L["0"], expected)
    assert (result.L["0"] < 0.5).all()  # shifted pixels are other pixels: chance level
    np.testing.assert_allclose(result.S["0"], expected / 0.05)


def test_large_images_are_transformed_whole_and_centre_cropped():
    rng = np.random.default_rng(4)
    big = rng.random((100, 1, 20, 21)).astype(np.float32)
    shifts = [(2, -3), (-4, 4), (0, 1)]
    pixels = [(0, 0), (5, 7), (11, 11)]
    result = invariance_scores(
        wrap(PixelDetector(pixels)),
        torch.from_numpy(big),
        score=InvarianceScore(
            translations=shifts, rotations=(), boundary="error", firing_rate=0.05
        ),
        layers="0",
        input_size=12,
        device="cpu",
    )
    top, left = (20 - 12) // 2, (21 - 12) // 2
    expected = []
    for r, c in pixels:
        base = big[:, 0, top + r, left + c]
        # content moves by (dy, dx): the crop sees the big image at (y - dy, x - dx)
        moved = np.stack([big[:, 0, top + r - dy, left + c - dx] for dy, dx in shifts], 1)
        expected.append(numpy_local_rate(base, moved, k=5))
    np.testing.assert_array_equal(result.L["0"], expected)
    with pytest.raises(ValueError, match=r"at least 22 x 22; got 20 x 21"):
        invariance_scores(
            wrap(PixelDetector(pixels)),
            torch.from_numpy(big),
            score=InvarianceScore(translations=[5], rotations=(), boundary="error"),
            layers="0",
            input_size=12,
            device="cpu",
        )


# --- transformations ----------------------------------------------------------------


def test_circular_translation_is_torch_roll():
    x = torch.rand(3, 2, 9, 7)
    _, moved, t = transform_crops(x, translations=[2, (-3, 1)], rotations=(), boundary="circular")
    assert t.shifts == ((0, 2), (2, 0), (-3, 1))
    for i, shift in enumerate(t.shifts):
        assert torch.equal(moved[:, i], torch.roll(x, shift, dims=(-2, -1)))


@pytest.mark.parametrize("angle", [17.0, -30.0, 90.0])
def test_rotation_matches_skimage_rotate_on_the_central_crop(angle):
    rng = np.random.default_rng(5)
    image = rng.random((64, 64)).astype(np.float32)
    base, moved, _ = transform_crops(
        torch.from_numpy(image)[None, None], translations=(), rotations=[angle],
        input_size=32, boundary="error",
    )  # fmt: skip
    reference = rotate(image, angle, order=1, mode="constant")[16:48, 16:48]
    np.testing.assert_allclose(base[0, 0].numpy(), image[16:48, 16:48])
    np.testing.assert_allclose(moved[0, 0, 0].numpy(), reference, atol=2e-5)


def test_boundary_rules_and_margin():
    x = torch.rand(2, 3, 32, 32)
    for boundary in ("reflect", "circular", "replicate", "zeros"):
        base, moved, t = transform_crops(x, boundary=boundary)  # the defaults
        assert base.shape == (2, 3, 32, 32) and moved.shape == (2, 28, 3, 32, 32)
        assert torch.equal(base, x)
    assert len(t.shifts) == 16 and len(t.angles) == 12 and (0, 0) not in t.shifts
    # reflection: a shift by one pixel reflects the edge row into view
    _, moved, _ = transform_crops(x, translations=[(1, 0)], rotations=(), boundary="reflect")
    assert torch.equal(moved[:, 0, :, 0], x[:, :, 1]) and torch.equal(
        moved[:, 0, :, 1:], x[:, :, :-1]
    )
    # default translations scale with the input: 7..28 px for 224
    _, _, t = transform_crops(torch.rand(1, 1, 224, 224), rotations=(), boundary="zeros")
    assert sorted({abs(dx) for _, dx in t.shifts if dx}) == [7, 14, 21, 28]


# --- models, data, batching ---------------------------------------------------------


def test_zoo_model_on_default_natural_images_batches_consistently():
    model = create_model("convpool_c_crelu", width=0.125).double().train()
    score = InvarianceScore(translations=[2, -2], rotations=[10.0], firing_rate=0.05)
    kwargs = dict(layers=["conv1", "conv4"], score=score, n_images=40, device="cpu")
    one = invariance_scores(model, **kwargs, batch_size=7)
    many = invariance_scores(model, **kwargs, batch_size=1000)
    assert model.training  # the mode is restored
    for layer in ("conv1", "conv4"):
        np.testing.assert_allclose(one.S[layer], many.S[layer], rtol=1e-12)
        assert one.S[layer].shape == (24 if layer == "conv1" else 48,)
        top = np.sort(many.S[layer])[::-1][: math.ceil(0.2 * many.S[layer].size)]
        assert many.scores[layer] == pytest.approx(top.mean())
        pooled = (4 * many.family_L["translation"][layer] + many.family_L["rotation"][layer]) / 5
        np.testing.assert_allclose(many.L[layer], pooled, atol=1e-12)
    rows = many.rows()
    assert [r["layer"] for r in rows] == ["conv1", "conv4"]
    assert set(rows[0]) == {"layer", "units", "score", "translation", "rotation"}


def test_natural_images_and_dataset_input():
    images = natural_images(30, size=(40, 36), seed=1)
    assert images.shape == (30, 3, 40, 36) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05
    assert torch.equal(images, natural_images(30, size=(40, 36), seed=1))
    dataset = [(img, 0) for img in images]  # any sequence of (image, label)
    a = invariance_scores(
        wrap(PixelDetector([(4, 4)])),
        dataset,
        score=InvarianceScore(firing_rate=0.1, translations=[1], rotations=()),
        layers="0",
        device="cpu",
    )
    b = invariance_scores(
        wrap(PixelDetector([(4, 4)])),
        images,
        score=InvarianceScore(firing_rate=0.1, translations=[1], rotations=()),
        layers="0",
        device="cpu",
    )
    np.testing.assert_array_equal(a.S["0"], b.S["0"])


# --- bad input ----------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = create_model("convpool_c_crelu", width=0.125)
    x = torch.rand(100, 3, 32, 32)
    with pytest.raises(ValueError, match=r"unknown layer 'conv99'; valid layers: conv9, "):
        invariance_scores(model, x, layers=["conv1", "conv99"], device="cpu")
    with pytest.raises(ValueError, match="needs at least 100 images.*got 50"):
        invariance_scores(model, x[:50], layers="conv1", device="cpu")
    with pytest.raises(ValueError, match="needs at least 20 images"):
        invariance_scores(
            model,
            score=InvarianceScore(firing_rate=0.05),
            layers="conv1",
            n_images=10,
            device="cpu",
        )
    bad = x.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        invariance_scores(model, bad, layers="conv1", device="cpu")

    class Broken(nn.Module):
        def forward(self, x):
            return torch.log(x - 2)  # NaN everywhere

    with pytest.raises(ValueError, match="layer 0 produced NaN or Inf activations"):
        invariance_scores(
            wrap(Broken()), x, score=InvarianceScore(translations=[1]), layers="0", device="cpu"
        )
    with pytest.raises(ValueError, match="firing_rate"):
        invariance_scores(model, x, score=InvarianceScore(firing_rate=1.5), device="cpu")
    with pytest.raises(ValueError, match="boundary must be one of"):
        invariance_scores(model, x, score=InvarianceScore(boundary="wrap"), device="cpu")
    with pytest.raises(ValueError, match="no transformation"):
        invariance_scores(
            model, x, score=InvarianceScore(translations=(), rotations=()), device="cpu"
        )
    with pytest.raises(TypeError, match="translations must be integer"):
        invariance_scores(model, x, score=InvarianceScore(translations=[1.5]), device="cpu")
    with pytest.raises(ValueError, match="N x C x H x W"):
        invariance_scores(model, torch.rand(100, 32, 32), device="cpu")
    with pytest.raises(ValueError, match="differ in size"):
        invariance_scores(model, [(torch.rand(3, 32, 32), 0), (torch.rand(3, 30, 32), 1)])
    with pytest.raises(ValueError, match="smaller than the model input"):
        invariance_scores(model, x, input_size=40, device="cpu")
