"""Joint inversion against dense Jacobians from autograd, numpy's lstsq and bad input.

References are computed here, independently of the solver: dense Jacobians with
``torch.autograd.functional.jacobian`` (injectivity is checked on them first), the
selected-rows map of max-pooling written out with fixed indices, ``numpy.linalg.lstsq``.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian

from invert import CReLU, create_model, features
from invert.linalg.solvers import ConvergenceWarning
from invert.reconstruction import (
    JointSettings,
    Reconstruction,
    reconstruct,
    reconstruct_joint,
    reconstruct_layerwise,
)
from invert.reconstruction.layer_map import LayerMap

D = torch.float64


def rel(a, b):
    return float((a - b).norm() / b.norm())


def dense_rank_ok(fn, x):
    """Injectivity of ``fn`` at each image of ``x``, from the dense autograd Jacobian."""
    for xi in x:
        j = jacobian(lambda v: fn(v[None]).flatten(), xi).reshape(-1, xi.numel())
        s = torch.linalg.svdvals(j)
        assert j.shape[0] >= j.shape[1] and float(s[-1] / s[0]) > 1e-6, float(s[-1] / s[0])


def quiet_layerwise(model, f):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return reconstruct_layerwise(model, f, device="cpu")


def crelu_stack():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), CReLU(),
        nn.Conv2d(16, 6, 3, padding=1), CReLU(),  # 16 -> 6 channels: loses its input
        nn.Conv2d(12, 4, 3, padding=1), CReLU(),  # 12 -> 4
    ).double()  # fmt: skip


def relu_stack():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),  # 16 -> 8 channels
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
    ).double()  # fmt: skip


class ResidualNet(nn.Module):
    """conv, then a residual block with BatchNorm (eval) -- not a chain -- then a conv."""

    def __init__(self, act=nn.ReLU):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.act = act()
        self.head = nn.Conv2d(4, 3, 3, padding=1)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(bn.weight, 0.5, 1.5)

    def forward(self, x):
        x = self.stem(x)
        y = self.act(self.bn1(self.conv1(x)))
        return self.head(self.act(self.bn2(self.conv2(y)) + x))


# --- exact recovery where the layer-wise walk cannot be exact --------------------------------


def test_crelu_stack_injective_end_to_end_is_recovered_jointly():
    model = crelu_stack()
    x = torch.rand(2, 1, 6, 6, dtype=D)
    dense_rank_ok(lambda v: model[:5](v), x)  # 144 equations on 36 unknowns, rank 36
    f = features(model, x, layer="5")
    assert rel(quiet_layerwise(model, f).image, x) > 1e-3  # the walk cannot be exact
    rec = reconstruct_joint(model, f, device="cpu")
    assert rel(rec.image, x) < 1e-8
    assert rec.strategy == "joint" and rec.start == "layerwise"
    assert rec.certificate.unique == [True, True] and rec.converged
    assert all(r < 1e-10 for r in rec.certificate.residual)


def test_relu_stack_is_recovered_from_its_active_units():
    model = relu_stack()
    x = torch.rand(2, 1, 6, 6, dtype=D)
    dense_rank_ok(lambda v: model(v), x)  # the ReLU output's Jacobian: active rows
    f = features(model, x, layer="5")
    assert rel(quiet_layerwise(model, f).image, x) > 1e-3
    rec = reconstruct_joint(model, f, device="cpu")
    assert rel(rec.image, x) < 1e-8 and all(rec.certificate.unique)


def test_residual_block_with_batchnorm_is_recovered():
    torch.manual_seed(0)
    model = ResidualNet().double().eval()
    x = torch.rand(2, 1, 6, 6, dtype=D)
    dense_rank_ok(model, x)
    f = features(model, x, layer="head")
    assert not f.chain
    with pytest.raises(ValueError, match="plain chain"):
        reconstruct_layerwise(model, f, device="cpu")
    rec = reconstruct(model, f, device="cpu")  # auto: joint only for a non-chain
    assert rec.start == "zeros" and rec.diagnostics["winner"] == ["joint"] * 2
    assert rel(rec.image, x) < 1e-8 and all(rec.certificate.unique)


@pytest.mark.parametrize(
    "act", [nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU], ids=lambda a: a.__name__
)
def test_smooth_and_leaky_activations_in_a_residual_block(act):
    torch.manual_seed(0)
    model = ResidualNet(act).double().eval()
    x = torch.rand(1, 1, 6, 6, dtype=D)
    dense_rank_ok(model, x)
    rec = reconstruct_joint(model, features(model, x, layer="head"), device="cpu")
    assert rel(rec.image, x) < 1e-8 and rec.certificate[0].unique


def test_strided_dilated_convs_and_average_pooling():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=2, dilation=2), CReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.LeakyReLU(0.1),  # 8x8 -> 4x4
        nn.AvgPool2d(1), nn.Conv2d(16, 12, 1),
    ).double()  # fmt: skip
    x = torch.rand(1, 1, 8, 8, dtype=D)
    dense_rank_ok(model, x)  # 12 x 16 = 192 values on 64 unknowns
    rec = reconstruct_joint(model, features(model, x, layer="5"), device="cpu")
    assert rel(rec.image, x) < 1e-8 and rec.certificate[0].unique


def test_linear_model_equals_lstsq():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)).double()
    x = torch.rand(1, 2, 5, 5, dtype=D)
    f = features(model, x, layer="1")
    f.activation += 0.01 * torch.randn_like(f.activation)  # inconsistent: least squares
    a = jacobian(lambda v: model(v[None]).flatten(), x[0]).reshape(-1, x[0].numel())
    offset = model(torch.zeros_like(x)).flatten()
    b = (f.activation.flatten() - offset).detach()
    ref = np.linalg.lstsq(a.numpy(), b.numpy(), rcond=None)[0]
    with pytest.warns(ConvergenceWarning, match="did not reach"):
        rec = reconstruct_joint(model, f, device="cpu")  # the residual cannot reach tol
    assert np.allclose(rec.image.flatten().numpy(), ref, rtol=0, atol=1e-10)
    assert list(rec.status) == ["stationary"] and not rec.certificate[0].unique


def test_linear_model_without_full_rank_gives_the_minimum_norm_solution():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1)).double()  # 50 values, 75 unknowns
    x = torch.rand(1, 3, 5, 5, dtype=D)
    f = features(model, x, layer="0")
    rec = reconstruct_joint(model, f, x0=torch.zeros_like(x), device="cpu")
    a = jacobian(lambda v: model(v[None]).flatten(), x[0]).reshape(-1, x[0].numel())
    b = (f.activation.flatten() - model[0].bias.repeat_interleave(25)).detach()
    ref = np.linalg.lstsq(a.numpy(), b.numpy(), rcond=None)[0]
    assert np.allclose(rec.image.flatten().numpy(), ref, atol=1e-9)
    row = rec.certificate[0]
    assert row.converged and row.A == 0 and not row.unique and "not injective" in row.note


# --- max-pooling ------------------------------------------------------------------------------


def pooled_model():
    torch.manual_seed(6)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), CReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(12, 12, 3, padding=1), CReLU()).double()  # fmt: skip


def test_recorded_switches_against_the_dense_selected_rows_jacobian():
    model = pooled_model()
    x = torch.rand(1, 1, 8, 8, dtype=D)
    u = model[1](model[0](x))
    _, idx = F.max_pool2d(u, 2, return_indices=True)

    def selected(v):  # the network with the selection held at x's switches
        w = model[1](model[0](v))
        return model[3](w.flatten(2).gather(2, idx.flatten(2)).view_as(idx))

    j = jacobian(lambda v: selected(v[None]).flatten(), x[0]).reshape(-1, x.numel())
    f = features(model, x, layer="4")
    with LayerMap(model, f, dtype=D, device="cpu") as lm:
        lin = lm.linearize(x, lm.all)
        v = torch.randn_like(x)
        assert torch.allclose(lin.jvp(v).flatten(), j @ v.flatten(), atol=1e-12)
        u = torch.randn_like(lin.r)
        assert torch.allclose(lin.vjp(u).flatten(), j.T @ u.flatten(), atol=1e-12)
    rec = reconstruct_joint(model, f, device="cpu")
    eig = torch.linalg.eigvalsh(j.T @ j)
    assert math.isclose(rec.certificate[0].A, float(eig[0]), rel_tol=1e-8)
    assert rel(rec.image, x) < 1e-8 and rec.certificate[0].unique


def test_pooling_by_the_models_own_max():
    model = pooled_model()
    x = torch.rand(2, 1, 8, 8, dtype=D)
    f = features(model, x, layer="4")
    near = x + 1e-3 * torch.randn_like(x)  # the switches of x hold near x
    rec = reconstruct_joint(model, f, joint=JointSettings(pooling="model"), x0=near, device="cpu")
    assert rel(rec.image, x) < 1e-8 and rec.settings["joint"]["pooling"] == "model"
    assert all(r < 1e-10 for r in rec.certificate.model_residual)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # harder from far away
        far = reconstruct_joint(model, f, joint=JointSettings(pooling="model"), device="cpu")
    for row in far.certificate:  # whatever it reached, it claims only what holds
        assert not row.unique or (row.residual < 1e-10 and row.converged)


# --- auto -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_fn, layer", [(crelu_stack, "1"), (crelu_stack, "5"),
                                             (relu_stack, "5"), (pooled_model, "4")])  # fmt: skip
def test_auto_is_never_worse_than_layerwise(model_fn, layer):
    model = model_fn()
    shape = (3, 1, 8, 8) if model_fn is pooled_model else (3, 1, 6, 6)
    f = features(model, torch.rand(*shape, dtype=D), layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lw = reconstruct(model, f, strategy="layerwise", device="cpu")
        auto = reconstruct(model, f, device="cpu")
    for a, b in zip(auto.certificate.residual, lw.certificate.residual):
        assert a <= b * (1 + 1e-12) + 1e-15
    for i, winner in enumerate(auto.diagnostics["winner"]):
        if winner == "layerwise":  # the walk itself stands, not the joint solve's start
            assert auto.certificate.residual[i] == pytest.approx(lw.certificate.residual[i])
    if layer == "1":  # conv1 is a frame: layer-wise is exact and stands
        assert auto.diagnostics["winner"] == ["layerwise"] * 3 and auto.strategy == "layerwise"
    else:
        assert "joint" in auto.diagnostics["winner"]


def test_every_strategy_returns_one_result_type_with_a_certificate():
    model = crelu_stack()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = [reconstruct(model, f, strategy=s, device="cpu") for s in
                   ("auto", "layerwise", "joint")]  # fmt: skip
    for rec in results:
        assert isinstance(rec, Reconstruction) and len(rec.certificate) == 1
        row = rec.certificate.as_dict()[0]
        assert {"residual", "A", "B", "ratio", "unique", "note"} <= set(row)
    assert results[1].layers and not results[1].history and results[2].history
    assert reconstruct_layerwise(model, f, device="cpu").certificate is None


# --- bounds and the prior ---------------------------------------------------------------------


def test_a_feasible_box_changes_nothing_and_is_respected():
    model = crelu_stack()
    x = torch.rand(1, 1, 6, 6, dtype=D)
    rec = reconstruct_joint(model, features(model, x, layer="5"), bounds=(0, 1), device="cpu")
    assert rel(rec.image, x) < 1e-8 and rec.certificate[0].unique
    assert float(rec.image.min()) >= 0 and float(rec.image.max()) <= 1


def test_an_infeasible_box_is_reported():
    model = crelu_stack()
    x = torch.rand(1, 1, 6, 6, dtype=D)  # values up to ~1
    with pytest.warns(ConvergenceWarning, match="did not reach"):
        rec = reconstruct_joint(model, features(model, x, layer="5"), bounds=(0, 0.5),
                                device="cpu")  # fmt: skip
    row = rec.certificate[0]
    assert not row.unique and not row.converged and row.note.startswith("infeasible box")
    assert float(rec.image.max()) <= 0.5 and row.residual > 1e-3


def test_tv_prior_where_the_map_is_not_injective():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 2, 4, stride=2, padding=1), CReLU()).double()  # 2x16
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8), indexing="ij")
    x = ((xx + yy) / 2).to(D)[None, None]  # a smooth image: what TV prefers
    f = features(model, x, layer="1")
    plain = reconstruct_joint(model, f, device="cpu")
    assert plain.certificate[0].A == 0 and not plain.certificate[0].unique
    tv = reconstruct_joint(
        model, f, prior="tv", joint=JointSettings(prior_weight=1e-4), bounds=(0, 1), device="cpu"
    )
    assert rel(tv.image, x) < 0.5 * rel(plain.image, x)
    assert not tv.certificate[0].unique and "prior" in tv.certificate[0].note
    # the objective is the documented one, the prior in units of the side (s = 8 here):
    # |r|^2/|t|^2 + w s mean_p sqrt(|grad x|^2 + eps^2), by numpy at the returned image
    img = tv.image[0, 0].numpy()
    gx = np.pad(np.diff(img, axis=1), ((0, 0), (0, 1)))
    gy = np.pad(np.diff(img, axis=0), ((0, 1), (0, 0)))
    prior = 8 * np.sqrt(gx**2 + gy**2 + 1e-6).mean()
    expected = tv.certificate[0].residual ** 2 + 1e-4 * prior
    assert tv.history[-1]["objective"][0] == pytest.approx(expected, rel=1e-9)


def test_float32_inner_products_reach_the_float64_answer():
    """Features that can be met: every step takes float32 products (mixed-precision
    iterative refinement) and the image is the float64 one, to 1e-8 of the input."""
    from invert.reconstruction.joint import solve_joint

    model = relu_stack()
    x = torch.rand(2, 1, 6, 6, dtype=D)
    dense_rank_ok(lambda v: model(v), x)
    f = features(model, x, layer="5")
    opts = dict(x0=None, bounds=None, prior=None, tol=1e-10,
                settings=JointSettings(max_steps=50, cg_iterations=500))  # fmt: skip
    with warnings.catch_warnings(), LayerMap(model, f, device="cpu") as lm:
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixed = solve_joint(lm, model, **opts)
        plain = solve_joint(lm, model, inner_dtype=None, **opts)
    inner = [row["inner"] for row in mixed.history]
    assert set(inner) == {"float32"}
    assert {row["inner"] for row in plain.history} == {"float64"}
    assert mixed.status == plain.status == ["converged"] * 2
    assert rel(mixed.x, x) < 1e-8 and rel(plain.x, x) < 1e-8


def test_not_injective_by_counting_is_said_at_once_and_not_iterated_for_minutes():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), CReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 4, 3, padding=1), CReLU()).double()  # fmt: skip
    x = torch.rand(2, 3, 8, 8, dtype=D)  # 2 images, 4 x 4 x 4 = 64 values for 192 inputs
    f = features(model, x, layer="4")
    j = jacobian(lambda v: model(v[None]).flatten(), x[0]).reshape(-1, x[0].numel())
    assert int(torch.linalg.matrix_rank(j)) < x[0].numel()  # dense: a kernel indeed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rec = reconstruct(model, f, strategy="joint", device="cpu")
        tv = reconstruct(model, f, strategy="joint", prior="tv", bounds=(0, 1), device="cpu")
    note = rec.note
    assert note.startswith("not injective") and "rank <= 64 < 192" in note and "prior" in note
    assert len(rec.history) <= 5 and not any(rec.certificate.unique)
    assert all(s in ("not injective", "converged") for s in rec.status)
    assert "'tv' prior picks" in tv.note and not any(tv.certificate.unique)
    injective = reconstruct(relu_stack(), features(relu_stack(), x[:, :1, :6, :6], layer="5"),
                            device="cpu")  # fmt: skip
    assert injective.note is None


class BiasFree(nn.Module):
    """A bias-free residual ReLU net (as ResNet's convs): J = 0 at the zero image."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.a(x))
        return self.relu(self.b(h) + h)


def test_a_start_where_the_jacobian_vanishes_is_moved_off_it():
    torch.manual_seed(0)
    model = BiasFree().double()
    x = torch.rand(2, 1, 6, 6, dtype=D)
    dense_rank_ok(model, x)
    f = features(model, x, layer="relu_1")
    j0 = jacobian(lambda v: model(v[None]).flatten(), torch.zeros_like(x[0]))
    assert not bool(j0.any())  # the dead point, by autograd
    rec = reconstruct(model, f, device="cpu")  # not a chain: no layer-wise start
    assert rec.start == "zeros + seeded noise (J = 0 there)"
    assert rel(rec.image, x) < 1e-8 and all(rec.certificate.unique)


# --- bad input --------------------------------------------------------------------------------


def test_features_from_another_model_or_changed_weights():
    model = crelu_stack()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="5")
    for fn in (reconstruct_joint, reconstruct):
        with pytest.raises(ValueError, match="another model"):
            fn(relu_stack(), f, device="cpu")
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] += 1e-9
    with pytest.raises(ValueError, match="another model"):
        reconstruct_joint(model, f, device="cpu")


