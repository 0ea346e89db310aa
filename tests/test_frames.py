"""Frame bounds against dense eigenvalues, numpy loops and known answers."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from invert.display import frame_bounds_rows
from invert.linalg.operators import ConvOperator
from invert.nn.zoo import create_model
from theory import frames
from theory.frames import (
    FrameBoundsWarning,
    checkpoint_frame_bounds,
    frame_bounds,
    frame_spectrum,
)


def dense_eigenvalues(op: ConvOperator) -> np.ndarray:
    """Every eigenvalue of T^T T from the dense matrix of T (float64).

    LAPACK through torch: it honours the single thread of the test run, where numpy's
    OpenBLAS threads crawl on a shared machine."""
    d = op.dense()
    return torch.linalg.eigvalsh(d.T @ d).numpy()


def same_padding(kernel, dilation):
    return tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))


@st.composite
def layers(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    extent = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    h = sh * draw(st.integers(max(1, -(-extent[0] // sh)), max(1, 8 // sh)))
    w = sw * draw(st.integers(max(1, -(-extent[1] // sw)), max(1, 8 // sw)))
    seed = draw(st.integers(0, 2**16))
    weight = torch.randn(cout, cin // groups, kh, kw, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return weight, (h, w), (sh, sw), (dh, dw), groups, mode


@settings(max_examples=40, deadline=None)
@given(layers())
def test_bounds_and_spectrum_match_dense_eigenvalues(layer):
    weight, size, stride, dilation, groups, mode = layer
    fb = frame_spectrum(weight, size, stride=stride, dilation=dilation, groups=groups,
                        padding=mode)  # fmt: skip
    pad = same_padding(weight.shape[2:], dilation)
    op = ConvOperator(weight, size, stride=stride, dilation=dilation, groups=groups,
                      padding=pad, padding_mode=mode)  # fmt: skip
    ref = dense_eigenvalues(op)
    scale = max(ref[-1], 1e-300)
    assert fb.method == ("fft-svd" if mode == "circular" else "dense")
    assert fb.input_dim == ref.size
    assert fb.spectrum.shape == ref.shape
    np.testing.assert_allclose(fb.spectrum, np.clip(ref, 0, None), rtol=0, atol=1e-10 * scale)
    # without the spectrum: the certified extreme-eigenvalue search (circular)
    fast = frame_bounds(weight, size, stride=stride, dilation=dilation, groups=groups,
                        padding=mode)  # fmt: skip
    assert abs(fast.A - max(ref[0], 0)) <= 1e-10 * scale
    assert abs(fast.B - ref[-1]) <= 1e-10 * scale
    assert 0 <= fast.A <= fast.B


def torus_matrix(weight: np.ndarray, size, stride, dilation, pad) -> np.ndarray:
    """Dense matrix of a circular conv written from its definition with loops."""
    cout, cin, kh, kw = weight.shape
    (h, w), (sh, sw), (dh, dw), (ph, pw) = size, stride, dilation, pad
    oh, ow = h // sh, w // sw
    t = np.zeros((cout * oh * ow, cin * h * w))
    for o in range(cout):
        for i in range(oh):
            for j in range(ow):
                row = (o * oh + i) * ow + j
                for c in range(cin):
                    for qh in range(kh):
                        for qw in range(kw):
                            y = (sh * i + dh * qh - ph) % h
                            x = (sw * j + dw * qw - pw) % w
                            t[row, (c * h + y) * w + x] += weight[o, c, qh, qw]
    return t


def zero_padded_matrix(weight: np.ndarray, size, pad) -> np.ndarray:
    """Dense matrix of a stride-1 zero-padded conv, from its definition."""
    cout, cin, kh, kw = weight.shape
    (h, w), (ph, pw) = size, pad
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    t = np.zeros((cout * oh * ow, cin * h * w))
    for o in range(cout):
        for i in range(oh):
            for j in range(ow):
                for c in range(cin):
                    for qh in range(kh):
                        for qw in range(kw):
                            y, x = i + qh - ph, j + qw - pw
                            if 0 <= y < h and 0 <= x < w:
                                row, col = (o * oh + i) * ow + j, (c * h + y) * w + x
                                t[row, col] += weight[o, c, qh, qw]
    return t


def test_against_matrices_built_with_numpy_loops():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((5, 2, 3, 2))
    t = torus_matrix(weight, (6, 4), (2, 1), (2, 1), (2, 0))
    ref = np.linalg.eigvalsh(t.T @ t)
    fb = frame_spectrum(torch.from_numpy(weight), (6, 4), stride=(2, 1), dilation=(2, 1))
    np.testing.assert_allclose(fb.spectrum, np.clip(ref, 0, None), atol=1e-10 * ref[-1])
    t = zero_padded_matrix(weight, (5, 6), (1, 0))
    ref = np.linalg.eigvalsh(t.T @ t)
    fb = frame_bounds(torch.from_numpy(weight), (5, 6), padding=(1, 0))
    assert fb.method == "dense"
    assert fb.A == pytest.approx(ref[0], abs=1e-10 * ref[-1])
    assert fb.B == pytest.approx(ref[-1], rel=1e-12)


@pytest.mark.parametrize(
    "shape, size, stride, dilation",
    [
        ((48, 40, 3, 3), 5, 1, 1),  # stride 1: Gram matrices from the autocorrelation
        ((40, 40, 3, 3), (5, 6), 1, 2),
        ((70, 36, 2, 2), 5, 1, 1),
        ((150, 36, 3, 3), 4, 2, 1),  # polyphase Gram matrices K^H K, 144 x 144
        ((40, 40, 5, 5), 5, 1, 1),  # few frequencies: K^H K rather than the autocorrelation
    ],
)
def test_certified_search_on_larger_gram_matrices(shape, size, stride, dilation):
    g = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(shape, dtype=torch.float64, generator=g)
    for w in (weight, weight + 2 * weight.mean(dim=(2, 3), keepdim=True)):  # random, low-pass
        fb = frame_bounds(w, size, stride=stride, dilation=dilation)
        op = ConvOperator(w, size, stride=stride, dilation=dilation, padding_mode="circular",
                          padding=same_padding(shape[2:], (dilation, dilation)))  # fmt: skip
        ref = dense_eigenvalues(op)
        assert fb.method == "fft"
        assert fb.B == pytest.approx(ref[-1], rel=1e-12)
        assert fb.A == pytest.approx(ref[0], rel=1e-6, abs=1e-11 * ref[-1])


def test_flat_minimum_and_a_line_of_zeros():
    # a 3x3 kernel with only its centre tap is a 1x1 conv: the same Gram matrix at every
    # frequency, so every frequency sits at the minimum
    g = torch.Generator().manual_seed(0)
    centre = torch.zeros(40, 36, 3, 3, dtype=torch.float64)
    centre[:, :, 1, 1] = torch.randn(40, 36, dtype=torch.float64, generator=g)
    s = np.linalg.svd(centre[:, :, 1, 1].numpy(), compute_uv=False) ** 2
    fb = frame_bounds(centre, 6)
    assert fb.A == pytest.approx(s.min(), rel=1e-9)
    assert fb.B == pytest.approx(s.max(), rel=1e-12)
    # horizontal differences vanish on constant rows: K(w_h, 0) = 0 for every w_h
    diff = torch.randn(40, 36, 1, 1, dtype=torch.float64, generator=g) * torch.tensor(
        [[[[1.0, -1.0]]]], dtype=torch.float64
    )
    fb = frame_bounds(diff, 6)
    assert fb.A <= 1e-12 * fb.B
    assert not fb.is_frame


def test_known_answers():
    delta = torch.zeros(1, 1, 3, 3)
    delta[0, 0, 1, 1] = 1
    for padding in ("circular", "zeros"):
        fb = frame_bounds(delta, 7, padding=padding)
        assert fb.A == pytest.approx(1, abs=1e-14) and fb.B == pytest.approx(1, abs=1e-14)
        assert fb.ratio == pytest.approx(1)
    # the four 2x2 Haar filters with stride 2: an orthonormal basis (tight frame, A = B)
    haar = torch.tensor([[1.0, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]]) / 2
    for channels in (1, 3):  # the same bank on every channel (groups): still orthonormal
        w = haar.reshape(4, 1, 2, 2).repeat(channels, 1, 1, 1)
        fb = frame_spectrum(w, 8, stride=2, groups=channels)
        np.testing.assert_allclose(fb.spectrum, np.ones(channels * 64), atol=1e-12)
    # a tight frame of two scaled copies of an orthonormal bank: A = B = 2
    fb = frame_bounds(torch.cat([haar, haar]).reshape(8, 1, 2, 2), 8, stride=2)
    assert fb.A == pytest.approx(2) and fb.B == pytest.approx(2)
    # a random orthogonal 1x1 conv: unitary symbol
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    fb = frame_bounds(q.reshape(6, 6, 1, 1), 5, padding="zeros")
    assert fb.A == pytest.approx(1) and fb.B == pytest.approx(1)


def test_a_is_zero_when_the_layer_cannot_be_a_frame():
    g = torch.Generator().manual_seed(1)
    # every filter sums to zero: K(0) = 0, constant images are invisible
    w = torch.randn(8, 3, 3, 3, dtype=torch.float64, generator=g)
    w = w - w.mean(dim=(2, 3), keepdim=True)
    fb = frame_bounds(w, 8)
    assert fb.A <= 1e-14 * fb.B and not fb.is_frame and fb.ratio > 1e12
    # more input channels than filters, and stride 2 with fewer filters than C_in s^2
    for weight, stride in ((torch.randn(2, 5, 3, 3, generator=g), 1),
                           (torch.randn(7, 2, 3, 3, generator=g), 2)):  # fmt: skip
        for padding in ("circular", "zeros"):
            fb = frame_bounds(weight, 8, stride=stride, padding=padding)
            assert fb.A == 0.0 and fb.ratio == math.inf and not fb.is_frame
            assert fb.B > 0


@pytest.mark.parametrize("padding", ["circular", "zeros"])
def test_rayleigh_quotients_lie_between_the_bounds(padding):
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, stride=1, padding=1).double()
    fb = frame_bounds(conv, 9, padding=padding)
    op = ConvOperator(conv.weight.detach(), 9, padding=1, padding_mode=padding)
    x = torch.randn(200, 4, 9, 9, dtype=torch.float64, generator=g)
    quotients = op.apply(x).pow(2).sum(dim=(1, 2, 3)) / x.pow(2).sum(dim=(1, 2, 3))
    assert float(quotients.min()) >= fb.A * (1 - 1e-12)
    assert float(quotients.max()) <= fb.B * (1 + 1e-12)


def test_trace_identity_of_the_spectrum():
    # sum of the eigenvalues of T^T T = ||T||_F^2 = ||w||^2 times the output positions
    g = torch.Generator().manual_seed(4)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g)
    fb = frame_spectrum(w, (8, 6), stride=2)
    assert fb.spectrum.sum() == pytest.approx(float(w.pow(2).sum()) * 4 * 3, rel=1e-12)
    assert np.all(np.diff(fb.spectrum) >= 0)


def test_conv_module_sets_stride_dilation_groups_and_padding():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2).double()
    op = ConvOperator(conv.weight.detach(), 10, stride=2, padding=2, dilation=2, groups=2)
    ref = dense_eigenvalues(op)
    fb = frame_bounds(conv, 10, padding="zeros")
    assert fb.B == pytest.approx(ref[-1], rel=1e-12)
    assert fb.A == pytest.approx(max(ref[0], 0), abs=1e-11 * ref[-1])
    explicit = frame_bounds(conv, 10, padding=0)  # an explicit amount overrides the layer's
    ref0 = dense_eigenvalues(ConvOperator(conv.weight.detach(), 10, stride=2, dilation=2,
                                          groups=2))  # fmt: skip
    assert explicit.B == pytest.approx(ref0[-1], rel=1e-12)


def test_lanczos_matches_dense_on_a_medium_layer():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64, generator=g)
    dense = frame_bounds(w, 14, padding="zeros", method="dense")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrameBoundsWarning)
        lanczos = frame_bounds(w, 14, padding="zeros", method="lanczos")
    assert lanczos.method == "lanczos" and lanczos.converged
    assert lanczos.tol < 1e-5 * dense.B
    assert abs(lanczos.B - dense.B) <= lanczos.tol + dense.tol
    assert abs(lanczos.A - dense.A) <= lanczos.tol + dense.tol
    # wide layer: A = 0 without an iterative solve
    wide = frame_bounds(torch.randn(2, 3, 3, 3, generator=g), 14, padding="zeros",
                        method="lanczos")  # fmt: skip
    assert wide.A == 0.0


def test_lanczos_reports_non_convergence():
    g = torch.Generator().manual_seed(6)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=g)
    with pytest.warns(FrameBoundsWarning, match="did not converge"):
        fb = frame_bounds(w, 12, padding="zeros", method="lanczos", rtol=1e-14, max_iter=1)
    assert not fb.converged and math.isnan(fb.A)


def test_auto_switches_to_krylov_above_the_dense_limit(monkeypatch):
    monkeypatch.setattr(frames, "DENSE_MAX_DIM", 100)
    g = torch.Generator().manual_seed(7)
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64, generator=g)
    fb = frame_bounds(w, 8, padding="zeros")
    assert fb.method == "krylov" and fb.converged
    ref = dense_eigenvalues(ConvOperator(w, 8, padding=1))
    assert fb.B == pytest.approx(ref[-1], rel=1e-6)
    assert fb.A == pytest.approx(ref[0], rel=1e-4)
    with pytest.raises(ValueError, match="spectrum"):
        frame_spectrum(w, 8, padding="zeros")


def test_float32_gets_a_wrong_on_an_ill_conditioned_layer():
    # every filter sums to 1e-8: lambda(w=0) = 4e-16 is the lower bound
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=g)
    w = w - w.mean(dim=(2, 3), keepdim=True) + 1e-8 / 9
    d = torus_matrix(w.numpy(), (8, 8), (1, 1), (1, 1), (1, 1))
    exact = np.linalg.svd(d, compute_uv=False).min() ** 2
    a64 = frame_bounds(w, 8).A
    a32 = frame_bounds(w, 8, dtype=torch.float32).A
    assert abs(a64 - exact) / exact < 1e-6
    assert abs(a32 - exact) / exact > 0.5


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((nn.Linear(3, 4), 8), {}, TypeError, "nn.Conv2d"),
        ((nn.Conv1d(3, 4, 3), 8), {}, TypeError, "nn.Conv2d"),
        (("weights", 8), {}, TypeError, "4-D"),
        ((torch.randn(4, 3, 3), 8), {}, ValueError, "shape"),
        ((torch.randn(4, 3, 5, 5), 4), {}, ValueError, "smaller than the kernel"),
        ((torch.randn(4, 3, 5, 5), 3), {"padding": 0}, ValueError, "smaller than the kernel"),
        ((torch.randn(4, 3, 3, 3), 8), {"padding": "reflect"}, ValueError, "not supported"),
        ((torch.full((4, 3, 3, 3), math.nan), 8), {}, ValueError, "NaN"),
        ((torch.randn(4, 3, 3, 3), 9), {"stride": 2}, ValueError, "divisible"),
        ((torch.randn(4, 3, 3, 3), 8), {"dtype": torch.float16}, TypeError, "dtype"),
        ((torch.randn(4, 3, 3, 3), 8), {"padding": "zeros", "method": "fft"}, ValueError, "fft"),
        ((torch.randn(4, 3, 3, 3), 8), {"method": "magic"}, ValueError, "method"),
        ((torch.randn(4, 3, 3, 3), 0), {}, ValueError, "positive"),
        ((torch.randn(4, 3, 3, 3), 8), {"groups": 3}, ValueError, "groups"),
        ((nn.Conv2d(3, 4, 3, stride=2), 8), {"stride": 3}, ValueError, "disagrees"),
        ((torch.zeros(4, 3, 3, 3, dtype=torch.int64), 8), {}, TypeError, "floating"),
    ],
)
def test_bad_input(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        frame_bounds(*args, **kwargs)


# --- checkpoints -------------------------------------------------------------------------


class _Branches(nn.Module):
    """A non-sequential model: two conv branches, stride in one of them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.right = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 3, 1))
        self.head = nn.Linear(7, 2)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(y.mean(dim=(2, 3)))


