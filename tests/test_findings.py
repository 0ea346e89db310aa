"""The paired rule of the findings (issue 16) on synthetic per-seed numbers with known
answers, the findings that use it, and the AlexNet-layout family behind F1.

References are computed here, independently of the code under test: Student's t
quantiles from scipy.stats, parameter counts by hand from the layer shapes."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from figures import findings
from invert.nn.zoo import create_model, list_models, model_info


def _t(q, dof):
    return stats.t.ppf(q, dof)


# --- the paired rule ----------------------------------------------------------------------


def test_paired_rule_clear_win_clear_loss_and_noise():
    win = findings.paired_rule([1.0, 1.2, 0.9, 1.1])
    assert win["decision"] is True
    # hand: mean 1.05, s = sqrt(0.05 / 3), SE = s / 2, t(0.975, 3) = 3.182
    assert win["mean"] == pytest.approx(1.05)
    assert win["se"] == pytest.approx(math.sqrt(0.05 / 3) / 2)
    assert win["t"] == pytest.approx(3.182446, abs=1e-6)
    loss = findings.paired_rule([-1.0, -1.2, -0.9, -1.1])
    assert loss["decision"] is False
    noise = findings.paired_rule([1.0, -1.0, 0.5, -0.4])
    assert noise["decision"] is None
    # the smallest detectable difference: (t(0.975, 3) + t(0.8, 3)) * SE
    assert noise["detectable"] == pytest.approx((_t(0.975, 3) + _t(0.8, 3)) * noise["se"])


def test_paired_rule_boundary_and_degenerate_cases():
    # |mean| exactly at t * SE is not beyond it: undecided; just beyond: decided
    d = [1.0, 3.0]  # mean 2, s = sqrt(2), SE = 1, t(0.975, 1) = 12.706
    assert findings.paired_rule(d)["decision"] is None
    shift = _t(0.975, 1) * 1.0 + 1e-6 - 2.0
    assert findings.paired_rule([v + shift for v in d])["decision"] is True
    assert findings.paired_rule([0.5, 0.5, 0.5])["decision"] is True  # no spread: the sign
    assert findings.paired_rule([-0.5, -0.5])["decision"] is False
    one = findings.paired_rule([0.0])  # one seed: the single-run rule, ties count as >= 0
    assert one["decision"] is True and one["detectable"] is None
    assert findings.paired_rule([1.0, math.nan])["decision"] is False
    with pytest.raises(ValueError, match="at least one"):
        findings.paired_rule([])


def test_seeds_needed_is_the_first_n_with_enough_power():
    for mean, sd in ((1.0, 1.0), (0.3, 1.0), (2.0, 0.5)):
        n = findings.seeds_needed(mean, sd)
        power = [(_t(0.975, m - 1) + _t(0.8, m - 1)) * sd / math.sqrt(m) for m in range(2, n + 1)]
        assert power[-1] < abs(mean) <= min(power[:-1], default=math.inf)
    assert findings.seeds_needed(0.0, 1.0) is None
    assert findings.seeds_needed(1e-6, 1.0) is None  # beyond the limit


# --- findings with matched seeds ----------------------------------------------------------


def test_f4_pairs_the_seeds():
    # seed spread 10 points (independent means could not tell), a steady 1-point gain
    table = [dict(role="relu", test_error=20.0, test_error_se=1.0, params=100,
                  test_errors=[10.0, 20.0, 30.0]),
             dict(role="crelu_half", test_error=19.0, test_error_se=1.0, params=50,
                  test_errors=[9.0, 19.1, 28.9])]  # fmt: skip
    f4 = findings.f4_errors(table)
    assert f4["verdict"] == "holds"
    assert f4["numbers"]["baseline_minus_half"]["mean"] == pytest.approx(1.0)
    table[1]["test_errors"] = [11.0, 21.1, 30.9]  # a steady 1-point loss
    assert findings.f4_errors(table)["verdict"] == "does not hold"
    table[1]["test_errors"] = [12.0, 18.0, 31.0]  # noise: undecided, with its power
    f4 = findings.f4_errors(table)
    assert f4["verdict"] == "inconclusive"
    assert "smallest detectable |D|" in f4["summary"] and "would need" in f4["summary"]
    table[1]["params"] = 60  # over the parameter bound: does not hold whatever the errors
    assert findings.f4_errors(table)["verdict"] == "does not hold"
    table[1]["test_errors"] = [12.0, 18.0]
    with pytest.raises(ValueError, match="pairs seeds"):
        findings.f4_errors(table)


def test_f3_counts_layers_by_the_paired_rule():
    rows = [dict(layer="conv1", relu=[1.0, 5.0, 9.0], crelu=[1.5, 5.6, 9.4]),  # steady win
            dict(layer="conv2", relu=[2.0, 6.0, 3.0], crelu=[1.0, 5.1, 1.9]),  # steady loss
            dict(layer="conv3", relu=[1.0, 2.0, 3.0], crelu=[2.0, 1.0, 3.5])]  # fmt: skip
    f3 = findings.f3_invariance(rows)
    assert f3["verdict"] == "inconclusive"
    assert f3["numbers"]["which"] == ["conv1"] and f3["numbers"]["which_below"] == ["conv2"]
    rows[2]["crelu"] = [1.2, 2.3, 3.2]
    assert findings.f3_invariance(rows)["verdict"] == "holds"
    rows[0]["crelu"] = [0.5, 4.6, 8.4]
    assert findings.f3_invariance(rows)["verdict"] == "does not hold"


def test_f1_margin_and_every_direction():
    random = {"mu_r_mean": -0.13, "mu_r_std": 0.02}
    crelu = [dict(random, mu_w_mean=m) for m in (-0.131, -0.129, -0.132)]  # g about 0
    relu = [dict(random, mu_w_mean=m) for m in (-0.20, -0.21, -0.19)]  # g about 3.5
    f1 = findings.f1_pairing(relu, crelu)
    assert f1["verdict"] == "holds"
    assert "ReLU mu_w vs random below (pairs more)" in f1["summary"]
    assert "ReLU gap vs CReLU gap larger" in f1["summary"]
    assert findings.f1_pairing(crelu, crelu)["verdict"] == "does not hold"
    near = [dict(random, mu_w_mean=m) for m in (-0.14, -0.19, -0.15)]  # g 0.5, 3, 1
    assert findings.f1_pairing(near, crelu)["verdict"] == "inconclusive"
    one = findings.f1_pairing(relu[0], crelu[0])  # one seed: strictly beyond the margin
    assert one["verdict"] == "holds"
    at_margin = dict(random, mu_w_mean=-0.15)  # g = 1: not > 1
    assert findings.f1_pairing(at_margin, crelu[0])["verdict"] == "does not hold"


def test_f2_and_f6_hold_only_on_every_photograph():
    def rows(image, psnr4):
        return [dict(image=image, layer=f"conv{i}", pooling_before=i > 3, frame_path=i == 1,
                     A_layer=1.0 if i == 1 else 0.0, rel_error=1e-12 if i == 1 else 0.5,
                     psnr=(300.0, 20.0, 15.0, psnr4)[i - 1]) for i in range(1, 5)]  # fmt: skip

    both = rows("astronaut", 12.0) + rows("grace_hopper", 12.0)
    assert findings.f2_reconstruction(both)["verdict"] == "holds"
    one_rises = rows("astronaut", 12.0) + rows("grace_hopper", 18.0)
    f2 = findings.f2_reconstruction(one_rises)
    assert f2["verdict"] == "does not hold" and f2["numbers"]["holds_per_image"] == [True, False]
    joint = [dict(r, model=m, psnr=300.0) for m in ("CReLU", "ReLU") for r in both]
    assert findings.f6_joint(joint)["verdict"] == "holds"
    joint[-7]["psnr"] = 40.0  # ReLU, grace_hopper, conv2: the lowest of the two photographs
    f6 = findings.f6_joint(joint)
    assert f6["verdict"] == "does not hold"
    assert "ReLU: conv1 > 100 dB, conv2 40.0 dB" in f6["summary"]


# --- the AlexNet-layout family (F1's network) ---------------------------------------------


def _conv(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


@pytest.mark.parametrize("classes", [10, 13])
def test_alexnet_layout_parameter_counts_by_hand(classes):
    # conv1 96 x 11x11x3 / 4, conv2 64 x 5x5, conv3 96, conv4 96, conv5 64 x 3x3, 1x1 classes
    relu = (_conv(3, 96, 11) + _conv(96, 64, 5) + _conv(64, 96, 3) + _conv(96, 96, 3)
            + _conv(96, 64, 3) + _conv(64, classes, 1))  # fmt: skip
    # CReLU doubles each conv's output channels seen by the next layer
    crelu = (_conv(3, 96, 11) + _conv(192, 64, 5) + _conv(128, 96, 3) + _conv(192, 96, 3)
             + _conv(192, 64, 3) + _conv(128, classes, 1))  # fmt: skip
    for name, count in (("alexnet64", relu), ("alexnet64_crelu", crelu)):
        model = create_model(name, num_classes=classes)
        assert sum(p.numel() for p in model.parameters()) == count, name
        assert model.conv1.conv.weight.shape == (96, 3, 11, 11)
    assert {"alexnet64", "alexnet64_crelu"} <= set(list_models())
    assert model_info("alexnet64")["input_size"] == 64


def test_alexnet_layout_maps_and_fast_width():
    import torch

    from invert.train.recipe import get_recipe

    model = create_model("alexnet64", num_classes=13).eval()
    x = torch.rand(1, 3, 64, 64)
    sizes = {}
    for name, module in model.named_children():
        x = module(x)
        sizes[name] = x.shape[-1]
    # AlexNet's 11x11/4 (pad 2) then 3x3/2 pools: 64 -> 15 -> 7 -> 3 -> 1
    assert [sizes[k] for k in ("conv1", "pool1", "pool2", "pool3")] == [15, 7, 3, 1]
    assert get_recipe("fast", arch="alexnet64").model.width == 1.0  # conv1 keeps 96 filters
    assert get_recipe("fast", arch="convpool_c").model.width == 0.25