def test_unknown_layer_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown layer 'conv9'; valid layers: 0, 1, 2"):
        features(crelu_stack(), torch.rand(1, 1, 6, 6, dtype=D), layer="conv9")


def test_nan_or_inf_in_the_features():
    model = crelu_stack()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="5")
    f.activation[0, 0, 0, 0] = float("nan")
    for fn in (reconstruct_joint, reconstruct):
        with pytest.raises(ValueError, match="NaN or Inf"):
            fn(model, f, device="cpu")


class Rounding(nn.Module):
    def forward(self, x):
        return torch.round(x * 4) / 4


class Detaching(nn.Module):
    def forward(self, x):
        return x.detach() * 2


@pytest.mark.parametrize("layer", [Rounding, Detaching])
def test_a_layer_autograd_cannot_differentiate_is_named(layer):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), layer(), nn.Conv2d(4, 4, 3)).double()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="2")
    with pytest.raises(ValueError, match=rf"layer '1' \({layer.__name__}\) cannot be differ"):
        reconstruct_joint(model, f, device="cpu")


def test_a_solve_that_does_not_converge_says_so():
    model = crelu_stack()
    x = torch.rand(1, 1, 6, 6, dtype=D)
    with pytest.warns(ConvergenceWarning, match=r"worst residual reached \d\.\d+e"):
        rec = reconstruct_joint(model, features(model, x, layer="5"),
                                joint=JointSettings(max_steps=1), device="cpu")  # fmt: skip
    row = rec.certificate[0]
    assert not row.converged and not row.unique and row.residual > 1e-10
    assert "not converged (max_steps)" in row.note and not rec.converged


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(strategy="smart"), ValueError, "strategy"),
        (dict(prior="l2"), ValueError, "prior"),
        (dict(joint=dict(prior_weight=-1.0)), ValueError, "prior_weight"),
        (dict(joint=dict(pooling="avg")), ValueError, "pooling"),
        (dict(bounds=(1, 0)), ValueError, "lower < upper"),
        (dict(bounds=1.0), TypeError, "pair"),
        (dict(tol=0.0), ValueError, "tol"),
        (dict(joint=dict(max_steps=0)), ValueError, "max_steps"),
        (dict(dtype=torch.float16), ValueError, "dtype"),
        (dict(progress="yes"), TypeError, "progress"),
    ],
)
def test_bad_options(kwargs, error, message):
    model = crelu_stack()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="5")
    with pytest.raises(error, match=message):
        if "joint" in kwargs:
            kwargs["joint"] = JointSettings(**kwargs["joint"])
        reconstruct(model, f, strategy=kwargs.pop("strategy", "joint"), device="cpu", **kwargs)