def test_checkpoint_rows_follow_the_network():
    torch.manual_seed(0)
    model = create_model("convpool_c", width=0.1)
    rows = frame_bounds_rows(checkpoint_frame_bounds(model, 16, seed=3))
    convs = [(name, m) for name, m in model.named_children() if name.startswith("conv")]
    assert [r["layer"] for r in rows] == [name for name, _ in convs]
    # input sizes: 16 (conv1-3), pooled to 8 (conv4-6), to 4 (conv7), 2 after the 3x3 conv7
    assert [r["input"] for r in rows] == ["16x16"] * 3 + ["8x8"] * 3 + ["4x4"] + ["2x2"] * 2
    for row, (_, block) in zip(rows, convs):
        conv = block.conv
        size = int(row["input"].split("x")[0])
        ref = frame_bounds(conv, size)
        assert row["shape"] == "x".join(map(str, conv.weight.shape))
        assert (
            row["frame_A"] == ref.A and row["frame_B"] == ref.B and row["frame_ratio"] == ref.ratio
        )
        assert row["random_B"] > 0 and row["note"] == ""
    assert model.training  # the forward pass left the model as it was
    rows = frame_bounds_rows(
        checkpoint_frame_bounds(model, 16, padding="zeros", layers=["conv1", "conv8"])
    )
    for row, conv, size in zip(rows, (model.conv1.conv, model.conv8.conv), (16, 2)):
        ref = frame_bounds(conv, size, padding="zeros")
        assert ref.method == "dense" and (row["frame_A"], row["frame_B"]) == (ref.A, ref.B)
        assert row["input"] == f"{size}x{size}"


