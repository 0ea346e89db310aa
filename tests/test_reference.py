"""The torchvision-layout reference architectures (invert.nn.reference).

References are independent of the code under test: parameter counts summed by hand from
the layer formulas of the papers / torchvision's tables, ResNet-18's state_dict keys
written out from torchvision's documented layout, and outputs compared against plain
torch ops.
"""

import io
import operator

import pytest
import torch
from torch import nn

from invert import create_model, list_models, model_info
from invert.nn import reference
from invert.nn.net import Normalize

NAMES = ["alexnet", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "resnet18", "resnet50"]


def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c  # weight and bias; running statistics are buffers


def lin(i, o):
    return i * o + o


def vgg_count(pairs, batch_norm):
    convs = sum(conv(a, b, 3) + (bn(b) if batch_norm else 0) for a, b in pairs)
    return convs + lin(512 * 7 * 7, 4096) + lin(4096, 4096) + lin(4096, 1000)


VGG11 = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512),
         (512, 512)]  # fmt: skip
VGG16 = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip


def basic(inp, planes, down):
    body = conv(inp, planes, 3, False) + bn(planes) + conv(planes, planes, 3, False) + bn(planes)
    return body + ((conv(inp, planes, 1, False) + bn(planes)) if down else 0)


def bottleneck(inp, p, down):
    body = (conv(inp, p, 1, False) + bn(p) + conv(p, p, 3, False) + bn(p)
            + conv(p, 4 * p, 1, False) + bn(4 * p))  # fmt: skip
    return body + ((conv(inp, 4 * p, 1, False) + bn(4 * p)) if down else 0)


STEM = conv(3, 64, 7, False) + bn(64)
HAND_COUNTS = {
    "alexnet": conv(3, 64, 11) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3)
    + conv(256, 256, 3) + lin(256 * 6 * 6, 4096) + lin(4096, 4096) + lin(4096, 1000),
    "vgg11": vgg_count(VGG11, False),
    "vgg11_bn": vgg_count(VGG11, True),
    "vgg16": vgg_count(VGG16, False),
    "vgg16_bn": vgg_count(VGG16, True),
    "resnet18": STEM + 2 * basic(64, 64, False)
    + basic(64, 128, True) + basic(128, 128, False)
    + basic(128, 256, True) + basic(256, 256, False)
    + basic(256, 512, True) + basic(512, 512, False) + lin(512, 1000),
    "resnet50": STEM + bottleneck(64, 64, True) + 2 * bottleneck(256, 64, False)
    + bottleneck(256, 128, True) + 3 * bottleneck(512, 128, False)
    + bottleneck(512, 256, True) + 5 * bottleneck(1024, 256, False)
    + bottleneck(1024, 512, True) + 2 * bottleneck(2048, 512, False) + lin(2048, 1000),
}  # fmt: skip
# torchvision's published counts: the hand counts above must agree with them
PUBLISHED = {"alexnet": 61_100_840, "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
             "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "resnet18": 11_689_512,
             "resnet50": 25_557_032}  # fmt: skip


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_at_width_one(name):
    assert HAND_COUNTS[name] == PUBLISHED[name]
    with torch.device("meta"):  # no memory for 138M parameters
        model = reference.REFERENCE[name][0]()
    assert n_params(model) == HAND_COUNTS[name]
    with torch.device("meta"):
        served = create_model(name, num_classes=1000)
    assert n_params(served) == HAND_COUNTS[name]


def _bn_keys(prefix):
    return [f"{prefix}.{k}" for k in
            ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]  # fmt: skip


def torchvision_resnet18_keys():
    """torchvision's resnet18 state_dict keys, in order, from its documented layout."""
    keys = ["conv1.weight", *_bn_keys("bn1")]
    for layer in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *_bn_keys(f"{p}.bn1")]
            keys += [f"{p}.conv2.weight", *_bn_keys(f"{p}.bn2")]
            if layer > 1 and block == 0:
                keys += [f"{p}.downsample.0.weight", *_bn_keys(f"{p}.downsample.1")]
    return keys + ["fc.weight", "fc.bias"]


def test_resnet18_state_dict_keys_and_shapes_are_torchvisions():
    state = reference.resnet18().state_dict()
    assert list(state) == torchvision_resnet18_keys()
    assert len(state) == 122
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer2.0.conv1.weight"].shape == (128, 64, 3, 3)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert state["fc.weight"].shape == (1000, 512)