def test_bad_start_and_bad_features_type():
    model = crelu_stack()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="5")
    with pytest.raises(ValueError, match="x0 must be a tensor of shape"):
        reconstruct_joint(model, f, x0=torch.zeros(1, 1, 5, 5, dtype=D), device="cpu")
    with pytest.raises(TypeError, match="expected Features"):
        reconstruct_joint(model, f.activation, device="cpu")


# --- precision, progress, devices -------------------------------------------------------------


def test_float32_features_converge_to_their_own_tolerance():
    model = crelu_stack().float()
    x = torch.rand(1, 1, 6, 6)
    rec = reconstruct_joint(model, features(model, x, layer="5"), device="cpu")
    assert rec.tol == 1e-5 and rec.certificate[0].converged
    assert rel(rec.image.float(), x) < 1e-4 and next(model.parameters()).dtype == torch.float32


def test_progress_shows_the_steps_and_history_is_kept(capsys):
    model = crelu_stack()
    f = features(model, torch.rand(2, 1, 6, 6, dtype=D), layer="5")
    rec = reconstruct_joint(model, f, progress=True, device="cpu")
    rows = rec.history
    assert rows[0]["gauss_newton_step"] == 1 and len(rows[0]["residual"]) == 2
    assert [r["gauss_newton_step"] for r in rows] == list(range(1, len(rows) + 1))
    assert "Gauss-Newton" in capsys.readouterr().err
    reconstruct_joint(model, f, device="cpu")
    assert capsys.readouterr().err == ""
    assert rows[-1]["residual"][0] < rows[0]["residual"][0]