def test_layers_the_boundary_model_cannot_take_get_a_note():
    # circular padding needs the input size divisible by the stride: 9 is not
    rows = frame_bounds_rows(checkpoint_frame_bounds(_Branches(), 9))
    assert rows[0]["note"] == "" and rows[0]["frame_A"] is not None
    assert rows[1]["frame_A"] is None and rows[1]["random_B"] is None
    assert "divisible" in rows[1]["note"]
    rows = frame_bounds_rows(
        checkpoint_frame_bounds(_Branches(), 9, padding="zeros", random_baseline=False),
        random_baseline=False,
    )
    assert all(r["note"] == "" for r in rows) and "random_A" not in rows[0]


def test_random_baseline_keeps_shape_and_filter_norms():
    w = torch.randn(6, 3, 3, 3, dtype=torch.float64)
    w[2] = 0
    r = frames.gaussian_like(w, seed=1)
    assert r.shape == w.shape
    np.testing.assert_allclose(r.reshape(6, -1).norm(dim=1), w.reshape(6, -1).norm(dim=1),
                               rtol=1e-12)  # fmt: skip
    assert not torch.allclose(r, w)
    assert torch.equal(r, frames.gaussian_like(w, seed=1))


def test_any_torch_model_and_the_reference_architectures():
    rows = frame_bounds_rows(
        checkpoint_frame_bounds(_Branches(), 8, random_baseline=False), random_baseline=False
    )
    assert [(r["layer"], r["input"], r["stride"]) for r in rows] == [
        ("stem", "8x8", 1), ("left", "8x8", 2), ("right", "4x4", 1)
    ]  # fmt: skip
    rows = frame_bounds_rows(
        checkpoint_frame_bounds(create_model("alexnet", width=0.05), 64, random_baseline=False),
        random_baseline=False,
    )
    assert [r["layer"] for r in rows] == [f"features.{i}" for i in (0, 3, 6, 8, 10)]
    assert rows[0]["input"] == "64x64" and rows[0]["stride"] == 4
    assert all(r["note"] == "" and 0 <= r["frame_A"] <= r["frame_B"] for r in rows)


