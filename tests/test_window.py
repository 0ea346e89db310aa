"""Windowed Gauss-Newton steps against the full map's autograd Jacobian and known answers.

References: ``torch.autograd.functional.jvp``/``vjp`` of the full map's residual (plain
autograd, no crop, no replay), and the true image for a solve that must recover it.
"""

import warnings

import torch
from torch import nn
from torch.autograd.functional import jvp, vjp

from invert import CReLU, features
from invert.linalg.solvers import ConvergenceWarning
from invert.reconstruction import JointSettings
from invert.reconstruction.joint import solve_joint
from invert.reconstruction.layer_map import LayerMap
from invert.reconstruction.window import Windows

D = torch.float64
PATCH = (slice(None), slice(None), slice(40, 52), slice(60, 70))


def local_net(width=16):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), CReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
    ).double().eval()  # fmt: skip


def truth_and_start(size=96, images=1):
    """Images and a start that differs from them in one patch each (elsewhere per image)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(images, 3, size, size, generator=gen, dtype=D)
    x0 = x.clone()
    for i in range(images):
        patch = (i, *PATCH[1:]) if i % 2 == 0 else (i, slice(None), slice(20, 34), slice(8, 20))
        x0[patch] += 0.3 * torch.randn(x0[patch].shape, generator=gen, dtype=D)
    return x, x0


def test_window_products_are_the_full_maps_on_the_inputs_that_feed_the_residual():
    # two images, their residual in different places: one crop size, two corners
    model = local_net()
    x, x0 = truth_and_start(images=2)
    f = features(model, x, layer="4")
    with LayerMap(model, f) as lm, torch.no_grad():
        r = lm.residual(x0, lm.all)
        windows = Windows(lm, lm)  # products in float64: exact comparisons
        lin = windows.linearize(x0, lm.all, r)
        assert lin is not None and windows.reason is None and 0 < windows.area < 0.5
        gen = torch.Generator().manual_seed(2)
        # an input change inside the patches: every row it moves is in the window
        inside = (x0 != x).to(D)
        v = torch.randn(x0.shape, generator=gen, dtype=D) * inside
        _, full = jvp(lambda z: lm.residual(z, lm.all), x0, v)
        assert torch.allclose(lin.jvp(v), full, rtol=0, atol=1e-12 * float(full.abs().max()))
        # J^T u: the full map's on the patch, nothing outside the crop
        u = torch.randn(r.shape, generator=gen, dtype=D)
        _, back = vjp(lambda z: lm.residual(z, lm.all), x0, u)
        mine = lin.vjp(u)
        atol = 1e-12 * float(back.abs().max())
        assert torch.allclose(mine * inside, back * inside, rtol=0, atol=atol)
        assert float(mine[0].abs().sum()) > 0 and float(mine[1].abs().sum()) > 0
        assert float(mine[0, :, :8].abs().max()) == 0 and float(mine[1, :, -8:].abs().max()) == 0
        # one operator: <J v, u> = <v, J^T u> for any v, u
        w = torch.randn(x0.shape, generator=gen, dtype=D)
        assert torch.isclose((lin.jvp(w) * u).sum(), (w * mine).sum(), rtol=1e-10)
        windows.close()


def test_a_solve_with_windowed_steps_recovers_the_image():
    model = local_net()
    x, x0 = truth_and_start()
    f = features(model, x, layer="4")
    with LayerMap(model, f) as lm, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        solve = solve_joint(lm, model, x0=x0, bounds=None, prior=None, tol=1e-10,
                            settings=JointSettings())  # fmt: skip
    assert solve.status == ["converged"]
    assert any(row["window"] < 0.5 for row in solve.history)
    assert float((solve.x - x).abs().max()) < 1e-7


def test_no_window_for_a_map_where_a_feature_sees_the_whole_image():
    class Global(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            z = self.conv(x)
            return torch.relu(z + z.mean((2, 3), keepdim=True))

    torch.manual_seed(0)
    model = Global().double().eval()
    x, x0 = truth_and_start(48)
    f = features(model, x, layer="relu")
    with LayerMap(model, f) as lm, torch.no_grad():
        windows = Windows(lm, lm)
        assert windows.linearize(x0, lm.all, lm.residual(x0, lm.all)) is None
        assert "sees" in windows.reason and windows.area == 1.0


def test_a_model_that_fixes_its_sizes_gets_no_window_and_is_still_solved():
    class Fixed(nn.Module):  # reshapes to the size it was written for: no crop runs
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(32, 24, 3, padding=1)
            self.crelu = CReLU()

        def forward(self, x):
            z = self.crelu(self.conv1(x)).reshape(-1, 32, 96, 96)
            return torch.relu(self.conv2(z))

    torch.manual_seed(0)
    model = Fixed().double().eval()
    x, x0 = truth_and_start()
    f = features(model, x, layer="relu")
    with LayerMap(model, f) as lm:
        with torch.no_grad():
            windows = Windows(lm, lm)
            assert windows.linearize(x0, lm.all, lm.residual(x0, lm.all)) is None
            assert "does not run on a crop" in windows.reason
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            solve = solve_joint(lm, model, x0=x0, bounds=None, prior=None, tol=1e-10,
                                settings=JointSettings())  # fmt: skip
    assert solve.status == ["converged"] and all(row["window"] == 1.0 for row in solve.history)
    assert float((solve.x - x).abs().max()) < 1e-7
