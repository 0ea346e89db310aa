"""Max-pooling switches as equations, against numpy loops over the windows and dense lstsq."""

import numpy as np
import pytest
import torch
from torch import nn

from invert.linalg.operators import ConvOperator
from invert.linalg.solvers import least_squares
from invert.linalg.switches import (
    max_pool_with_switches,
    switch_equations,
    unpool_switches,
    window_bounds,
)
from invert.nn.activations import crelu

POOLS = [
    nn.MaxPool2d(2),
    nn.MaxPool2d(3, stride=2, padding=1),  # overlapping windows, as in ConvPool-CNN-C
    nn.MaxPool2d(2, stride=2, ceil_mode=True),  # VGG, odd input: partial windows
    nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1)),
]


def windows(shape, pool):
    """Every window as a list of in-range (row, col) positions, from the definition."""
    h, w = shape
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (kh, kw), (sh, sw) = pair(pool.kernel_size), pair(pool.stride)
    (ph, pw), (dh, dw) = pair(pool.padding), pair(pool.dilation)
    oh, ow = torch.nn.functional.max_pool2d(
        torch.zeros(1, 1, h, w), pool.kernel_size, pool.stride, pool.padding, pool.dilation,
        ceil_mode=pool.ceil_mode,
    ).shape[2:]  # fmt: skip
    out = {}
    for i in range(oh):
        for j in range(ow):
            cells = [
                (i * sh - ph + a * dh, j * sw - pw + b * dw) for a in range(kh) for b in range(kw)
            ]
            out[i, j] = [(r, c) for r, c in cells if 0 <= r < h and 0 <= c < w]
    return out


def loop_equations(z, pool, activation):
    """Equations on z by brute force: per window, the arg-max (arg-min) of z and its value."""
    n, k, h, w = z.shape
    eqs = {}
    for cells in windows((h, w), pool).values():
        for s in range(n):
            for c in range(k):
                vals = [z[s, c, r, q] for r, q in cells]
                hi, lo = int(np.argmax(vals)), int(np.argmin(vals))
                if vals[hi] > 0 or activation is None:
                    eqs[(s, c, *cells[hi])] = vals[hi]
                if activation == "crelu" and vals[lo] < 0:
                    eqs[(s, c, *cells[lo])] = vals[lo]
    return eqs


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("activation", ["crelu", "relu", None])
def test_switch_equations_match_window_loops(pool, activation):
    z = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    act = {"crelu": crelu, "relu": torch.relu, None: lambda t: t}[activation]
    pooled, idx = max_pool_with_switches(act(z), pool)
    assert torch.equal(pooled, pool(act(z)))
    mask, values = switch_equations(pooled, idx, z.shape[1:], activation=activation)
    ref = loop_equations(z.numpy(), pool, activation)
    got = {tuple(p): float(values[tuple(p)]) for p in mask.nonzero().tolist()}
    assert got.keys() == ref.keys()
    assert all(got[p] == ref[p] for p in ref)  # exact: the values are copies of z


def test_indices_point_into_the_pool_input():
    y = torch.randn(2, 4, 9, 9)
    pooled, idx = max_pool_with_switches(y, POOLS[1])
    assert torch.equal(y.flatten(2).gather(2, idx.flatten(2)), pooled.flatten(2))


def test_duplicates_from_overlapping_windows_are_merged_by_mean():
    pooled = torch.tensor([[[[2.0, 4.0]]]])
    idx = torch.tensor([[[[1, 1]]]])  # two windows sharing their switch
    mask, values = unpool_switches(pooled, idx, (1, 1, 3))
    assert mask.tolist() == [[[[False, True, False]]]] and values[0, 0, 0, 1] == 3.0


@pytest.mark.parametrize("pool", POOLS)
def test_window_bounds_match_loops(pool):
    pooled = torch.randn(2, 2, *pool(torch.zeros(1, 1, 7, 9)).shape[2:])
    bound = window_bounds(pooled, pool, (2, 7, 9))
    ref = np.full((2, 2, 7, 9), np.inf)
    for (i, j), cells in windows((7, 9), pool).items():
        for r, c in cells:
            ref[:, :, r, c] = np.minimum(ref[:, :, r, c], pooled[:, :, i, j].numpy())
    assert np.array_equal(bound.numpy(), ref.astype(np.float32))


@pytest.mark.parametrize("pool", POOLS[:3])
def test_switch_least_squares_matches_dense_selected_rows(pool):
    """conv + CReLU + max-pool: the masked solve equals lstsq on the selected dense rows."""
    g = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(2, 6, 3, padding=1, dtype=torch.float64)
    op = ConvOperator.from_conv(conv, (7, 9))
    x = torch.randn(2, 2, 7, 9, dtype=torch.float64, generator=g)
    z = conv(x).detach()
    pooled, idx = max_pool_with_switches(crelu(z), pool)
    mask, values = switch_equations(pooled, idx, z.shape[1:])
    bias = conv.bias.detach().view(1, -1, 1, 1)
    x_rec, info = least_squares(op, values - bias, mask=mask, max_iter=3000)
    a = op.dense().numpy()
    for s in range(2):
        rows = mask[s].reshape(-1).numpy()
        rhs = (values - bias)[s].reshape(-1).numpy()[rows]
        ref, *_ = np.linalg.lstsq(a[rows], rhs, rcond=None)
        assert np.allclose(x_rec[s].reshape(-1).numpy(), ref, atol=1e-8)
        # the true input satisfies every selected equation
        assert np.allclose(a[rows] @ x[s].reshape(-1).numpy(), rhs, atol=1e-10)
    assert float(info.data_residual.max()) < 1e-8
    assert (info.equations < z[0].numel()).all()  # pooling leaves fewer equations than z


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, i: switch_equations(p, i, (3, 6, 6)), "CReLU of 3"),
        (lambda p, i: switch_equations(p, i, (3, 6, 6), activation="relu"), "pooled channels"),
        (lambda p, i: switch_equations(p, i, (2, 6, 6), activation="tanh"), "activation"),
        (lambda p, i: switch_equations(p, i + 100, (2, 6, 6)), r"\[0, 36\)"),
        (lambda p, i: switch_equations(p * float("nan"), i, (2, 6, 6)), "NaN"),
        (lambda p, i: switch_equations(p, i[:, :, :1], (2, 6, 6)), "same shape"),
        (lambda p, i: switch_equations(p, i, (5, 2, 6, 6)), "batch size"),
    ],
)
def test_bad_input(call, message):
    pooled, idx = max_pool_with_switches(crelu(torch.randn(1, 2, 6, 6)), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match=message):
        call(pooled, idx)


def test_max_pool_with_switches_validates():
    with pytest.raises(TypeError, match="MaxPool2d"):
        max_pool_with_switches(torch.zeros(1, 1, 4, 4), nn.AvgPool2d(2))
    with pytest.raises(ValueError, match="NaN"):
        max_pool_with_switches(torch.full((1, 1, 4, 4), float("inf")), nn.MaxPool2d(2))
