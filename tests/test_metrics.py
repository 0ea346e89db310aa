"""Reconstruction metrics against dense projections, autograd Jacobians and hand formulas."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from invert.linalg.operators import ConvOperator
from invert.nn.activations import CReLU
from invert.nn.net import Normalize
from invert.reconstruction import LayerwiseSettings, features
from invert.reconstruction import reconstruct_layerwise as reconstruct
from invert.reconstruction.metrics import reconstruction_metrics, recoverable_part


def dense_jacobian(fn, u):
    jac = torch.autograd.functional.jacobian(fn, u)  # independent of our operator
    return jac.reshape(fn(u).numel(), u.numel()).numpy()


def test_single_crelu_layer_projection_is_pinv_t_t_and_the_walk_hits_it():
    norm = Normalize(3)
    norm.set_statistics([0.5, 0.4, 0.3], [0.2, 0.3, 0.25])
    conv = nn.Conv2d(3, 2, 3, padding=1)
    model = nn.Sequential(norm, conv, CReLU()).double()
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="2"), device="cpu")
    m = reconstruction_metrics(model, x, rec)[0]
    a = ConvOperator.from_conv(conv, 5).dense().numpy()
    u = ((x - norm.mean.view(1, -1, 1, 1)) / norm.std.view(1, -1, 1, 1)).reshape(-1).numpy()
    pu = np.linalg.pinv(a) @ a @ u
    x_p = pu.reshape(3, 5, 5) * norm.std.view(-1, 1, 1).numpy() + norm.mean.view(-1, 1, 1).numpy()
    assert m["projection_error"] < 1e-8
    assert math.isclose(m["recoverable"], np.linalg.norm(pu) / np.linalg.norm(u), rel_tol=1e-8)
    err = np.linalg.norm(rec.image[0].numpy() - x[0].numpy()) / np.linalg.norm(x[0].numpy())
    assert math.isclose(m["relative_error"], err, rel_tol=1e-12)
    assert m["relative_error"] > 0.01  # two filters cannot see three channels
    assert np.linalg.norm(x_p - rec.image[0].numpy()) < 1e-8 * np.linalg.norm(x_p)
    assert m["feature_error"] < 1e-8


@pytest.mark.parametrize("block", ["relu", "crelu+pool"])
def test_projection_is_onto_the_rows_the_features_see(block):
    """ReLU: the active rows; CReLU + max-pool: the switch rows (dense autograd Jacobian)."""
    conv = nn.Conv2d(2, 3, 3, padding=1)
    layers = [conv, nn.ReLU()] if block == "relu" else [conv, CReLU(), nn.MaxPool2d(2)]
    model = nn.Sequential(*layers).double()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    f = features(model, x, layer=str(len(layers) - 1))
    x_p, fraction = recoverable_part(model, x, f)
    j = dense_jacobian(lambda v: model(v), x)
    ref = np.linalg.pinv(j) @ j @ x.reshape(-1).numpy()
    assert np.allclose(x_p.reshape(-1).numpy(), ref, atol=1e-9)
    assert math.isclose(float(fraction[0]), np.linalg.norm(ref) / float(x.norm()), rel_tol=1e-8)
    # the one-layer walk recovers exactly that part ("active" mode for ReLU)
    rec = reconstruct(model, f, layerwise=LayerwiseSettings(relu="active"), device="cpu")
    assert reconstruction_metrics(model, x, rec)[0]["projection_error"] < 1e-8


def test_two_non_injective_layers_lose_more_than_the_jacobian():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), CReLU(), nn.Conv2d(6, 4, 3, padding=1),
                          CReLU()).double()  # fmt: skip
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="3"), device="cpu")
    m = reconstruction_metrics(model, x, rec)[0]
    j = dense_jacobian(lambda v: model(v), x)
    ref = np.linalg.pinv(j) @ j @ x.reshape(-1).numpy()
    err = np.linalg.norm(rec.image.reshape(-1).numpy() - ref) / np.linalg.norm(ref)
    assert math.isclose(m["projection_error"], err, rel_tol=1e-6)
    assert m["projection_error"] > 1e-3
    assert m["feature_error"] > 1e-3


def test_exact_reconstruction_reports_infinite_psnr_and_unit_ssim():
    model = nn.Sequential(nn.Dropout(0.5), nn.Identity())
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="1"), device="cpu")
    for m in reconstruction_metrics(model, x, rec):
        assert m["psnr"] == math.inf and m["ssim"] == 1.0
        assert m["relative_error"] == 0 and m["recoverable"] == 1 and m["projection_error"] == 0


def test_psnr_matches_its_definition_and_ssim_adapts_its_window():
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), CReLU()).double()
    for size, window_ok in ((8, True), (4, True), (2, False)):
        x = torch.rand(1, 3, size, size, dtype=torch.float64)
        rec = reconstruct(model, features(model, x, layer="1"), device="cpu")
        m = reconstruction_metrics(model, x, rec, data_range=2.0, projection=False)[0]
        mse = float(((rec.image - x) ** 2).mean())
        assert math.isclose(m["psnr"], 10 * math.log10(4.0 / mse), rel_tol=1e-10)
        assert "projection_error" not in m
        assert (0 < m["ssim"] < 1) if window_ok else math.isnan(m["ssim"])


def test_bad_input():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), CReLU()).double()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    rec = reconstruct(model, features(model, x, layer="1"), device="cpu")
    with pytest.raises(ValueError, match="shape"):
        reconstruction_metrics(model, x[:, :2], rec)
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_metrics(model, x * float("nan"), rec)
    with pytest.raises(ValueError, match="data_range"):
        reconstruction_metrics(model, x, rec, data_range=0)
    with pytest.raises(TypeError, match="Reconstruction"):
        reconstruction_metrics(model, x, rec.image)
