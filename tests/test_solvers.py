"""least_squares / fft_least_squares against numpy's dense minimum-norm solutions."""

import warnings

import numpy as np
import pytest
import torch

from invert.linalg.operators import ConvOperator
from invert.linalg.solvers import (
    ConvergenceError,
    ConvergenceWarning,
    bounded_least_squares,
    fft_least_squares,
    least_squares,
)

CASES = [
    # cout, cin, kernel, size, stride, padding, dilation, groups
    (4, 3, 3, 7, 1, 1, 1, 1),  # overcomplete, frame-like
    (2, 3, 3, 6, 1, 1, 1, 1),  # undercomplete: rank deficient
    (5, 2, 3, 8, 2, 0, 1, 1),  # stride, no padding: uncovered border
    (6, 4, 2, 7, 1, 2, 2, 2),  # dilation and groups
    (3, 2, (1, 3), (5, 6), (1, 2), (0, 1), 1, 1),  # rectangular everything
]


def make_op(case, mode="zeros", seed=0):
    cout, cin, k, size, stride, pad, dil, groups = case
    k = (k, k) if isinstance(k, int) else k
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, *k, generator=g, dtype=torch.float64)
    if mode == "circular":
        size = tuple(2 * s * 2 for s in ((stride, stride) if isinstance(stride, int) else stride))
        size = (max(size[0], 6), max(size[1], 6))
    return ConvOperator(
        w, size, stride=stride, padding=pad, dilation=dil, groups=groups, padding_mode=mode
    )


def dense_min_norm(op, target, mask=None):
    """Minimum-norm least squares on the (selected rows of the) dense matrix, per sample."""
    a = op.dense().numpy()
    out = []
    for i, t in enumerate(target.reshape(target.shape[0], -1).numpy()):
        rows = np.ones(len(t), bool) if mask is None else mask[i].reshape(-1).numpy()
        out.append(np.linalg.lstsq(a[rows], t[rows], rcond=None)[0])
    return np.stack(out)


@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("case", CASES)
def test_cgls_matches_dense_lstsq(case, mode):
    op = make_op(case, mode)
    target = torch.randn(2, *op.out_shape, dtype=torch.float64)  # inconsistent in general
    x, info = least_squares(op, target, max_iter=3000)
    ref = dense_min_norm(op, target)
    assert info.all_converged and info.method == "cgls"
    assert np.allclose(x.reshape(2, -1).numpy(), ref, atol=1e-8 * np.abs(ref).max())
    assert info.unknowns == np.prod(op.in_shape)
    assert info.equations.tolist() == [np.prod(op.out_shape)] * 2


@pytest.mark.parametrize("case", CASES)
def test_masked_rows_match_dense_selected_rows(case):
    op = make_op(case, seed=1)
    g = torch.Generator().manual_seed(2)
    target = torch.randn(3, *op.out_shape, dtype=torch.float64, generator=g)
    mask = torch.rand(3, *op.out_shape, generator=g) < 0.6  # a different mask per sample
    mask[2] = False  # no equation at all: the minimum-norm solution is 0
    x, info = least_squares(op, target, mask=mask, max_iter=3000)
    ref = dense_min_norm(op, target, mask)
    assert np.allclose(x.reshape(3, -1).numpy(), ref, atol=1e-8 * max(np.abs(ref).max(), 1))
    assert info.equations.tolist() == mask.flatten(1).sum(1).tolist()
    assert info.all_converged


def test_shared_mask_broadcasts_over_the_batch():
    op = make_op(CASES[0])
    target = torch.randn(2, *op.out_shape, dtype=torch.float64)
    mask = torch.rand(op.out_shape) < 0.5
    x, _ = least_squares(op, target, mask=mask)
    ref = dense_min_norm(op, target, mask.expand(2, *op.out_shape))
    assert np.allclose(x.reshape(2, -1).numpy(), ref, atol=1e-8)