def test_checkpoint_bad_input():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        checkpoint_frame_bounds(nn.Sequential(nn.Linear(3, 3)), 8)
    with pytest.raises(TypeError, match="nn.Module"):
        checkpoint_frame_bounds(42, 8)
    with pytest.raises(ValueError, match="unknown conv layers"):
        checkpoint_frame_bounds(create_model("convpool_c", width=0.1), 8, layers=["pool1"])
    with pytest.raises(ValueError, match="padding"):
        checkpoint_frame_bounds(create_model("convpool_c", width=0.1), 8, padding="reflect")
    with pytest.raises(ValueError, match="forward pass"):
        checkpoint_frame_bounds(create_model("convpool_c", width=0.1), 8, in_channels=5)


def test_frequency_blocks_in_threads_give_the_same_bounds(monkeypatch):
    monkeypatch.setattr(frames, "_PARALLEL_FLOPS", 0)
    monkeypatch.setattr(frames, "_CHUNK_BYTES", 1)  # one row of frequencies per block
    g = torch.Generator().manual_seed(8)
    w = torch.randn(40, 40, 3, 3, dtype=torch.float64, generator=g)
    reference = frame_spectrum(w, 12)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fb = frame_bounds(w, 12)
        assert torch.get_num_threads() == 2  # restored after the threaded section
    finally:
        torch.set_num_threads(previous)
    assert fb.B == pytest.approx(reference.B, rel=1e-12)
    assert fb.A == pytest.approx(reference.A, rel=1e-8)


