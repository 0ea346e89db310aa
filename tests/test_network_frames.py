"""Network frame bounds and the extreme-eigenvalue routine against dense eigenvalues.

References: ``torch.linalg.eigvalsh`` of explicit matrices, and of ``J^T J`` with ``J``
the dense Jacobian from ``torch.autograd.functional.jacobian``.
"""

import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from invert import CReLU, features
from invert.linalg.spectrum import extreme_eigenvalues
from invert.reconstruction import JointSettings, reconstruct_joint
from invert.reconstruction.certificate import unique_threshold
from theory import NetworkFrameBounds, network_frame_bounds

D = torch.float64


def dense_eig(fn, xi):
    j = jacobian(lambda v: fn(v[None]).flatten(), xi).reshape(-1, xi.numel())
    return torch.linalg.eigvalsh(j.T @ j)


def crelu_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), CReLU(),
                         nn.Conv2d(12, 5, 3, padding=1), CReLU()).double()  # fmt: skip


# --- extreme_eigenvalues -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lanczos", "dense"])
def test_extreme_eigenvalues_of_explicit_matrices(method):
    torch.manual_seed(0)
    m = torch.randn(3, 60, 40, dtype=D)
    m[2, :, -5:] = 0  # a singular one: smallest eigenvalue 0
    gram = m.mT @ m
    spec = extreme_eigenvalues(lambda v: (gram @ v[..., None])[..., 0], (40,), batch=3,
                               method=method, tol=1e-10)  # fmt: skip
    exact = torch.linalg.eigvalsh(gram)
    assert torch.allclose(spec.largest, exact[:, -1], rtol=1e-9)
    assert torch.allclose(spec.smallest[:2], exact[:2, 0], rtol=1e-7)
    assert float(spec.smallest[2]) < 1e-10 * float(exact[2, -1])
    assert bool(spec.converged.all()) and spec.method == method


def test_lanczos_ritz_residual_bounds_the_error():
    torch.manual_seed(1)
    n = 400
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=D))
    values = torch.logspace(-4, 0, n, dtype=D)
    mat = (q * values) @ q.T
    spec = extreme_eigenvalues(lambda v: v @ mat, (n,), method="lanczos", max_iter=60, tol=1e-12)
    assert not bool(spec.converged[0])  # 60 products cannot resolve a 1e4 spread
    # each Ritz value lies within its residual of an eigenvalue, and above the smallest
    gap = (values - spec.smallest[0]).abs().min()
    assert float(gap) <= float(spec.residual_smallest[0]) * (1 + 1e-8)
    assert float(spec.smallest[0]) >= 1e-4 * (1 - 1e-10)


def test_given_ritz_vectors_are_checked_by_rayleigh_ritz_before_any_lanczos_run():
    torch.manual_seed(2)
    n = 300
    q, _ = torch.linalg.qr(torch.randn(2, n, n, dtype=D))
    values = torch.logspace(-3, 1, n, dtype=D)
    mats = (q * values) @ q.mT

    def matvec(v):
        return (mats @ v[..., None])[..., 0]

    ends = torch.stack([q[..., 0], q[..., -1]], 1)  # (batch, 2, n): smallest, largest
    # eigenvectors perturbed to a residual under the tolerance: two products, and the
    # Rayleigh quotients (not the eigenvalues) are the answer, with their residuals
    near = ends + 1e-9 * torch.randn(2, 2, n, dtype=D)
    spec = extreme_eigenvalues(matvec, (n,), batch=2, method="lanczos", tol=1e-2, start=near)
    y = near / near.norm(dim=2, keepdim=True)
    my = (mats[:, None] @ y[..., None])[..., 0]
    rayleigh = (my * y).sum(2)
    assert spec.iterations == 2 and bool(spec.converged.all())
    assert torch.allclose(spec.smallest, rayleigh[:, 0], rtol=1e-12)
    assert torch.allclose(spec.largest, rayleigh[:, 1], rtol=1e-12)
    rho = (my - rayleigh[..., None] * y).norm(dim=2)
    assert torch.allclose(spec.residual_smallest, rho[:, 0], rtol=1e-9)
    # vectors that miss the tolerance: Lanczos from their sum, to the eigenvalues
    far = ends + 0.3 * torch.randn(2, 2, n, dtype=D)
    spec = extreme_eigenvalues(matvec, (n,), batch=2, method="lanczos", tol=1e-6, start=far)
    assert spec.iterations > 2 and bool(spec.converged.all())
    assert torch.allclose(spec.smallest, values[0].expand(2), rtol=1e-5)
    assert torch.allclose(spec.largest, values[-1].expand(2), rtol=1e-9)


def test_extreme_eigenvalues_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        extreme_eigenvalues(lambda v: v, (3,), method="svd")
    with pytest.raises(TypeError, match="callable"):
        extreme_eigenvalues(None, (3,))
    with pytest.raises(ValueError, match="shape"):
        extreme_eigenvalues(lambda v: v, ())


