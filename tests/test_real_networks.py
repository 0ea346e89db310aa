"""Networks in the layouts users have: torchvision's AlexNet, VGG and ResNet, in-place ReLUs,
a module called twice, functional ops in ``forward`` (issue 18).

References are independent of the graph code: forward hooks on a deep copy of the model
with every ``inplace`` flag switched off (the value at each place), torchvision's
documented node names written out by hand, dense Jacobians from
``torch.autograd.functional.jacobian``.
"""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian

from invert import CReLU, create_model, features, layer_outputs, reconstruct
from invert.nn.graph import TracingFallbackWarning, model_graph
from invert.reconstruction import reconstruct_joint, reconstruct_layerwise
from invert.reconstruction.layer_map import LayerMap

D = torch.float64


def small(name, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).double().eval()
    for m in model.modules():  # BatchNorm with running statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return model


def snapshot(model):
    """Everything about a model that a call must leave as it was."""
    return (
        {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        [(n, m.training, getattr(m, "inplace", None)) for n, m in model.named_modules()],
        [(n, p.requires_grad) for n, p in model.named_parameters()],
    )


def assert_unchanged(model, before):
    state, flags, grads = snapshot(model)
    assert flags == before[1] and grads == before[2]
    assert state.keys() == before[0].keys()
    assert all(torch.equal(state[k], before[0][k]) for k in state)


def hooked_values(model, x):
    """Each module call's input and output, per call, on a non-inplace copy (the reference)."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    calls = {}
    names = {m: n for n, m in ref.named_modules()}

    def hook(module, args, output):
        calls.setdefault(names[module], []).append((args[0].clone(), output.clone()))  # += later

    handles = [m.register_forward_hook(hook) for m in ref.modules() if m is not ref]
    with torch.no_grad():
        ref(x)
    for h in handles:
        h.remove()
    return calls


CASES = {
    "alexnet": dict(width=0.5),
    "vgg16_bn": dict(width=0.125),
    "resnet18": dict(width=0.25),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_place_equals_a_forward_hook_on_a_non_inplace_copy(name):
    model = small(name, **CASES[name])
    x = torch.rand(2, 3, 64, 64, dtype=D)
    x_before, before = x.clone(), snapshot(model)
    calls = hooked_values(model, x)
    graph = model_graph(model)
    places = [p for p in graph.names() if p != graph.input]
    out = layer_outputs(model, x, places)
    checked = 0
    for place in places:
        p = graph.places[place]
        if p.op == "module":  # the k-th call of a module is the place with suffix _k
            k = int(place.rsplit("_", 1)[1]) if place != p.target else 0
            expected = calls[p.target][k][1]
        elif place.endswith(".add"):  # out += identity: what the block's second ReLU call reads
            expected = calls[place[: -len("add")] + "relu"][1][0]
        elif place == "flatten":
            expected = calls["classifier.0" if name != "resnet18" else "fc"][0][0]
        else:
            continue
        assert torch.equal(out[place], expected), place
        checked += 1
    assert checked == len(places)
    for container in ("features", "layer1", "layer2.0"):
        if container in graph.containers:
            assert torch.equal(layer_outputs(model, x, container)[container],
                               calls[container][0][1])  # fmt: skip
    assert torch.equal(x, x_before)
    assert_unchanged(model, before)


def test_resnet18_places_have_torchvision_names():
    # torchvision.models.feature_extraction.get_graph_node_names(resnet18())[1], written out;
    # "normalize" is the toolkit's ImageNet normalization, its one addition
    expected = ["x", "normalize", "conv1", "bn1", "relu", "maxpool"]
    for layer, blocks in ((1, 2), (2, 2), (3, 2), (4, 2)):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            expected += [f"{p}.conv1", f"{p}.bn1", f"{p}.relu", f"{p}.conv2", f"{p}.bn2"]
            if layer > 1 and b == 0:
                expected += [f"{p}.downsample.0", f"{p}.downsample.1"]
            expected += [f"{p}.add", f"{p}.relu_1"]
    expected += ["avgpool", "flatten", "fc"]
    assert model_graph(create_model("resnet18", width=0.05)).names() == expected


def test_unknown_place_lists_the_closest_first():
    model = create_model("resnet18", width=0.05)
    with pytest.raises(ValueError, match=r"unknown layer 'layer1.0.relu2'; valid layers: "
                                         r"layer1.0.relu, layer1.0.relu_1"):  # fmt: skip
        features(model, torch.rand(1, 3, 32, 32), layer="layer1.0.relu2")


# --- the joint map on real layouts: dense Jacobians ------------------------------------------


def dense_jacobian(model, x, place):
    return jacobian(lambda v: layer_outputs(model, v[None], place)[place].flatten(),
                    x[0]).reshape(-1, x[0].numel())  # fmt: skip


INJECTIVE = [  # small versions whose map to the place is injective (checked densely below)
    ("resnet18", dict(in_channels=1), 12, "layer1.0.add"),
    ("resnet18", dict(in_channels=1), 12, "layer1.0.relu_1"),
    ("vgg16_bn", dict(width=0.25, in_channels=1), 8, "features.9"),
    ("alexnet", dict(width=1.0, in_channels=1), 15, "features.1"),
]


@pytest.mark.parametrize("name, kwargs, size, place", INJECTIVE)
def test_joint_map_and_reconstruction_against_dense_jacobians(name, kwargs, size, place):
    model = small(name, **kwargs)
    x = torch.rand(1, kwargs.get("in_channels", 3), size, size, dtype=D)
    before = snapshot(model)
    f = features(model, x, layer=place)
    with LayerMap(model, f, dtype=D, device="cpu") as lm:
        lin = lm.linearize(x, lm.all)
        # at x the compared rows are those of the place's own Jacobian (ReLU: its active units)
        j = dense_jacobian(model, x, place if lm.comparison == "output" else f.steps[-2].name)
        if lm.comparison == "relu":
            j = j[(f.activation.flatten() > 0)]
        v = torch.randn_like(x)
        jv = lin.jvp(v).flatten()
        jv = jv[(f.activation.flatten() > 0)] if lm.comparison == "relu" else jv
        assert torch.allclose(jv, j @ v.flatten(), atol=1e-10)
    s = torch.linalg.svdvals(j)
    assert j.shape[0] >= j.shape[1] and float(s[-1] / s[0]) > 1e-6  # injective at x
    rec = reconstruct_joint(model, f, device="cpu")
    assert float((rec.image - x).norm() / x.norm()) < 1e-8
    assert rec.certificate[0].unique
    assert abs(rec.certificate[0].A - float(s[-1]) ** 2) <= 1e-6 * float(s[0]) ** 2
    assert_unchanged(model, before)


def test_a_chain_with_inplace_relus_is_walked_layer_by_layer():
    model = small("vgg16_bn", width=0.25)
    x = torch.rand(1, 3, 16, 16, dtype=D)
    f = features(model, x, layer="features.5")
    assert f.chain and f.path[:4] == ["normalize", "features.0", "features.1", "features.2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = reconstruct_layerwise(model, f, device="cpu")
    assert [r.operation for r in rec.layers][:3] == ["ReLU", "BatchNorm2d", "Conv2d"]
    assert torch.isfinite(rec.image).all()


# --- functional ops and models fx cannot trace ------------------------------------------------


class FunctionalCReLU(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(12, 8, 3, padding=1)

    def forward(self, x):
        x = F.relu(torch.cat([self.conv1(x), -self.conv1(x)], 1))  # conv1 called twice
        x = F.max_pool2d(x, 2)
        return F.relu_(self.conv2(x))


def test_functional_ops_are_places_with_module_rules():
    model = FunctionalCReLU().double()
    graph = model_graph(model)
    assert graph.names() == ["x", "conv1", "conv1_1", "neg", "cat", "relu", "max_pool2d",
                             "conv2", "relu_"]  # fmt: skip
    assert type(graph["relu"].module).__name__ == "ReLU"
    assert type(graph["max_pool2d"].module).__name__ == "MaxPool2d"
    x = torch.rand(1, 1, 8, 8, dtype=D)
    f = features(model, x, layer="relu_")
    assert list(f.switches) == ["max_pool2d"] and not f.chain
    j = dense_jacobian(model, x, "conv2")[f.activation.flatten() > 0]
    with LayerMap(model, f, dtype=D, device="cpu") as lm:
        assert lm.comparison == "relu"
        v = torch.randn_like(x)
        jv = lm.linearize(x, lm.all).jvp(v).flatten()[f.activation.flatten() > 0]
    assert torch.allclose(jv, j @ v.flatten(), atol=1e-10)


class DataDependent(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv, self.act = nn.Conv2d(1, 4, 3, padding=1), CReLU()

    def forward(self, x):
        if x.sum() > 0:
            x = self.conv(x)
        return self.act(x)


def test_a_model_fx_cannot_trace_falls_back_to_hooks_with_a_note():
    model = DataDependent().double()
    x = torch.rand(2, 1, 6, 6, dtype=D)
    with pytest.warns(TracingFallbackWarning, match="cannot trace DataDependent"):
        f = features(model, x, layer="act")
    assert f.path == ["conv", "act"] and f.chain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TracingFallbackWarning)
        rec = reconstruct(model, f, device="cpu")
        assert float((rec.image - x).norm() / x.norm()) < 1e-8
        graph = model_graph(model, x)
    assert not graph.traced and "forward hooks" in graph.note


def test_crelu_reconstruct_says_the_fallback_in_a_note(tmp_path, capsys):
    from invert.cli import main

    source = tmp_path / "net.py"
    source.write_text(
        "import torch\nfrom torch import nn\nfrom invert import CReLU\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv, self.act = nn.Conv2d(3, 8, 3, padding=1), CReLU()\n\n"
        "    def forward(self, x):\n"
        "        if x.sum() > 0:\n"
        "            x = self.conv(x)\n"
        "        return self.act(x)\n\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return Net()\n"
    )
    code = main(["reconstruct", f"{source}:make", "--image", "skimage:astronaut",
                 "--image-size", "16", "--layers", "act", "--json", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("note: torch.fx cannot trace Net") == 1 and "Traceback" not in err


def test_a_map_in_another_dtype_converts_only_the_path_and_leaves_the_model_alone():
    """A float32 VGG solved in float64: the map's residual equals that of a whole float64
    copy's forward pass; the classifier (off the path) is shared, not copied; the model
    is unchanged."""
    torch.manual_seed(0)
    model = create_model("vgg16", width=0.125).float().eval()
    x = torch.rand(1, 3, 32, 32)
    before = snapshot(model)
    f = features(model, x, layer="features.8")
    reference = copy.deepcopy(model).double()
    v = torch.rand(1, 3, 32, 32, dtype=D)
    with LayerMap(model, f, pooling="model", dtype=D, device="cpu") as lm:
        assert lm.model is not model and lm.model.features[7].weight.dtype == D
        assert lm.model.classifier[0].weight is model.classifier[0].weight
        out = layer_outputs(reference, v, "features.7")["features.7"]
        y = f.activation.double()
        expected = torch.where(y > 0, out - y, torch.relu(out))
        assert torch.allclose(lm.residual(v, lm.all), expected, rtol=0, atol=1e-12)
    assert_unchanged(model, before)