def test_zoo_model_joint_from_conv2():
    net = create_model("convpool_c_crelu", width=0.1).double()  # conv2: 10 on 20 channels
    x = torch.rand(1, 3, 16, 16, dtype=D)
    rec = reconstruct(net, features(net, x, layer="conv2"), device="cpu")
    assert rec.diagnostics["winner"] == ["joint"] and rel(rec.image, x) < 1e-8
    assert rec.certificate[0].unique


@pytest.mark.cuda
def test_cuda_joint_matches_cpu():
    model = pooled_model()
    x = torch.rand(2, 1, 8, 8, dtype=D)
    f = features(model, x, layer="4")
    cpu = reconstruct_joint(model, f, device="cpu")
    gpu = reconstruct_joint(model, f, device="cuda")
    assert gpu.image.is_cuda and torch.allclose(gpu.image.cpu(), cpu.image, atol=1e-8)
    assert gpu.certificate.unique == cpu.certificate.unique


def test_reconstruct_joint_takes_only_the_joint_solves_options():
    model = crelu_stack()
    f = features(model, torch.rand(1, 1, 6, 6, dtype=D), layer="5")
    with pytest.raises(TypeError, match=r"unexpected options \['layerwise'\]"):
        reconstruct_joint(model, f, layerwise=None, device="cpu")