# --- network_frame_bounds --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "lanczos"])
def test_crelu_network_bounds_equal_the_dense_eigenvalues(method):
    model = crelu_net()
    x = torch.rand(2, 2, 5, 5, dtype=D)  # 50 unknowns, 125 pre-activations
    fb = network_frame_bounds(model, x, layer="3", method=method, tol=1e-10, device="cpu")
    assert isinstance(fb, NetworkFrameBounds) and fb.input_dim == 50
    for i in range(2):
        eig = dense_eig(model[:3], x[i])  # the CReLU's input: the pre-activation
        assert math.isclose(float(fb.A[i]), float(eig[0]), rel_tol=1e-7)
        assert math.isclose(float(fb.B[i]), float(eig[-1]), rel_tol=1e-9)
        assert math.isclose(float(fb.ratio[i]), float(eig[0] / eig[-1]), rel_tol=1e-7)
    assert fb.method == ["dense" if method == "auto" else "lanczos"] * 2 and all(fb.resolved)


def test_crelu_output_has_the_same_bounds_as_its_preactivation():
    model = crelu_net()
    x = torch.rand(1, 2, 5, 5, dtype=D)
    fb = network_frame_bounds(model, x, layer="3", device="cpu")
    eig = dense_eig(model, x[0])  # the CReLU output itself
    assert math.isclose(float(fb.A[0]), float(eig[0]), rel_tol=1e-7)


def test_relu_network_bounds_are_those_of_the_active_rows():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 6, 3, padding=1), nn.ReLU()).double()  # fmt: skip
    x = torch.rand(1, 1, 6, 6, dtype=D)
    fb = network_frame_bounds(model, x, layer="3", device="cpu")
    eig = dense_eig(model, x[0])  # the ReLU output's Jacobian: zero rows where inactive
    assert math.isclose(float(fb.A[0]), float(eig[0]), rel_tol=1e-7, abs_tol=1e-12)
    assert math.isclose(float(fb.B[0]), float(eig[-1]), rel_tol=1e-9)


def test_residual_network_bounds():
    from test_joint import ResidualNet

    torch.manual_seed(0)
    model = ResidualNet(nn.GELU).double().eval()
    x = torch.rand(1, 1, 6, 6, dtype=D)
    fb = network_frame_bounds(model, x, layer="head", device="cpu")
    eig = dense_eig(model, x[0])
    assert math.isclose(float(fb.A[0]), float(eig[0]), rel_tol=1e-7)
    assert math.isclose(float(fb.B[0]), float(eig[-1]), rel_tol=1e-9)


def test_fewer_outputs_than_inputs_gives_zero_and_no_uniqueness():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), CReLU(), nn.Conv2d(16, 2, 3, padding=1), CReLU()
    ).double()  # 2 < 3 channels
    x = torch.rand(1, 3, 5, 5, dtype=D)
    fb = network_frame_bounds(model, x, layer="3", device="cpu")
    assert float(fb.A[0]) == 0.0 and "by counting" in fb.method[0]
    assert fb.rank_bound[0] == 50 < fb.input_dim == 75
    eig = dense_eig(model[:3], x[0])
    assert float(eig[0]) < 1e-12 * float(eig[-1])  # dense agrees: a kernel
    f = features(model, x, layer="3")
    capped = reconstruct_joint(model, f, device="cpu")  # default: 5 steps, said at once
    assert "not injective" in capped.note and len(capped.history) == 5
    assert list(capped.status) == ["not injective"] and not capped.certificate[0].unique
    asked = JointSettings(max_steps=50)  # asked for: a fit
    rec = reconstruct_joint(model, f, joint=asked, device="cpu")
    row = rec.certificate[0]
    assert row.converged and row.A == 0.0 and not row.unique and "not injective" in row.note


def test_recorded_switches_bounds():
    from test_joint import pooled_model

    model = pooled_model()
    x = torch.rand(1, 1, 8, 8, dtype=D)
    rec_fb = network_frame_bounds(model, x, layer="4", device="cpu")
    own_fb = network_frame_bounds(model, x, layer="4", pooling="model", device="cpu")
    eig = dense_eig(model[:4], x[0])  # at x the network's own max is the recorded one
    for fb in (rec_fb, own_fb):
        assert math.isclose(float(fb.A[0]), float(eig[0]), rel_tol=1e-7)


def test_unique_threshold_is_a_thousand_times_the_float64_noise():
    eps = torch.finfo(D).eps
    assert unique_threshold(3072) == pytest.approx(1000 * 3072 * eps)


def test_network_frame_bounds_bad_input():
    with pytest.raises(ValueError, match="unknown layer 'x'; valid layers: 0, 1, 2, 3"):
        network_frame_bounds(crelu_net(), torch.rand(1, 2, 5, 5, dtype=D), layer="x")
    with pytest.raises(ValueError, match="dtype"):
        network_frame_bounds(crelu_net(), torch.rand(1, 2, 5, 5, dtype=D), layer="3",
                             dtype=torch.float16)  # fmt: skip
