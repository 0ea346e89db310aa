"""Training health: tiny networks learn a fixed batch, and the stabiliser ignores width.

Both guard the failure of issue 12: with a ReLU on the class scores, the wider
ConvPool-CNN-C variants lost classes for good (all of them without gradient
clipping), and the global-norm clip at 1 that kept them alive throttled a model
more the more parameters it had.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invert.data import channel_statistics, load_dataset
from invert.nn.zoo import create_model
from invert.train.recipe import RECIPES, get_recipe
from invert.train.trainer import build_model, clip_unit_gradients_, he_init, train_step

STEPS = 60  # SGD steps on one fixed batch
FACTOR = 5  # the loss must fall at least this much in STEPS steps


@pytest.fixture(scope="module")
def fixed_batch():
    # two crops of each of the 13 texture classes: chance loss ln 13 = 2.56
    return load_dataset("textures", train_per_class=2, test_per_class=1)


def _fit_fixed_batch(name, data, recipe):
    """Initial and final loss of a width-0.125 model after STEPS steps on ``data``."""
    torch.manual_seed(0)
    net = build_model(name, data, recipe.replace(width=0.125))
    net.normalize.set_statistics(*channel_statistics(data))
    images, labels = data.images.float() / 255, torch.as_tensor(data.labels)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    net.train()
    first = None
    for _ in range(STEPS):
        loss, _ = train_step(
            net, optimizer, images, labels, grad_clip=recipe.grad_clip, unit_clip=recipe.unit_clip
        )
        first = loss.item() / len(labels) if first is None else first
    net.eval()
    with torch.no_grad():
        final = F.cross_entropy(net(images), labels).item()
    return first, final


@pytest.mark.parametrize("name", ["convpool_c", "convpool_c_crelu"])
def test_tiny_relu_and_crelu_models_fit_a_fixed_batch(name, fixed_batch):
    # the fast recipe's optimiser at its peak learning rate (no warm-up, no decay).
    # Measured: 54x (ReLU) and 56x (CReLU); 13x-16000x over initial seeds 1-5. The old
    # behaviour fails: a ReLU on the class scores with the global-norm clip at 1 gives
    # 1.9x and 3.0x (classes die); without a clip, NaN (ReLU) and ln 13 (CReLU, dead)
    first, final = _fit_fixed_batch(name, fixed_batch, get_recipe("fast"))
    assert math.isfinite(final), (name, first, final)
    assert final <= first / FACTOR, (name, first, final)


# --- the stabiliser -----------------------------------------------------------------


def _with_gradients(name, width, seed=0):
    torch.manual_seed(seed)
    net = he_init(create_model(name, num_classes=4, width=width, dropout=0.0))
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 4, (8,), generator=generator)
    F.cross_entropy(net(images), labels).backward()
    return net


def _convs(net):
    return [block.conv for name, block in net.named_children() if name.startswith("conv")]


def _wide_copy(net, wide):
    """``wide`` (twice the filters of ``net``) made of copies of ``net``'s units.

    Every filter appears twice and every fan-in twice (each input channel and its
    copy): weights and gradients alike, so each unit of ``wide`` has the norms of its
    original times sqrt(2), and ``wide`` has 4x the parameters.
    """
    narrow, wide_convs = _convs(net), _convs(wide)
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(narrow, wide_convs)):
            rows = b.out_channels // a.out_channels  # 1 for the class layer
            cols = b.in_channels // a.in_channels  # 1 for the first layer
            assert (rows, cols) in ((2, 2), (1, 2), (2, 1)), (i, rows, cols)
            b.weight.copy_(a.weight.repeat(rows, cols, 1, 1))
            b.weight.grad = a.weight.grad.repeat(rows, cols, 1, 1)
            b.bias.copy_(a.bias.repeat(rows) * math.sqrt(cols))
            b.bias.grad = a.bias.grad.repeat(rows) * math.sqrt(cols)
    return wide


def _clip_factors(net, clip):
    """Per-unit factor (clipped / raw gradient norm) the stabiliser applies, per layer."""
    before = [c.weight.grad.flatten(1).norm(dim=1).clone() for c in _convs(net)]
    clip(net)
    return [c.weight.grad.flatten(1).norm(dim=1) / g for c, g in zip(_convs(net), before)]


def _unit_clip(value):
    return lambda net: clip_unit_gradients_(net, value)


def _global_clip(value):
    return lambda net: torch.nn.utils.clip_grad_norm_(net.parameters(), value)


@pytest.mark.parametrize("name", ["convpool_c", "convpool_c_crelu"])
def test_unit_clip_treats_a_model_and_its_2x_wide_copy_alike(name):
    fast = get_recipe("fast").unit_clip
    assert fast is not None and get_recipe("fast").grad_clip is None
    for value in (fast, 0.3):  # the recipe's (clips nearly every unit) and a looser one
        net = _with_gradients(name, 0.125)
        wide = _wide_copy(net, _with_gradients(name, 0.25))
        narrow_factors = _clip_factors(net, _unit_clip(value))
        wide_factors = _clip_factors(wide, _unit_clip(value))
        clipped = torch.cat(narrow_factors) < 1
        assert clipped.any()
        for i, (a, b) in enumerate(zip(narrow_factors, wide_factors)):
            rows = len(b) // len(a)
            # (NaN: a unit without gradient on this batch, in both copies)
            torch.testing.assert_close(
                b, a.repeat(rows), equal_nan=True, msg=f"{name} conv{i + 1}, {value}"
            )


def test_global_norm_clip_throttles_the_2x_wide_copy():
    # why the recipes no longer clip the global norm: the same units with the same
    # gradients get a smaller step in a wider model (the global norm roughly doubles)
    net = _with_gradients("convpool_c", 0.125)
    wide = _wide_copy(net, _with_gradients("convpool_c", 0.25))
    narrow_factor = _clip_factors(net, _global_clip(1.0))[0][0]
    wide_factor = _clip_factors(wide, _global_clip(1.0))[0][0]
    assert narrow_factor < 1
    assert wide_factor < 0.75 * narrow_factor


def test_no_recipe_clips_the_global_norm():
    # a global-norm clip would act differently on the variants a paper table compares
    for name, make in RECIPES.items():
        for arch in ("convpool_c", "convpool_c_crelu", "vgg", "allcnn_b"):
            assert make(arch).grad_clip is None, (name, arch)


def test_the_first_conv_can_be_left_out_of_the_unit_clip():
    """The AlexNet-layout recipe leaves conv1 unclipped (it learns little otherwise); the
    other layers are clipped exactly as before, each unit to 0.05 of its weight norm."""
    assert not get_recipe("fast", arch="alexnet64").clip_first_conv
    assert get_recipe("fast", arch="convpool_c").clip_first_conv
    net = _with_gradients("convpool_c", 0.125)
    convs = _convs(net)
    raw = [c.weight.grad.clone() for c in convs]
    norms = [torch.cat([c.weight.detach().flatten(1), c.bias.detach()[:, None]], 1).norm(dim=1)
             for c in convs]  # fmt: skip
    grads = [torch.cat([c.weight.grad.flatten(1), c.bias.grad[:, None]], 1).norm(dim=1)
             for c in convs]  # fmt: skip
    clip_unit_gradients_(net, 0.05, skip_first_conv=True)
    torch.testing.assert_close(convs[0].weight.grad, raw[0], rtol=0, atol=0)  # untouched
    for c, g, w_norm, g_norm in zip(convs[1:], raw[1:], norms[1:], grads[1:]):
        factor = torch.clamp(0.05 * w_norm.clamp(min=1e-3) / g_norm, max=1.0)
        torch.testing.assert_close(c.weight.grad, g * factor.view(-1, 1, 1, 1))
