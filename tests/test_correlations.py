"""Outgoing-weight correlations against known answers and a numpy reference."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from invert.nn.activations import CReLU
from invert.nn.zoo import create_model
from theory.correlations import crelu_layers, outgoing_correlations


def tiny(k=8, out=16, between=(), after=None):
    layers = [nn.Conv2d(3, k, 3), CReLU(), *between, nn.Conv2d(2 * k, out, 3)]
    if after is not None:
        layers += after
    return nn.Sequential(*layers)


def numpy_cosine(u, v):
    u, v = u.ravel().astype(np.float64), v.ravel().astype(np.float64)
    return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))


def test_equal_halves_give_pair_correlation_one_and_negated_minus_one():
    model = tiny()
    with torch.no_grad():
        w = model[2].weight
        w[:, 8:] = w[:, :8]
    stats = outgoing_correlations(model)
    assert list(stats) == ["1"] and stats["1"].next_layer == "2"
    np.testing.assert_allclose(stats["1"].pair, 1.0, atol=1e-12)
    assert stats["1"].pair_mean == pytest.approx(1.0) and stats["1"].pair_std < 1e-7
    with torch.no_grad():
        w[:, 8:] = -2.5 * w[:, :8]
    np.testing.assert_allclose(outgoing_correlations(model)["1"].pair, -1.0, atol=1e-12)
    assert outgoing_correlations(model, absolute=True)["1"].pair_mean == pytest.approx(1.0)


def test_independent_random_halves_give_correlation_near_zero():
    k, out = 32, 64
    model = tiny(k, out)
    with torch.no_grad():
        model[2].weight.normal_()
    result = outgoing_correlations(model)["1"]
    dim = out * 9
    # cosine of independent Gaussian vectors: mean 0, std 1/sqrt(dim) (= 0.042 here)
    assert abs(result.pair_mean) < 5 / math.sqrt(dim * k)
    assert abs(result.nonpair_mean) < 5 / math.sqrt(dim * k)  # loose: values not independent
    assert result.pair_std == pytest.approx(1 / math.sqrt(dim), rel=0.35)
    assert result.nonpair_std == pytest.approx(1 / math.sqrt(dim), rel=0.1)


def test_pair_and_nonpair_statistics_match_numpy_loops():
    model = tiny(5, 7, between=[nn.MaxPool2d(2), nn.Dropout(0.5)])
    w = model[4].weight.detach().numpy()
    pair = [numpy_cosine(w[:, i], w[:, 5 + i]) for i in range(5)]
    nonpair = [numpy_cosine(w[:, i], w[:, 5 + j]) for i in range(5) for j in range(5) if i != j]
    result = outgoing_correlations(model)["1"]
    np.testing.assert_allclose(result.pair, pair, atol=1e-12)
    np.testing.assert_allclose(result.nonpair_values, nonpair, atol=1e-12)
    assert result.pair_mean == pytest.approx(np.mean(pair), abs=1e-12)
    assert result.pair_std == pytest.approx(np.std(pair), abs=1e-12)
    assert result.nonpair_mean == pytest.approx(np.mean(nonpair), abs=1e-12)
    assert result.nonpair_std == pytest.approx(np.std(nonpair), abs=1e-12)
    assert np.isnan(np.diag(result.nonpair)).all()
    absolute = outgoing_correlations(model, absolute=True)["1"]
    assert absolute.nonpair_mean == pytest.approx(np.mean(np.abs(nonpair)), abs=1e-12)


def test_zoo_models_are_named_by_block_and_final_crelu_is_skipped():
    stats = outgoing_correlations(create_model("convpool_c_crelu", width=0.125))
    assert list(stats) == [f"conv{i}" for i in range(1, 9)]
    assert stats["conv3"].next_layer == "conv4"  # across pool1 and drop3
    row = stats["conv3"].row()
    assert row["K"] == 12 and set(row) >= {"pair_mean", "nonpair_std"}
    model = create_model("allcnn_b_crelu_all", width=0.125)
    with pytest.warns(UserWarning, match="conv12"):
        stats = outgoing_correlations(model)
    assert "conv12" not in stats and "conv11" in stats
    # batch-norm before the CReLU (VGG) is fine
    assert list(outgoing_correlations(create_model("vgg_crelu13", width=0.125))) == [
        "conv1",
        "conv3",
    ]


def test_crelu_followed_by_linear_is_skipped_or_rejected():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), CReLU(), nn.Conv2d(8, 4, 3), CReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    found = crelu_layers(model)
    assert found["1"] == ("2", "")
    assert found["3"][0] is None and "Flatten" in found["3"][1]
    with pytest.warns(UserWarning, match="skipping CReLU layers"):
        assert list(outgoing_correlations(model)) == ["1"]
    with pytest.raises(ValueError, match=r"CReLU layer 3 has no outgoing conv.*Flatten"):
        outgoing_correlations(model, layers="3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(outgoing_correlations(model, layers=["1"])) == ["1"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="no CReLU layer"):
        outgoing_correlations(create_model("convpool_c", width=0.125))
    model = create_model("convpool_c_crelu", width=0.125)
    with pytest.raises(ValueError, match=r"'pool1' is not a CReLU layer.*conv1, conv2"):
        outgoing_correlations(model, layers=["conv1", "pool1"])
    grouped = nn.Sequential(nn.Conv2d(3, 4, 3), CReLU(), nn.Conv2d(8, 4, 3, groups=2))
    with pytest.raises(ValueError, match="groups=2"):
        outgoing_correlations(grouped)
    mismatched = nn.Sequential(nn.Conv2d(3, 4, 3), CReLU(), nn.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match="reads 4 channels"):
        outgoing_correlations(mismatched)
    dead = tiny(4, 3)
    with torch.no_grad():
        dead[2].weight[:, 5] = 0
    with pytest.raises(ValueError, match=r"channel\(s\) \[5\] have all-zero"):
        outgoing_correlations(dead)