# --- zero padding on large inputs: the Krylov method and exact 1x1 kernels ---------------

KRYLOV_CASES = [
    # weight shape, input, stride, padding, groups
    ((6, 3, 3, 3), 10, 1, 1, 1),  # tall: A > 0
    ((4, 4, 3, 3), 9, 1, 1, 1),  # square: A tiny
    ((8, 3, 3, 3), 12, 2, 1, 1),  # stride 2, wide: A = 0
    ((8, 2, 7, 7), 14, 2, 3, 1),  # the ResNet stem: 7x7, stride 2, padding 3
    ((6, 2, 3, 3), 8, 1, 1, 2),  # groups
    ((3, 2, 3, 3), (9, 7), (2, 1), (1, 0), 1),  # uneven sizes, strides, paddings
]


@pytest.mark.parametrize("shape, size, stride, padding, groups", KRYLOV_CASES)
def test_krylov_matches_dense_eigenvalues(shape, size, stride, padding, groups):
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, dtype=torch.float64, generator=g)
    op = ConvOperator(w, size, stride=stride, padding=padding, groups=groups)
    ref = dense_eigenvalues(op)  # from the dense matrix of T, not T^T T products
    a_ref = max(ref[0], 0.0) if math.prod(op.out_shape) >= math.prod(op.in_shape) else 0.0
    kwargs = dict(stride=stride, padding=padding, groups=groups, method="krylov")
    # float64 products and a budget that fills the space: exact up to rounding
    fb = frame_bounds(w, size, rtol=1e-10, max_iter=2000, **kwargs)
    assert fb.method == "krylov" and fb.converged
    assert fb.tol <= 1e-8 * ref[-1]
    assert abs(fb.B - ref[-1]) <= fb.tol + 1e-12 * ref[-1]
    assert abs(fb.A - a_ref) <= fb.tol + 1e-12 * ref[-1]
    assert fb.B_upper is None or fb.B_upper >= ref[-1] * (1 - 1e-12)
    # float32 products and a small budget: a Ritz value is >= A and <= B (up to the
    # products' rounding, which tol covers), and some eigenvalue lies within tol of it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameBoundsWarning)
        quick = frame_bounds(w, size, rtol=1e-4, max_iter=12, **kwargs)
    assert a_ref - quick.tol <= quick.A and quick.B <= ref[-1] + quick.tol
    near = np.abs(ref[:, None] - np.array([quick.A, quick.B])[None, :]).min(axis=0)
    assert near[1] <= quick.tol and (a_ref == 0 or near[0] <= quick.tol)