@pytest.mark.parametrize(
    "case",
    [
        (4, 3, 3, None, 1, 1, 1, 1),
        (2, 3, 3, None, 1, 1, 1, 1),  # rank deficient
        (8, 2, 3, None, 2, 1, 1, 1),  # polyphase blocks
        (6, 4, 3, None, (1, 2), (1, 2), (1, 2), 2),
    ],
)
def test_fft_matches_dense_pinv_and_cgls(case):
    op = make_op(case, "circular")
    target = torch.randn(2, *op.out_shape, dtype=torch.float64)
    a = op.dense().numpy()
    ref = (np.linalg.pinv(a) @ target.reshape(2, -1).numpy().T).T
    x_fft, info = fft_least_squares(op, target, rows_per_chunk=1)
    assert np.allclose(x_fft.reshape(2, -1).numpy(), ref, atol=1e-10 * np.abs(ref).max())
    assert info.rank == np.linalg.matrix_rank(a) and info.method == "fft"
    x_cg, _ = least_squares(op, target, max_iter=3000)
    assert torch.allclose(x_cg, x_fft, atol=1e-8 * float(x_fft.abs().max()))


def test_fft_rcond_truncates_like_numpy_pinv():
    op = make_op((3, 2, 3, None, 1, 1, 1, 1), "circular")
    target = torch.randn(1, *op.out_shape, dtype=torch.float64)
    a = op.dense().numpy()
    sv = np.linalg.svd(a, compute_uv=False)
    # cut near the middle, at a gap (singular values of w and -w come in equal pairs)
    gaps = [i for i in range(len(sv) // 3, len(sv) - 1) if sv[i] > sv[i + 1] * (1 + 1e-6)]
    rcond = float(np.sqrt(sv[gaps[0]] * sv[gaps[0] + 1])) / sv[0]
    x, info = fft_least_squares(op, target, rcond=rcond, tol=1.0)
    ref = np.linalg.pinv(a, rcond=rcond) @ target.reshape(-1).numpy()
    assert np.allclose(x.reshape(-1).numpy(), ref, atol=1e-10)
    assert info.rank == int((sv > rcond * sv[0]).sum())


def test_exact_recovery_for_a_frame_and_projection_otherwise():
    op = make_op((12, 3, 3, 6, 1, 1, 1, 1), seed=3)
    a = op.dense().numpy()
    assert np.linalg.svd(a, compute_uv=False).min() > 1e-3  # a frame: injective
    x = torch.randn(2, *op.in_shape, dtype=torch.float64)
    x_rec, info = least_squares(op, op.apply(x))
    assert float((x_rec - x).norm() / x.norm()) < 1e-9
    assert float(info.data_residual.max()) < 1e-9
    # not a frame: the solve returns the projection onto range(T^T) = pinv(A) A x
    op2 = make_op((2, 3, 3, 6, 1, 1, 1, 1), seed=3)
    a2 = op2.dense().numpy()
    x_rec2, _ = least_squares(op2, op2.apply(x))
    proj = (np.linalg.pinv(a2) @ a2 @ x.reshape(2, -1).numpy().T).T
    assert np.allclose(x_rec2.reshape(2, -1).numpy(), proj, atol=1e-8)


def test_x0_gives_the_solution_closest_to_it():
    op = make_op(CASES[1])
    a = op.dense().numpy()
    target = torch.randn(1, *op.out_shape, dtype=torch.float64)
    x0 = torch.randn(1, *op.in_shape, dtype=torch.float64)
    x, _ = least_squares(op, target, x0=x0, max_iter=3000)
    b, v = target.reshape(-1).numpy(), x0.reshape(-1).numpy()
    ref = v + np.linalg.lstsq(a, b - a @ v, rcond=None)[0]
    assert np.allclose(x.reshape(-1).numpy(), ref, atol=1e-8)


def test_float32_and_zero_target():
    op = make_op(CASES[0]).to(torch.float32)
    x = torch.randn(2, *op.in_shape)
    x_rec, info = least_squares(op, op.apply(x))
    assert x_rec.dtype == torch.float32 and info.tol == 1e-5
    assert float((x_rec - x).norm() / x.norm()) < 1e-3
    zero, info0 = least_squares(op, torch.zeros(1, *op.out_shape))
    assert torch.equal(zero, torch.zeros_like(zero)) and info0.all_converged
    assert int(info0.iterations[0]) == 0


def test_generic_linear_operator_duck_typing():
    class Dense:  # any apply/adjoint pair works, e.g. a Jacobian
        def __init__(self, m):
            self.m, self.in_shape, self.out_shape = m, (m.shape[1],), (m.shape[0],)

        def apply(self, x):
            return x @ self.m.T

        def adjoint(self, y):
            return y @ self.m

    m = torch.randn(5, 8, dtype=torch.float64)
    target = torch.randn(2, 5, dtype=torch.float64)
    x, _ = least_squares(Dense(m), target)
    ref = np.linalg.pinv(m.numpy()) @ target.numpy().T
    assert np.allclose(x.numpy(), ref.T, atol=1e-10)


def test_non_convergence_is_reported_not_hidden():
    op = make_op((12, 3, 3, 6, 1, 1, 1, 1))
    target = torch.randn(2, *op.out_shape, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match=r"residual reached \d"):
        _, info = least_squares(op, target, max_iter=2)
    assert not info.converged.any() and info.iterations.tolist() == [2, 2]
    assert (info.residual > info.tol).all()
    with pytest.raises(ConvergenceError, match="did not reach") as raised:
        least_squares(op, target, max_iter=2, strict=True)
    assert raised.value.info.residual.shape == (2,)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(target=torch.full((1, 4, 7, 7), float("nan"), dtype=torch.float64)),
         ValueError, "NaN"),
        (dict(target=torch.zeros(1, 3, 7, 7, dtype=torch.float64)), ValueError, "shape"),
        (dict(target=torch.zeros(1, 4, 7, 7, dtype=torch.int64)), TypeError, "floating"),
        (dict(mask=torch.ones(4, 7, 7)), TypeError, "bool"),
        (dict(mask=torch.ones(4, 6, 7, dtype=torch.bool)), ValueError, "mask"),
        (dict(tol=0.0), ValueError, "tol"),
        (dict(max_iter=-1), ValueError, "max_iter"),
    ],
)  # fmt: skip
def test_bad_input(kwargs, error, message):
    op = make_op(CASES[0])
    args = dict(target=torch.zeros(1, *op.out_shape, dtype=torch.float64))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        least_squares(op, args.pop("target"), **args)


