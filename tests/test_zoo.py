import pytest
import torch
from torch import nn

from invert import conv_layers, create_model, layer_outputs, list_models, model_info
from invert.nn.activations import CReLU

PAPER_NAMES = [
    "convpool_c", "convpool_c_double", "convpool_c_avr", "convpool_c_crelu",
    "convpool_c_crelu_half", "vgg", "vgg_crelu1", "vgg_crelu13", "vgg_crelu135",
    "allcnn_b", "allcnn_b_crelu1_4", "allcnn_b_crelu1_7", "allcnn_b_crelu1_9",
    "allcnn_b_crelu_all", "allcnn_b_crelu147", "allcnn_b_avr1_4", "allcnn_b_avr1_7",
    "allcnn_b_avr1_9",
]  # fmt: skip


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_has_every_paper_variant():
    assert set(PAPER_NAMES) <= set(list_models())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="convpool_c_crelu"):
        create_model("resnet9000")


@pytest.mark.parametrize(
    "name, millions",
    [
        ("convpool_c", 1.4), ("convpool_c_double", 5.6), ("convpool_c_avr", 1.4),
        ("convpool_c_crelu", 2.8), ("convpool_c_crelu_half", 0.7),
    ],
)  # fmt: skip
def test_convpool_parameter_counts_match_table1(name, millions):
    assert n_params(create_model(name)) == pytest.approx(millions * 1e6, rel=0.05)


@pytest.mark.parametrize(
    "name, millions",
    [("allcnn_b", 9.4), ("allcnn_b_crelu_all", 4.7), ("allcnn_b_crelu147", 8.6),
     ("allcnn_b_crelu1_4", 10.1)],
)  # fmt: skip
def test_allcnn_parameter_counts_match_table5(name, millions):
    assert n_params(create_model(name, num_classes=1000)) == pytest.approx(millions * 1e6, rel=0.05)


def test_reference_architectures_match_torchvision_counts():
    # published parameter counts of torchvision's vgg16 and alexnet
    assert n_params(create_model("vgg16", num_classes=1000)) == 138_357_544
    assert n_params(create_model("alexnet", num_classes=1000)) == 61_100_840


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward(name):
    size = model_info(name)["input_size"]
    width = 0.125 if size == 224 else 0.25
    model = create_model(name, num_classes=6, width=width).eval()
    out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 6)
    assert torch.isfinite(out).all()


def test_crelu_layers_double_channels_and_layers_are_addressable():
    model = create_model("convpool_c_crelu", width=0.25).eval()
    x = torch.rand(2, 3, 32, 32)
    outs = layer_outputs(model, x, ["conv1", "pool1", "conv4"])
    assert outs["conv1"].shape == (2, 48, 32, 32)
    assert outs["pool1"].shape == (2, 48, 16, 16)
    assert outs["conv4"].shape == (2, 96, 16, 16)
    assert isinstance(model.conv1.act, CReLU)
    # the hook output equals running the children by hand
    h = x
    for name, child in model.named_children():
        h = child(h)
        if name == "conv4":
            break
    assert torch.equal(h, outs["conv4"])


def test_halved_filters_and_width():
    assert create_model("convpool_c_crelu_half").conv1.conv.out_channels == 48
    assert create_model("vgg_crelu13").conv3.conv.out_channels == 64
    assert create_model("vgg_crelu13").conv2.conv.out_channels == 64
    assert create_model("convpool_c", width=0.5).conv4.conv.out_channels == 96


def test_dropout_override():
    model = create_model("convpool_c", dropout=0.0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
    with pytest.raises(ValueError, match="dropout"):
        create_model("convpool_c", dropout=1.5)


def test_unknown_layer_lists_valid_layers():
    model = create_model("convpool_c", width=0.25)
    with pytest.raises(ValueError, match="conv1"):
        layer_outputs(model, torch.rand(1, 3, 32, 32), "conv99")


def test_conv_layer_names():
    assert list(conv_layers(create_model("allcnn_b", width=0.1))) == [
        f"conv{i}" for i in range(1, 13)
    ]
    assert list(conv_layers(create_model("vgg16", width=0.1)))[:2] == ["features.0", "features.2"]
