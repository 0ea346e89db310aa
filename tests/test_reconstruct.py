"""features / reconstruct against dense pseudo-inverses, exact identities and the zoo."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from invert.linalg.operators import ConvOperator
from invert.linalg.solvers import ConvergenceError, ConvergenceWarning
from invert.nn.activations import AVR, CReLU
from invert.nn.net import Normalize
from invert.nn.zoo import create_model, list_models, model_info
from invert.reconstruction import Features, LayerwiseSettings, features
from invert.reconstruction import reconstruct_layerwise as reconstruct


def rel(a, b):
    return float((a - b).norm() / b.norm())


def randomize_bn(model):
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def dense(conv, size):
    return ConvOperator.from_conv(conv, size).dense().numpy()


# --- exact recovery through frames --------------------------------------------------------


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_exact_recovery_through_a_crelu_frame_stack(padding_mode):
    """3 -> 16 -> 40 channels, 3x3: every layer is a frame, so the input comes back."""
    norm = Normalize(3)
    norm.set_statistics([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    model = nn.Sequential(
        norm,
        nn.Conv2d(3, 16, 3, padding=1, padding_mode=padding_mode),
        nn.BatchNorm2d(16),
        CReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(32, 40, 3, padding=1, padding_mode=padding_mode),
        CReLU(),
    ).double()
    randomize_bn(model)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="6"), device="cpu")
    assert rel(rec.image, x) <= 1e-8
    assert rec.converged and len(rec.layers) == 7
    solves = [r for r in rec.layers if r.operation == "Conv2d"]
    expected = "fft" if padding_mode == "circular" else "cgls"
    assert all(expected in r.inverse for r in solves)
    assert solves[0].equations == 40 * 64 and solves[0].unknowns == 32 * 64
    assert model.training  # features() ran in eval mode and restored the mode


def test_stride_and_leaky_relu_stack_is_exact():
    model = nn.Sequential(
        nn.Conv2d(3, 20, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
        nn.Conv2d(20, 24, 1), CReLU(),
    ).double()  # fmt: skip
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="3"), device="cpu")
    assert rel(rec.image, x) <= 1e-8


# --- not frames: the walk equals its dense definition ------------------------------------


def test_single_layer_gives_the_projection_onto_the_range():
    """Proposition 2.1: two filters on three channels recover pinv(A) A x exactly."""
    conv = nn.Conv2d(3, 2, 3, padding=1).double()
    model = nn.Sequential(conv, CReLU())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="1"), device="cpu")
    a = dense(conv, 5)
    proj = (np.linalg.pinv(a) @ a @ x.reshape(2, -1).numpy().T).T
    assert np.allclose(rec.image.reshape(2, -1).numpy(), proj, atol=1e-9)


def test_two_layers_not_frames_match_dense_layer_by_layer_pinv():
    conv1, conv2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(6, 4, 3, stride=2)
    model = nn.Sequential(conv1, CReLU(), conv2, CReLU()).double()
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="3"), device="cpu")
    # the same algorithm with numpy dense pseudo-inverses
    y2 = features(model, x, layer="3").activation.reshape(-1).numpy()
    z2 = y2[: y2.size // 2] - y2[y2.size // 2 :]
    b2 = np.repeat(conv2.bias.detach().numpy(), 9)
    y1 = np.linalg.pinv(dense(conv2, 7)) @ (z2 - b2)
    z1 = y1[: y1.size // 2] - y1[y1.size // 2 :]
    b1 = np.repeat(conv1.bias.detach().numpy(), 49)
    ref = np.linalg.pinv(dense(conv1, 7)) @ (z1 - b1)
    assert np.allclose(rec.image.reshape(-1).numpy(), ref, atol=1e-8 * np.abs(ref).max())


def test_max_pool_block_matches_dense_selected_rows():
    """conv + BN + CReLU + max-pool: one masked solve on the switch rows."""
    conv = nn.Conv2d(2, 5, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(5), CReLU(), nn.MaxPool2d(3, 2, 1)).double()
    randomize_bn(model).eval()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    f = features(model, x, layer="3")
    rec = reconstruct(model, f, device="cpu")
    bn = model[1]
    z = bn(conv(x)).detach()  # pre-activation, computed independently
    conv_out = conv(x).detach() - conv.bias.detach().view(1, -1, 1, 1)
    a = dense(conv, 6)
    for s in range(2):
        # the selected rows, by brute force over the windows (3x3, stride 2, pad 1)
        rows = set()
        for i in range(3):
            for j in range(3):
                r = [(p, q) for p in range(2 * i - 1, 2 * i + 2)
                     for q in range(2 * j - 1, 2 * j + 2) if 0 <= p < 6 and 0 <= q < 6]  # fmt: skip
                for c in range(5):
                    vals = [float(z[s, c, p, q]) for p, q in r]
                    if max(vals) > 0:
                        rows.add((c, *r[int(np.argmax(vals))]))
                    if min(vals) < 0:
                        rows.add((c, *r[int(np.argmin(vals))]))
        idx = sorted(c * 36 + p * 6 + q for c, p, q in rows)
        rhs = conv_out[s].reshape(-1).numpy()[idx]
        ref = np.linalg.lstsq(a[idx], rhs, rcond=None)[0]
        assert np.allclose(rec.image[s].reshape(-1).numpy(), ref, atol=1e-8)
    pool_report = rec.layers[0]
    assert pool_report.operation == "MaxPool2d" and pool_report.inverse == "switches"
    assert rec.layers[-1].equations < rec.layers[-1].unknowns + 100


def test_avgpool_and_adaptive_avgpool_are_min_norm():
    model = nn.Sequential(nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
                          nn.AdaptiveAvgPool2d(3)).double()  # fmt: skip
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="1"), device="cpu")
    # dense matrices of both maps from their definitions
    a1 = np.zeros((2 * 36, 2 * 25))
    for c in range(2):
        for i in range(6):
            for j in range(6):
                cells = [
                    (p, q) for p in (i - 1, i) for q in (j - 1, j) if 0 <= p < 5 and 0 <= q < 5
                ]
                for p, q in cells:
                    a1[c * 36 + i * 6 + j, c * 25 + p * 5 + q] = 1 / len(cells)
    a2 = np.zeros((2 * 9, 2 * 36))
    for c in range(2):
        for i in range(3):
            for j in range(3):
                for p in range(2 * i, 2 * i + 2):
                    for q in range(2 * j, 2 * j + 2):
                        a2[c * 9 + i * 3 + j, c * 36 + p * 6 + q] = 0.25
    y = model(x).reshape(-1).detach().numpy()
    assert np.allclose(a2 @ a1 @ x.reshape(-1).numpy(), y)
    ref = np.linalg.pinv(a1) @ (np.linalg.pinv(a2) @ y)
    assert np.allclose(rec.image.reshape(-1).numpy(), ref, atol=1e-9)


def test_fft_and_cg_paths_agree_for_circular_padding():
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, padding_mode="circular"), CReLU(),
                          nn.Conv2d(10, 6, 3, stride=2, padding=1, padding_mode="circular"),
                          CReLU()).double()  # fmt: skip
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    f = features(model, x, layer="3")
    fft = reconstruct(model, f, layerwise=LayerwiseSettings(conv_solver="fft"), device="cpu")
    cg = reconstruct(
        model, f, layerwise=LayerwiseSettings(conv_solver="cg", cg_iterations=5000), device="cpu"
    )
    assert all(r.inverse.endswith("fft") for r in fft.layers if r.operation == "Conv2d")
    assert all("cgls" in r.inverse for r in cg.layers if r.operation == "Conv2d")
    assert rel(cg.image, fft.image) < 1e-7
    assert fft.layers[1].rank is not None


# --- ReLU, beyond the paper --------------------------------------------------------------


def test_relu_loses_measurably_more_than_crelu_on_the_same_filters():
    conv = nn.Conv2d(3, 4, 3, padding=1).double()  # 4 filters >= 3 channels: a frame
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    errors = {}
    crelu_model, relu_model = nn.Sequential(conv, CReLU()), nn.Sequential(conv, nn.ReLU())
    errors["crelu"] = rel(reconstruct(crelu_model, features(crelu_model, x, layer="1"),
                                      device="cpu").image, x)  # fmt: skip
    f = features(relu_model, x, layer="1")
    for mode in ("naive", "active", "constrained"):
        rec = reconstruct(relu_model, f, layerwise=LayerwiseSettings(relu=mode), device="cpu")
        errors[mode] = rel(rec.image, x)
    assert errors["crelu"] < 1e-8
    # no ordering among the ReLU modes is guaranteed: each is a different guess
    assert min(errors["naive"], errors["active"], errors["constrained"]) > 0.05


def test_constrained_relu_reproduces_the_features_and_stays_in_the_range():
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    f = features(model, x, layer="1")
    rec = reconstruct(model, f, layerwise=LayerwiseSettings(relu="constrained"), device="cpu")
    z_rec = conv(rec.image).detach()
    active = f.activation > 0
    # active units as equations, inactive ones kept <= 0 (to the solver's feasibility
    # tolerance sqrt(1e-12) relative to max |z|): relu(z') equals the features
    level = float(z_rec.abs().max())
    assert torch.allclose(torch.relu(z_rec), f.activation, atol=1e-6 * level)
    assert float(z_rec[~active].max()) <= 1e-6 * level
    assert rec.layers[1].violation <= 1e-6
    a = dense(conv, 5)
    v = rec.image.reshape(-1).numpy()
    assert np.allclose(np.linalg.pinv(a) @ a @ v, v, atol=1e-9)  # in range(T^T)
    naive = reconstruct(model, f, layerwise=LayerwiseSettings(relu="naive"), device="cpu")
    assert not torch.allclose(torch.relu(conv(naive.image)), f.activation, atol=1e-3)


def test_relu_max_pool_constrained_respects_window_bounds():
    conv = nn.Conv2d(2, 4, 3, padding=1).double()
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    f = features(model, x, layer="2")
    rec = reconstruct(model, f, layerwise=LayerwiseSettings(relu="constrained"), device="cpu")
    # the reconstruction reproduces the pooled features exactly
    assert torch.allclose(model(rec.image), f.activation, atol=1e-7)


def test_avr_needs_the_lossy_mode():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), AVR()).double()
    f = features(model, torch.randn(1, 1, 5, 5, dtype=torch.float64), layer="1")
    with pytest.raises(ValueError, match=r"'1' \(AVR\).*avr='naive'"):
        reconstruct(model, f, device="cpu")
    rec = reconstruct(model, f, layerwise=LayerwiseSettings(avr="naive"), device="cpu")
    assert rec.layers[0].inverse.startswith("naive")


# --- the zoo ----------------------------------------------------------------------------


def zoo_case(name):
    """A small, fast instance of a zoo model and a layer to invert."""
    info = model_info(name)
    width = {"All-CNN-B": 0.08, "reference": 0.05}.get(info["family"], 0.1)
    size = {"All-CNN-B": 67, "reference": 67, "AlexNet layout (64 px)": 64}.get(info["family"], 16)
    layer = "conv3"
    if info["family"] == "reference":  # torchvision layouts: a chain up to the first pooling
        features = create_model(name, width=width).features if name.startswith("vgg") else []
        pools = [f"features.{i}" for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        layer = "maxpool" if name.startswith("resnet") else pools[0] if pools else "features.5"
    return width, size, layer


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_reconstructs(name):
    width, size, layer = zoo_case(name)
    net = randomize_bn(create_model(name, width=width).double())
    norm = net.normalize
    norm.set_statistics([0.5, 0.4, 0.3], [0.2, 0.3, 0.25])
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    avr = "naive" if "avr" in name else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # checked through the reports
        rec = reconstruct(
            net, features(net, x, layer=layer), layerwise=LayerwiseSettings(avr=avr), device="cpu"
        )
    assert rec.image.shape == x.shape and torch.isfinite(rec.image).all()
    solves = [r for r in rec.layers if r.iterations is not None]
    assert solves and all(r.converged or r.residual > r_tol for r in solves for r_tol in [1e-12])
    assert all(r.residual < 1e-3 for r in solves)
    assert rec.layers[-1].operation == "Normalize"


@pytest.mark.parametrize("name", [n for n in list_models() if "crelu" in n])
def test_crelu_zoo_models_are_exact_at_conv1_when_it_is_a_frame(name):
    info = model_info(name)
    # widths at which conv1 has more filters than the input dimension per position
    width, size = (1.0, 67) if info["family"] == "All-CNN-B" else (0.1, 12)
    if info["family"] == "AlexNet layout (64 px)":  # 96 filters of 11x11x3, stride 4: 48 unknowns
        width, size = 1.0, 64
    if name in ("allcnn_b_crelu_all", "allcnn_b_crelu147"):
        pytest.skip("conv1 has 48 filters for 48 polyphase unknowns: square, not a frame")
    net = randomize_bn(create_model(name, width=width).double())
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    if info["family"] == "All-CNN-B":  # 11x11/4 with pad 2: the input border beyond
        x = torch.rand(1, 3, 63, 63, dtype=torch.float64)  # the last window is unseen
    rec = reconstruct(net, features(net, x, layer="conv1"), device="cpu")
    assert rel(rec.image, x) <= 1e-8


# --- bad input -----------------------------------------------------------------------------


def small_model():
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), CReLU(), nn.Flatten(),
                         nn.Linear(12 * 16, 3)).double()  # fmt: skip


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown layer 'conv9'; valid layers: 0, 1, 2, 3"):
        features(small_model(), torch.randn(1, 2, 4, 4, dtype=torch.float64), layer="conv9")


@pytest.mark.parametrize(
    "layer, message",
    [("2", r"layer '2' \(Flatten\) cannot"), ("3", r"'2' \(Flatten\), '3' \(Linear\)")],
)
def test_layers_that_cannot_be_inverted_are_named(layer, message):
    model = small_model()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        reconstruct(model, features(model, x, layer=layer), device="cpu")


def test_zoo_classifier_layers_are_refused():
    net = create_model("vgg_crelu1", width=0.05).double()
    with pytest.raises(ValueError, match=r"'flatten' \(Flatten\)"):
        reconstruct(net, features(net, torch.rand(1, 3, 32, 32, dtype=torch.float64),
                                  layer="fc1"), device="cpu")  # fmt: skip


def test_features_of_the_wrong_shape_or_model():
    model = small_model()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    f = features(model, x, layer="1")
    bad = Features(f.activation[:, :6], f.layer, f.steps, f.switches, f.fingerprint)
    with pytest.raises(ValueError, match="wrong shape"):
        reconstruct(model, bad, device="cpu")
    other = small_model()
    with pytest.raises(ValueError, match="another model"):
        reconstruct(other, f, device="cpu")
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-9  # the same model, changed weights
    with pytest.raises(ValueError, match="another model"):
        reconstruct(model, f, device="cpu")


def test_nan_or_inf_in_features_or_weights():
    model = small_model()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    f = features(model, x, layer="1")
    f.activation[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        reconstruct(model, f, device="cpu")
    with pytest.raises(ValueError, match="NaN or Inf"):
        features(model, x * float("nan"), layer="1")
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"0\.weight contains NaN"):
        features(model, x, layer="1")


def test_non_chain_model_is_refused_by_the_layerwise_walk():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.act = CReLU()

        def forward(self, x):
            return self.act(self.conv(x) + x)

    model = Residual()
    f = features(model, torch.randn(1, 2, 4, 4), layer="act")  # for the joint solver
    assert not f.chain and f.path == ["conv", "add", "act"]  # the functional add is a place
    with pytest.raises(ValueError, match="plain chain"):
        reconstruct(model, f, device="cpu")


def test_non_converging_solve_reports_the_residual():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), CReLU()).double()
    f = features(model, torch.randn(1, 3, 6, 6, dtype=torch.float64), layer="1")
    with pytest.warns(ConvergenceWarning, match=r"worst residual reached \d\.\d+e"):
        rec = reconstruct(model, f, layerwise=LayerwiseSettings(cg_iterations=2), device="cpu")
    assert not rec.converged
    report = rec.layers[1]
    assert not report.converged and report.residual > 1e-12 and report.iterations >= 2
    with pytest.raises(ConvergenceError):
        reconstruct(
            model, f, layerwise=LayerwiseSettings(cg_iterations=2, strict=True), device="cpu"
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(relu="smart"), "relu"), (dict(conv_solver="lu"), "conv_solver"),
     (dict(avr="yes"), "avr"), (dict(dtype=torch.float16), "dtype"),
     (dict(conv_solver="fft"), "circular")],
)  # fmt: skip
def test_bad_options(kwargs, message):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), CReLU()).double()
    f = features(model, torch.randn(1, 2, 5, 5, dtype=torch.float64), layer="1")
    with pytest.raises(ValueError, match=message):
        dtype = kwargs.pop("dtype", torch.float64)
        reconstruct(model, f, device="cpu", dtype=dtype, layerwise=LayerwiseSettings(**kwargs))


def test_float32_model_and_reconstruction():
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), CReLU())
    x = torch.rand(1, 3, 8, 8)
    f = features(model, x, layer="1")
    rec = reconstruct(model, f, dtype=torch.float32, device="cpu")
    assert rec.image.dtype == torch.float32 and rel(rec.image, x) < 1e-3
    rec64 = reconstruct(model, f, device="cpu")  # float32 features, float64 solve
    assert rec64.image.dtype == torch.float64 and rel(rec64.image.float(), x) < 1e-5


@pytest.mark.cuda
def test_cuda_reconstruction_matches_cpu():
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), CReLU(), nn.MaxPool2d(2)).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    f = features(model, x, layer="2")
    cpu = reconstruct(model, f, device="cpu")
    gpu = reconstruct(model, f, device="cuda")
    assert gpu.image.is_cuda and torch.allclose(gpu.image.cpu(), cpu.image, atol=1e-8)
