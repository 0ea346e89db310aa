"""Max-pooling reconstruction metrics against dense numpy computations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invert.display import pooling_rows
from invert.nn.zoo import create_model
from theory import pooling
from theory.frames import frame_bounds
from theory.pooling import pooling_metrics, switch_metrics


def conv_matrix(weight: np.ndarray, size: int, pad: int) -> np.ndarray:
    """Dense matrix of a stride-1 zero-padded conv, written with loops."""
    cout, cin, k, _ = weight.shape
    out = size + 2 * pad - k + 1
    t = np.zeros((cout * out * out, cin * size * size))
    for o in range(cout):
        for i in range(out):
            for j in range(out):
                for c in range(cin):
                    for qh in range(k):
                        for qw in range(k):
                            y, x = i + qh - pad, j + qw - pad
                            if 0 <= y < size and 0 <= x < size:
                                row, col = (o * out + i) * out + j, (c * size + y) * size + x
                                t[row, col] += weight[o, c, qh, qw]
    return t


def reference(weight, bias, x, pool_size, pad):
    """Equations from the pooled CReLU values with loops; metrics with numpy."""
    cout = weight.shape[0]
    z = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                 padding=pad).numpy()  # fmt: skip
    size = z.shape[-1]
    t = conv_matrix(weight, x.shape[-1], pad)
    results = []
    for n in range(x.shape[0]):
        equations = {}
        for c in range(cout):
            for wi in range(0, size - pool_size + 1, pool_size):
                for wj in range(0, size - pool_size + 1, pool_size):
                    window = z[n, c, wi : wi + pool_size, wj : wj + pool_size]
                    hi = np.unravel_index(np.argmax(window), window.shape)
                    lo = np.unravel_index(np.argmin(window), window.shape)
                    if window[hi] > 0:  # positive CReLU half fires at its max
                        equations[(c, wi + hi[0], wj + hi[1])] = window[hi]
                    if window[lo] < 0:  # negative half fires at the min
                        equations[(c, wi + lo[0], wj + lo[1])] = window[lo]
        rows = [(c * size + i) * size + j for (c, i, j) in equations]
        a = t[rows]
        v = np.array([equations[key] - bias[key[0]] for key in equations])
        x_rec = np.linalg.lstsq(a, v, rcond=None)[0]
        eig = np.linalg.eigvalsh(a.T @ a)
        rank = np.linalg.matrix_rank(a)
        results.append(
            dict(
                rel_error=np.linalg.norm(x_rec - x[n].ravel()) / np.linalg.norm(x[n]),
                equations=len(rows),
                rank=rank,
                A=eig[0] if rank == a.shape[1] else 0.0,
                A_nonzero=np.sort(eig)[a.shape[1] - rank],
                B=eig[-1],
            )
        )
    return results


@pytest.mark.parametrize("cout, cin, size, pool_size", [(4, 2, 6, 2), (6, 1, 8, 2), (3, 2, 6, 3)])
def test_switch_metrics_match_dense_selected_rows(cout, cin, size, pool_size):
    rng = np.random.default_rng(cout * 10 + cin)
    weight = rng.standard_normal((cout, cin, 3, 3))
    bias = 0.1 * rng.standard_normal(cout)
    x = rng.standard_normal((3, cin, size, size))
    got = switch_metrics(torch.from_numpy(weight), torch.from_numpy(x),
                         nn.MaxPool2d(pool_size), bias=torch.from_numpy(bias), padding=1,
                         device="cpu")  # fmt: skip
    ref = reference(weight, bias, x, pool_size, 1)
    assert got.input_dim == cin * size * size and got.converged.all()
    for n, r in enumerate(ref):
        assert got.equations[n] == r["equations"]
        assert got.rank[n] == r["rank"]
        assert got.rel_error[n] == pytest.approx(r["rel_error"], abs=1e-7)
        assert got.A_nonzero[n] == pytest.approx(r["A_nonzero"], rel=1e-6)
        assert got.B[n] == pytest.approx(r["B"], rel=1e-10)
        assert got.A[n] == pytest.approx(r["A"], abs=1e-9 * r["B"])


def test_known_answers():
    # delta filter on a positive image, 2x2 pooling: the max pixel of each window is kept
    delta = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    delta[0, 0, 1, 1] = 1
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x + 0.1
    m = switch_metrics(delta, x, nn.MaxPool2d(2), padding=1, device="cpu")
    kept = F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)
    expected = (x - kept).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    np.testing.assert_allclose(m.rel_error, expected.numpy(), atol=1e-10)
    assert m.rank.tolist() == [9, 9, 9] and m.A.tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(m.A_nonzero, 1.0)
    # 1x1 pooling keeps every CReLU value: the whole layer, the frame bounds of T
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64, generator=g)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=g)
    m = switch_metrics(w, x, nn.MaxPool2d(1), padding=1, device="cpu")
    fb = frame_bounds(w, 5, padding=1)
    assert m.rank.tolist() == [50, 50] and m.equations.tolist() == [125, 125]
    np.testing.assert_allclose(m.A, fb.A, rtol=1e-8)
    np.testing.assert_allclose(m.B, fb.B, rtol=1e-10)
    assert m.rel_error.max() < 1e-6


def test_batchnorm_is_folded_into_the_filters():
    model = create_model("vgg_crelu1", width=0.125).eval()
    bn = model.conv1.bn
    g = torch.Generator().manual_seed(2)
    bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
    bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
    bn.bias.data.copy_(torch.randn(bn.num_features, generator=g))
    weight, bias = pooling._folded(model, "conv1", model.conv1.conv)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    expected = model.conv1.bn.double()(model.conv1.conv.double()(x))
    got = F.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_pooling_metrics_on_a_zoo_model():
    torch.manual_seed(0)
    model = create_model("convpool_c_crelu", width=0.05)
    rows = pooling_rows(pooling_metrics(model, n_images=3, image_size=8, seed=1, device="cpu"))
    # the conv layers followed by max-pooling: conv3 (pool1) and conv6 (pool2)
    assert [(r["layer"], r["filters"]) for r in rows] == [
        ("conv3", "learned"), ("conv3", "random"), ("conv6", "learned"), ("conv6", "random")
    ]  # fmt: skip
    assert rows[0]["pool"] == "3x3/2" and rows[0]["input"] == "10x8x8"
    assert rows[2]["input"] == "20x4x4"
    for row in rows:
        assert row["images"] == 3 and 0 <= row["rel_error"] <= 1
        assert 0 <= row["rank"] <= row["input_dim"] and row["rank"] <= row["equations"]
        assert row["A"] == 0.0 or row["rank"] == row["input_dim"]
    # the learned row agrees with switch_metrics on the layer inputs computed here
    from invert.data import natural_images
    from invert.nn import layer_outputs

    images = natural_images(3, size=8, seed=1)
    x = layer_outputs(model.eval(), images, "conv2")["conv2"].double()
    conv = model.conv3.conv
    m = switch_metrics(conv, x, model.pool1, device="cpu")
    assert rows[0]["rel_error"] == pytest.approx(float(m.rel_error.mean()), rel=1e-9)
    assert rows[0]["rank"] == pytest.approx(float(m.rank.mean()))


def test_given_images_and_assumed_pooling():
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3))
    images = torch.rand(2, 1, 6, 6, generator=g)
    rows = pooling_rows(pooling_metrics(model, "2", images=images, pool=2,
                                        random_baseline=False, device="cpu"))  # fmt: skip
    assert len(rows) == 1 and rows[0]["pool"] == "2x2/2 (assumed)" and rows[0]["input"] == "3x6x6"
    with pytest.raises(ValueError, match="followed by max-pooling"):
        pooling_metrics(model, images=images, device="cpu")
    rows = pooling_rows(pooling_metrics(model, "0", images=images, max_dim=10,
                                        random_baseline=False, device="cpu"))  # fmt: skip
    assert rows[0]["rank"] is None and rows[0]["A"] is None and rows[0]["rel_error"] >= 0


def test_bad_input():
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        switch_metrics(w, x * math.nan, nn.MaxPool2d(2), device="cpu")
    with pytest.raises(ValueError, match="channels"):
        switch_metrics(w, torch.randn(1, 2, 6, 6), nn.MaxPool2d(2), device="cpu")
    with pytest.raises(TypeError, match="MaxPool2d"):
        switch_metrics(w, x, nn.AvgPool2d(2), device="cpu")
    with pytest.raises(TypeError, match="nn.Conv2d"):
        switch_metrics(nn.Linear(3, 3), x, nn.MaxPool2d(2), device="cpu")
    with pytest.raises(ValueError, match="bias"):
        switch_metrics(w, x, nn.MaxPool2d(2), bias=torch.zeros(3), device="cpu")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        pooling_metrics(nn.Sequential(nn.Flatten()), device="cpu")
    with pytest.raises(ValueError, match="unknown conv layers"):
        pooling_metrics(create_model("convpool_c", width=0.05), "pool1", device="cpu")
    with pytest.raises(ValueError, match="n_images"):
        pooling_metrics(create_model("convpool_c", width=0.05), n_images=0, device="cpu")
    with pytest.raises(TypeError, match="pool"):
        pooling_metrics(create_model("convpool_c", width=0.05), pool="big", device="cpu")