def test_resnet50_is_v1_5_and_vgg_alexnet_keys():
    net = reference.resnet50(width=0.125)
    assert net.layer2[0].conv1.stride == (1, 1) and net.layer2[0].conv2.stride == (2, 2)
    assert net.layer2[0].downsample[0].stride == (2, 2)
    assert isinstance(net.layer2[0].downsample[1], nn.BatchNorm2d)
    keys = list(reference.vgg16_bn(width=0.125).state_dict())
    assert keys[:6] == ["features.0.weight", "features.0.bias", *_bn_keys("features.1")[:4]]
    assert keys[-2:] == ["classifier.6.weight", "classifier.6.bias"]
    keys = list(reference.alexnet(width=0.125).state_dict())
    assert keys == [f"{m}.{t}" for m in ("features.0", "features.3", "features.6", "features.8",
                    "features.10", "classifier.1", "classifier.4", "classifier.6")
                    for t in ("weight", "bias")]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_at_224_and_registry(name):
    model = create_model(name, num_classes=7, width=1 / 16).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert model.input_size == 224 == model_info(name)["input_size"]
    assert model_info(name)["family"] == "reference" and name in list_models()
    assert model.arch == name and model.config["num_classes"] == 7


@pytest.mark.parametrize("name", NAMES)
def test_relus_are_inplace_and_normalize_comes_first(name):
    model = reference.REFERENCE[name][0](width=1 / 16)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize" and isinstance(first, Normalize)
    assert torch.allclose(first.mean, torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(first.std, torch.tensor([0.229, 0.224, 0.225]))
    assert not any(k.startswith("normalize") for k in model.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_written_as_torchvision_writes_it(name):
    # the traced graph holds torch.flatten(x, 1); ResNets one residual add per block
    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, Normalize) or super().is_leaf_module(m, qualname)

    graph = Tracer().trace(reference.REFERENCE[name][0](width=1 / 16))
    targets = [n.target for n in graph.nodes if n.op == "call_function"]
    assert torch.flatten in targets
    blocks = {"resnet18": 8, "resnet50": 16}.get(name, 0)
    assert targets.count(operator.add) == blocks  # fx records `out += identity` as add
    first = next(n for n in graph.nodes if n.op == "call_module")
    assert first.target == "normalize"


def test_basic_block_calls_one_relu_twice():
    net = reference.resnet18(width=1 / 16).eval()
    calls = []
    net.layer1[0].relu.register_forward_hook(lambda *_: calls.append(1))
    net(torch.rand(1, 3, 32, 32))
    assert len(calls) == 2
    # by hand: relu(bn2(conv2(relu(bn1(conv1(x))))) + x), on a copy of x
    block, x = net.layer1[1], torch.randn(2, 4, 8, 8)
    f = torch.nn.functional
    expected = f.relu(block.bn2(block.conv2(f.relu(block.bn1(block.conv1(x))))) + x)
    assert torch.allclose(block(x.clone()), expected)


def test_normalize_then_features_by_hand():
    net = reference.vgg11(width=1 / 16).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = net.features((x - mean) / std)
    h = torch.nn.functional.adaptive_avg_pool2d(h, 7).reshape(2, -1)
    assert torch.allclose(net(x), net.classifier(h), atol=1e-6)


def test_torchvision_initialisation():
    torch.manual_seed(0)
    net = reference.vgg16_bn(width=0.25)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(float(m.bias.detach().abs().max()) == 0 for m in convs)
    # kaiming normal, fan_out: std = sqrt(2 / (out_channels * 9))
    w = net.features[-4].weight  # the last conv: 128 x 128 x 3 x 3
    assert w.std().item() == pytest.approx((2 / (w.shape[0] * 9)) ** 0.5, rel=0.05)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)
    linear = net.classifier[0]
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert float(linear.bias.detach().abs().max()) == 0
    res = reference.resnet18(width=0.25)
    assert all(m.bias is None for m in res.modules() if isinstance(m, nn.Conv2d))
    w = res.layer4[0].conv2.weight
    assert w.std().item() == pytest.approx((2 / (w.shape[0] * 9)) ** 0.5, rel=0.05)


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "alexnet"])
def test_state_dict_round_trip_weights_only(name):
    torch.manual_seed(1)
    build = reference.REFERENCE[name][0]
    model = build(width=1 / 16, num_classes=5)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(width=1 / 16, num_classes=5)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="width must be a positive number"):
        reference.resnet18(width=0)
    with pytest.raises(ValueError, match="num_classes"):
        reference.vgg11(num_classes=0)
    with pytest.raises(ValueError, match="resnet50 has no dropout"):
        reference.resnet50(dropout=0.2)
    with pytest.raises(TypeError):
        reference.alexnet(10)  # keyword-only