def test_fft_refuses_zero_padding():
    op = make_op(CASES[0])
    with pytest.raises(ValueError, match="circular"):
        fft_least_squares(op, torch.zeros(1, *op.out_shape, dtype=torch.float64))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    op = make_op(CASES[0], "circular")
    target = torch.randn(2, *op.out_shape, dtype=torch.float64)
    x_cpu, _ = least_squares(op, target)
    x_gpu, _ = least_squares(op, target.cuda())
    x_fft, _ = fft_least_squares(op, target.cuda())
    assert x_gpu.is_cuda and torch.allclose(x_gpu.cpu(), x_cpu, atol=1e-9)
    assert torch.allclose(x_fft.cpu(), x_cpu, atol=1e-9)


# --- bounds ---------------------------------------------------------------------------------


def lsi_reference(e, f, g, h):
    """min ||E x - f|| s.t. G x >= h for full-column-rank E: Lawson & Hanson's reduction
    LSI -> LDP -> NNLS (Solving Least Squares Problems, ch. 23), with scipy's NNLS."""
    from scipy.optimize import nnls

    u, s, vt = np.linalg.svd(e, full_matrices=False)
    assert s.min() > 1e-8 * s.max(), "the reference needs E of full column rank"
    # x = V S^-1 (y + U^T f): minimise ||y|| s.t. (G V S^-1) y >= h - G V S^-1 U^T f
    k = g @ vt.T / s
    hk = h - k @ (u.T @ f)
    m = np.vstack([k.T, hk[None, :]])  # LDP -> NNLS
    rhs = np.zeros(m.shape[0])
    rhs[-1] = 1
    w, _ = nnls(m, rhs, maxiter=50 * m.shape[1])
    r = m @ w - rhs
    assert abs(r[-1]) > 1e-12, "infeasible"
    y = -r[:-1] / r[-1]
    return vt.T @ ((y + u.T @ f) / s)