def test_the_enclosing_torus_contains_the_zero_padded_operator():
    # T = R T_c P: the zero-padded matrix is a block of the circular one (rows: the
    # outputs of T, columns: the input embedded at the start of the torus)
    g = torch.Generator().manual_seed(11)
    for shape, size, stride, padding in (((3, 2, 3, 3), 7, 1, 1), ((4, 2, 7, 7), 10, 2, 3),
                                         ((2, 2, 3, 2), (6, 5), (2, 1), (2, 0))):  # fmt: skip
        w = torch.randn(shape, dtype=torch.float64, generator=g)
        op = ConvOperator(w, size, stride=stride, padding=padding)
        torus = frames._enclosing_torus(op)
        (h, wd), (mh, mw) = op.input_size, torus.input_size
        (oh, ow), (th, tw) = op.output_size, torus.output_size
        cols = [c * mh * mw + i * mw + j for c in range(shape[1]) for i in range(h)
                for j in range(wd)]  # fmt: skip
        rows = [o * th * tw + i * tw + j for o in range(shape[0]) for i in range(oh)
                for j in range(ow)]  # fmt: skip
        np.testing.assert_array_equal(torus.dense()[rows][:, cols].numpy(), op.dense().numpy())


@pytest.mark.parametrize(
    "shape, size, stride, padding, groups",
    [((5, 3, 1, 1), 6, 1, 0, 1), ((6, 4, 1, 1), 7, 2, 0, 1), ((4, 6, 1, 1), 6, 1, 1, 2),
     ((8, 4, 1, 1), (5, 6), (2, 3), (1, 0), 1), ((7, 3, 1, 1), 6, 2, 1, 1)],
)  # fmt: skip
def test_1x1_kernels_are_exact_at_any_size(monkeypatch, shape, size, stride, padding, groups):
    monkeypatch.setattr(frames, "DENSE_MAX_DIM", 10)
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, dtype=torch.float64, generator=g)
    fb = frame_spectrum(w, size, stride=stride, padding=padding, groups=groups)
    assert fb.method == "1x1"
    ref = dense_eigenvalues(ConvOperator(w, size, stride=stride, padding=padding, groups=groups))
    np.testing.assert_allclose(fb.spectrum, np.clip(ref, 0, None), atol=1e-12 * ref[-1])
    assert fb.B == pytest.approx(ref[-1], rel=1e-12)
    assert fb.A == pytest.approx(max(ref[0], 0), abs=1e-12 * ref[-1])