def test_lanczos_certificate_from_a_float32_start_gives_the_dense_eigenvalues():
    """n = 768 > 500: Lanczos, started from a float32 run's Ritz vectors; A and B are those
    of the dense J^T J (autograd), and the float64 run needs only a few products."""
    from invert.reconstruction.certificate import jacobian_bounds

    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), CReLU(), nn.Conv2d(32, 16, 3, padding=1),
                          CReLU()).double()  # fmt: skip
    x = torch.rand(1, 3, 16, 16, dtype=D)
    f = features(model, x, layer="3")
    j = jacobian(lambda v: model[:3](v[None]).flatten(), x[0]).reshape(-1, x[0].numel())
    eig = torch.linalg.eigvalsh(j.T @ j)
    with LayerMap(model, f, device="cpu") as lm:
        bounds = jacobian_bounds(lm, x)
    assert bounds.method == ["lanczos"] and bounds.resolved == [True]
    assert math.isclose(bounds.B[0], float(eig[-1]), rel_tol=1e-6)
    assert float(eig[0]) * (1 - 1e-9) <= bounds.A[0] <= float(eig[0]) * (1 + 1e-2)
    assert bounds.iterations <= 10


def test_a_solve_that_did_not_converge_gets_B_without_a_lanczos_run_for_A():
    # n = 3 x 16 x 16 = 768 > 500: Lanczos; one step from zero cannot meet tol 1e-10
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), CReLU(),
                          nn.Conv2d(16, 8, 3, padding=1), CReLU()).double()  # fmt: skip
    x = torch.rand(1, 3, 16, 16, dtype=D)
    f = features(model, x, layer="3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rec = reconstruct_joint(model, f, x0=torch.zeros_like(x),
                                joint=JointSettings(max_steps=1), device="cpu")  # fmt: skip
        done = reconstruct_joint(model, f, x0=x + 1e-3 * torch.randn_like(x), device="cpu")
    row = rec.certificate[0]
    assert not row.converged and not row.unique and "nothing to certify" in row.eigen_method
    # B against the dense Jacobian of the compared map (conv2's input side: pre-activation)
    j = jacobian(lambda v: model[:3](v[None]).flatten(),
                 rec.image[0]).reshape(-1, x[0].numel())  # fmt: skip
    eig = torch.linalg.eigvalsh(j.T @ j)
    assert row.B == pytest.approx(float(eig[-1]), rel=1e-3)
    # a converged solve still gets its A, resolved
    good = done.certificate[0]
    assert good.unique and "not resolved" not in good.eigen_method