@pytest.mark.parametrize("consistent", [True, False])
def test_bounded_matches_lawson_hanson_nnls(consistent):
    """ReLU-type problem: equations on the active outputs, z <= 0 on the inactive ones."""
    op = make_op((10, 2, 3, 5, 1, 1, 1, 1), seed=4)
    a = op.dense().numpy()
    x = torch.randn(2, *op.in_shape, dtype=torch.float64)
    z = op.apply(x)
    active = z > 0
    target = z if consistent else z + 0.3 * torch.randn_like(z)
    upper = torch.where(active, torch.inf, 0.0)
    x_rec, info = bounded_least_squares(op, target, mask=active, upper=upper)
    assert info.all_converged and info.method == "alm-newton"
    for s in range(2):
        rows = active[s].reshape(-1).numpy()
        ref = lsi_reference(a[rows], target[s].reshape(-1).numpy()[rows], -a[~rows],
                            np.zeros((~rows).sum()))  # fmt: skip
        assert np.allclose(x_rec[s].reshape(-1).numpy(), ref, atol=1e-5 * np.abs(ref).max())
        if consistent:
            assert np.allclose(ref, x[s].reshape(-1).numpy(), atol=1e-8)
    assert float(info.violation.max()) <= 1e-6


def test_bounded_gives_the_minimum_norm_solution_when_no_bound_binds():
    """Underdetermined equations plus slack bounds: exactly pinv(A_eq) t_eq."""
    op = make_op((3, 2, 3, 5, 1, 1, 1, 1), seed=6)  # 3 filters on 2 channels
    a = op.dense().numpy()
    target = torch.randn(1, *op.out_shape, dtype=torch.float64)
    rows = torch.rand(op.out_shape) < 0.4  # fewer equations than unknowns
    upper = torch.where(rows, torch.inf, 1e3)[None]  # never reached
    x_rec, info = bounded_least_squares(op, target, mask=rows[None], upper=upper)
    eq = rows.reshape(-1).numpy()
    assert eq.sum() < a.shape[1]
    ref = np.linalg.pinv(a[eq]) @ target.reshape(-1).numpy()[eq]
    assert info.all_converged
    assert np.allclose(x_rec.reshape(-1).numpy(), ref, atol=1e-8 * np.abs(ref).max())


def test_bounded_two_sided_and_without_bounds():
    op = make_op((10, 2, 3, 5, 1, 1, 1, 1), seed=5)
    a = op.dense().numpy()
    target = torch.randn(1, *op.out_shape, dtype=torch.float64)
    # no bounds: the ordinary least-squares solution
    x_free, _ = bounded_least_squares(op, target)
    ref = np.linalg.lstsq(a, target.reshape(-1).numpy(), rcond=None)[0]
    assert np.allclose(x_free.reshape(-1).numpy(), ref, atol=1e-8)
    # a box on every output (infinite entries mean no bound)
    lower = torch.full_like(target, -0.5)
    upper = torch.full_like(target, 0.5)
    upper[0, 0] = torch.inf
    x_box, info = bounded_least_squares(op, target, lower=lower, upper=upper)
    b = upper.reshape(-1).numpy()
    fin = np.isfinite(b)
    g = np.vstack([a, -a[fin]])
    h = np.concatenate([lower.reshape(-1).numpy(), -b[fin]])
    ref = lsi_reference(a, target.reshape(-1).numpy(), g, h)
    assert np.allclose(x_box.reshape(-1).numpy(), ref, atol=1e-5 * np.abs(ref).max())
    assert info.all_converged