def test_the_plane_wave_start_is_near_the_top():
    g = torch.Generator().manual_seed(12)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=g)
    op = ConvOperator(w, 24, padding=1)
    torus = frames._enclosing_torus(op)
    top = frames._fft_extremes(torus, need_min=False)
    x = frames._plane_wave(op, torus, top.b_key)
    quotient = float(op.apply(x[None]).pow(2).sum() / x.pow(2).sum())
    b = frame_bounds(w, 24, padding="zeros", method="krylov", rtol=1e-10, max_iter=3000).B
    assert 0.95 * b < quotient <= b * (1 + 1e-12) <= top.b * (1 + 1e-12)


@pytest.mark.slow
def test_checkpoint_zero_padding_of_resnet18_at_64(monkeypatch):
    from invert import create_model

    monkeypatch.setattr(frames, "DENSE_MAX_DIM", 1024)  # 4096-dim dense solves take minutes
    model = create_model("resnet18", num_classes=10)
    rows = frame_bounds_rows(
        checkpoint_frame_bounds(model, 64, padding="zeros", random_baseline=False),
        random_baseline=False,
    )
    assert len(rows) == 20
    by = {row["layer"]: row for row in rows}
    down = by["layer2.0.downsample.0"]  # 1x1 stride 2: exact, A = 0 (odd pixels unseen)
    w = dict(model.named_modules())["layer2.0.downsample.0"].weight.detach().double()
    assert down["method"] == "1x1" and down["frame_A"] == 0.0
    assert down["frame_B"] == pytest.approx(float(torch.linalg.svdvals(w[:, :, 0, 0])[0] ** 2))
    assert by["layer2.0.conv1"]["frame_A"] == 0.0  # stride 2: fewer outputs than inputs
    for row in rows:
        assert row["method"] in ("dense", "krylov", "1x1") and 0 <= row["frame_A"] <= row["frame_B"]
