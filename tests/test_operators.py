"""ConvOperator against independent references: autograd, nn.Conv2d, numpy loops, dense SVD."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from invert.linalg.operators import ConvOperator


@st.composite
def conv_cases(draw, circular=None):
    groups = draw(st.sampled_from([1, 1, 2]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["zeros", "circular"])) if circular is None else (
        "circular" if circular else "zeros")  # fmt: skip
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    if mode == "circular":
        h, w = sh * draw(st.integers(1, 4)), sw * draw(st.integers(1, 4))
    else:
        h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
        w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=torch.float64)
    op = ConvOperator(weight, (h, w), stride=(sh, sw), padding=(ph, pw), padding_mode=mode,
                      dilation=(dh, dw), groups=groups)  # fmt: skip
    return op, g


def torus_reference(op: ConvOperator, x: np.ndarray) -> np.ndarray:
    """The circular operator straight from its definition, with numpy loops."""
    w = op.weight.numpy()
    (h, wd), (sh, sw), (dh, dw), (ph, pw) = op.input_size, op.stride, op.dilation, op.padding
    cout, cin_g, kh, kw = w.shape
    per = cout // op.groups
    y = np.zeros((x.shape[0], cout, *op.output_size))
    for o in range(cout):
        g = o // per
        for c in range(cin_g):
            for qh in range(kh):
                for qw in range(kw):
                    rows = (sh * np.arange(op.output_size[0]) + dh * qh - ph) % h
                    cols = (sw * np.arange(op.output_size[1]) + dw * qw - pw) % wd
                    y[:, o] += w[o, c, qh, qw] * x[:, g * cin_g + c][:, rows][:, :, cols]
    return y


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_adjoint_identity_and_autograd(case):
    op, g = case
    x = torch.randn(2, *op.in_shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, *op.out_shape, generator=g, dtype=torch.float64)
    lhs = (op.apply(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(lhs, x)  # vjp = T^T y, computed by autograd
    assert torch.allclose(grad, op.adjoint(y), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(conv_cases(circular=False))
def test_zero_padding_matches_nn_conv2d(case):
    op, g = case
    conv = nn.Conv2d(op.in_channels, op.out_channels, op.kernel_size, stride=op.stride,
                     padding=op.padding, dilation=op.dilation, groups=op.groups, bias=False,
                     dtype=torch.float64)  # fmt: skip
    conv.weight.data.copy_(op.weight)
    x = torch.randn(3, *op.in_shape, generator=g, dtype=torch.float64)
    assert torch.allclose(op.apply(x), conv(x), atol=1e-12)
    assert ConvOperator.from_conv(conv, op.input_size).output_size == op.output_size


@settings(max_examples=40, deadline=None)
@given(conv_cases(circular=True))
def test_circular_matches_torus_definition(case):
    op, g = case
    x = torch.randn(2, *op.in_shape, generator=g, dtype=torch.float64)
    assert np.allclose(op.apply(x).numpy(), torus_reference(op, x.numpy()), atol=1e-12)


def test_circular_matches_nn_conv2d_circular():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, padding_mode="circular", dtype=torch.float64)
    op = ConvOperator.from_conv(conv, 16)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(op.apply(x) + conv.bias.view(1, -1, 1, 1), conv(x), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(conv_cases(circular=True))
def test_symbol_diagonalises_the_operator(case):
    op, g = case
    x = torch.randn(2, *op.in_shape, generator=g, dtype=torch.float64)
    y_hat = torch.fft.fft2(op.apply(x))  # (N, Cout, Mh, Mw)
    x_hat = torch.fft.fft2(op.polyphase(x))  # (N, Cin s^2, Mh, Mw)
    k = op.symbol(onesided=False)  # (Mh, Mw, Cout, Cin s^2)
    predicted = torch.einsum("hwoc,nchw->nohw", k, x_hat)
    assert torch.allclose(predicted, y_hat, atol=1e-10)
    half = op.symbol(onesided=True)
    assert torch.allclose(half, k[:, : half.shape[1]])
    rows = [0, op.polyphase_size[0] - 1]
    assert torch.allclose(op.symbol(rows), half[rows])


@settings(max_examples=30, deadline=None)
@given(conv_cases(circular=True))
def test_symbol_singular_values_match_dense_svd(case):
    op, _ = case
    dense_sv = torch.linalg.svdvals(op.dense())
    k = op.symbol(onesided=False)
    sym_sv = torch.linalg.svdvals(k).flatten()
    # the dense matrix has min(rows, cols) singular values; the symbol has that many too
    n = min(dense_sv.numel(), sym_sv.numel())
    a = torch.sort(dense_sv, descending=True).values[:n]
    b = torch.sort(sym_sv, descending=True).values[:n]
    assert torch.allclose(a, b, atol=1e-9)


def test_polyphase_round_trip_and_layout():
    op = ConvOperator(torch.randn(2, 3, 3, 3), (8, 12), stride=(2, 3), padding_mode="circular")
    x = torch.randn(2, 3, 8, 12)
    xp = op.polyphase(x)
    assert xp.shape == (2, 18, 4, 4)
    assert torch.equal(op.unpolyphase(xp), x)
    # channel c*6 + r_h*3 + r_w holds x[c, 2n + r_h, 3m + r_w]
    assert torch.equal(xp[:, 1 * 6 + 1 * 3 + 2], x[:, 1, 1::2, 2::3])


def test_dense_matches_apply_and_split_groups():
    op = ConvOperator(torch.randn(4, 1, 3, 3, dtype=torch.float64), 5, padding=1, groups=2)
    m = op.dense()
    x = torch.randn(1, *op.in_shape, dtype=torch.float64)
    assert torch.allclose(m @ x.flatten(), op.apply(x).flatten())
    parts = op.split_groups()
    assert len(parts) == 2 and all(p.groups == 1 and p.in_channels == 1 for p in parts)
    y0 = parts[0].apply(x[:, :1])
    assert torch.allclose(y0, op.apply(x)[:, :2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weight=torch.randn(3, 3, 3)), "shape"),
        (dict(weight=torch.full((1, 1, 3, 3), float("nan"))), "NaN"),
        (dict(padding_mode="reflect"), "not supported"),
        (dict(input_size=2), "smaller than the kernel"),
        (dict(stride=3, padding_mode="circular", input_size=8), "divisible"),
        (dict(weight=torch.ones(1, 1, 3, 3, dtype=torch.int64)), "floating point"),
    ],
)
def test_bad_input(kwargs, message):
    args = dict(weight=torch.randn(2, 1, 3, 3), input_size=6)
    args.update(kwargs)
    weight, size = args.pop("weight"), args.pop("input_size")
    with pytest.raises((ValueError, TypeError), match=message):
        ConvOperator(weight, size, **args)


def test_wrong_input_shape():
    op = ConvOperator(torch.randn(2, 1, 3, 3), 6)
    with pytest.raises(ValueError, match="must have shape"):
        op.apply(torch.randn(1, 2, 6, 6))