def test_bounded_bad_input():
    op = make_op(CASES[0])
    target = torch.zeros(1, *op.out_shape, dtype=torch.float64)
    with pytest.raises(ValueError, match="infeasible"):
        bounded_least_squares(op, target, lower=target + 1, upper=target)
    with pytest.raises(ValueError, match="shape"):
        bounded_least_squares(op, target, upper=torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        bounded_least_squares(op, target, upper=target * float("nan"))


@pytest.mark.parametrize("max_iter, x0", [(1000, False), (3, False), (1000, True), (0, True)])
def test_reported_residuals_are_those_of_the_returned_solution(max_iter, x0):
    # info's residuals are reused from the solver's own verification where it has one;
    # against the dense matrix they must be those of the x returned, sample by sample
    op = make_op(CASES[1])  # rank deficient: a residual remains at the solution
    m = op.dense().reshape(-1, int(np.prod(op.in_shape)))
    g = torch.Generator().manual_seed(4)
    target = torch.randn(3, *op.out_shape, generator=g, dtype=torch.float64)
    target[2] = 0  # a sample that may be done before the first iteration
    start = torch.randn(3, *op.in_shape, generator=g, dtype=torch.float64) if x0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        x, info = least_squares(op, target, max_iter=max_iter, x0=start)
    b = target.flatten(1)
    r = b - x.flatten(1) @ m.T

    def norms(t):  # a zero reference counts as 1, as documented for the relative residual
        n = torch.linalg.vector_norm(t, dim=1)
        return n, torch.where(n > 0, n, torch.ones_like(n))

    normal = norms(r @ m)[0] / norms(b @ m)[1]
    data = norms(r)[0] / norms(b)[1]
    assert torch.allclose(info.residual, normal, rtol=1e-6, atol=1e-13), (info.residual, normal)
    assert torch.allclose(info.data_residual, data, rtol=1e-9, atol=1e-15)
    assert bool(info.converged[0]) == (max_iter > 10)


def test_residual_tol_stops_a_consistent_system_once_its_data_residual_is_met():
    # LSQR's btol: a consistent system (t = T x_true) may stop on its data residual; the
    # residual of the x returned, from the dense matrix, must meet what was asked, and a
    # sample whose normal-equation tolerance is met first is not held back
    op = make_op(CASES[0])
    m = op.dense().reshape(-1, int(np.prod(op.in_shape)))
    g = torch.Generator().manual_seed(5)
    truth = torch.randn(2, *op.in_shape, generator=g, dtype=torch.float64)
    target = op.apply(truth)
    asked = torch.tensor([1e-3, 1e-30], dtype=torch.float64)
    x, info = least_squares(op, target, tol=1e-12, residual_tol=asked)
    _, full = least_squares(op, target, tol=1e-12)
    b = target.flatten(1)
    data = torch.linalg.vector_norm(b - x.flatten(1) @ m.T, dim=1) / torch.linalg.vector_norm(
        b, dim=1
    )
    assert float(data[0]) <= 1e-3 and float(data[0]) > 1e-12  # stopped on the data residual
    assert torch.allclose(info.data_residual, data, rtol=1e-9, atol=1e-15)
    assert bool(info.converged.all())
    assert int(info.iterations[0]) < int(full.iterations[0])
    assert int(info.iterations[1]) == int(full.iterations[1])  # 1e-30: the normal tol decides
    with pytest.raises(ValueError, match="residual_tol must be positive"):
        least_squares(op, target, residual_tol=0.0)
