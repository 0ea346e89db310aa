"""Reconstruction: layer-wise (ours vs LSQR), joint inversion, and gradient inversion.

Cases, all in one run (``--case``):

* ``small``: a 3 x 64 x 64 image through a two-layer CReLU stack, conv 3 -> 16 and
  32 -> 40 channels, 3 x 3, zero padding (random init; both layers are frames).
* ``allcnn``: a 3 x 224 x 224 image through All-CNN-B with CReLU at conv1-4
  (``create_model("allcnn_b_crelu1_4")``, random init), reconstructed from conv4.
* ``joint-convpool``: ConvPool-CNN-C CReLU and ReLU (``load_model(...@textures,
  recipe="fast")``), 8 test images of ``textures`` in one batch, from conv2, conv3,
  conv4 (after the first max-pool: switches recorded) and conv6.
* ``joint-allcnn``: the ``allcnn`` model and image from conv2, conv3 and conv4, and from
  conv4 with the TV prior (``prior="tv"``, ``bounds=(0, 1)``): conv3 and conv4 have fewer
  values than the image, so the map is not injective there.

For ``small`` and ``allcnn`` (the layer-wise walk, image: scikit-image's astronaut,
resized; float64 model):

1. **Ours**: ``invert.reconstruction.features`` + ``reconstruct_layerwise`` (CGLS per
   conv layer), wall time and PSNR against the input.
2. **LSQR** (``scipy.sparse.linalg.lsqr``) on the explicit sparse matrix of each conv
   layer, built by index arithmetic (checked against ``ConvOperator.apply``), given
   the same right-hand side as our walk at that layer, and run for the smallest
   iteration count whose relative normal-equation residual ``||A^T r|| / ||A^T b||``
   is at most ours (searched from our CGLS count, then bisected on ``iter_lim``; LSQR
   is deterministic, so the timed run is exactly that many iterations). Ratio = summed
   LSQR solve time / summed CGLS solve time over the layers. Layers whose matrix has
   more than ``--lsqr-max-nnz`` non-zeros are skipped (said so).
3. **Gradient inversion** in the style of Mahendran & Vedaldi (2015): Adam on
   ``sum_i ||f(x_i) - f0_i||^2 / ||f0_i||^2 + lambda * TV(x_i)`` (squared-gradient TV,
   pixels in [0, 1] space, the model's own max-pooling), float32, started from a grey
   image, stopped when it has used the same wall time as ours; per image the iterate
   with the lowest objective is returned; best of ``--lrs``.
4. The **frame lower bound A** of each conv layer: 0 by counting when the layer has
   fewer filters than input dimensions per output position (``C_out < C_in s^2``),
   else ``theory.frames.frame_bounds`` (zero padding: dense eigenvalues for small
   inputs, Lanczos with rtol 1e-8 otherwise).

For the ``joint-*`` cases: layer-wise (``reconstruct_layerwise``), joint
(``reconstruct(strategy="joint")``: its layer-wise start, the Gauss-Newton solve and the
certificate, all timed), and gradient inversion as in 3. but in float64 (the joint
solver's precision: float32 alone caps it near 80-90 dB), given the joint's wall time
(best of ``--lrs`` by median PSNR) and 10x that time (with that learning rate) where the
certificate says unique. PSNR per image.

Goals (layer-wise): >= 10x faster than LSQR; >= 70 dB above gradient inversion at equal
time; >= 100 dB PSNR whenever every layer has A > 0. Goals (joint, float64, 2 cores):
>= 100 dB from conv2 and conv3 of both ConvPool-C models on each image, from conv4 of the
CReLU model on >= 6 of 8; where unique, >= +50 dB above gradient inversion at equal time
and above it at 10x; All-CNN-B conv4 with the TV prior >= gradient inversion at equal
time; conv3 for 8 images <= 30 s and <= 20x the layer-wise time.

Usage::

    python bench/reconstruct.py [--case small allcnn joint-convpool joint-allcnn]
                                [--threads 1] [--record]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path


def _say(lines: list, text: str) -> None:
    lines.append(text)
    print(text, file=sys.stderr, flush=True)  # progress; the section is printed at the end


def _set_threads(threads: int) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


# --- the explicit sparse operator -------------------------------------------------------------


def conv_sparse(op):
    """CSR matrix of a zero-padding ConvOperator, from index arithmetic."""
    import numpy as np
    import scipy.sparse as sp

    w = op.weight.detach().double().cpu().numpy()
    cout, cin_g, kh, kw = w.shape
    (h, wd), (ho, wo) = op.input_size, op.output_size
    (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
    per_group = cout // op.groups
    o = np.arange(cout)[:, None, None, None, None, None]
    c = np.arange(cin_g)[None, :, None, None, None, None]
    qh = np.arange(kh)[None, None, :, None, None, None]
    qw = np.arange(kw)[None, None, None, :, None, None]
    i = np.arange(ho)[None, None, None, None, :, None]
    j = np.arange(wo)[None, None, None, None, None, :]
    rows_in = i * sh + qh * dh - ph
    cols_in = j * sw + qw * dw - pw
    shape = (cout, cin_g, kh, kw, ho, wo)
    valid = np.broadcast_to((rows_in >= 0) & (rows_in < h) & (cols_in >= 0) & (cols_in < wd),
                            shape)  # fmt: skip
    row = np.broadcast_to((o * ho + i) * wo + j, shape)[valid]
    channel = (o // per_group) * cin_g + c
    col = np.broadcast_to((channel * h + rows_in) * wd + cols_in, shape)[valid]
    val = np.broadcast_to(w[:, :, :, :, None, None], shape)[valid]
    n_out, n_in = cout * ho * wo, op.in_channels * h * wd
    return sp.csr_matrix((val, (row, col)), shape=(n_out, n_in))


def conv_nnz(op) -> int:
    """Non-zeros of the sparse matrix, without building it."""
    import numpy as np

    cout, cin_g, kh, kw = op.weight.shape
    count = 0
    for axis, k in ((0, kh), (1, kw)):
        n, m = op.input_size[axis], op.output_size[axis]
        s, p, d = op.stride[axis], op.padding[axis], op.dilation[axis]
        pos = np.arange(m)[:, None] * s + np.arange(k)[None, :] * d - p
        inside = int(((pos >= 0) & (pos < n)).sum())
        count = inside if axis == 0 else count * inside
    return count * cout * cin_g


def lsqr_to_residual(a, b, target: float, start: int):
    """Fewest LSQR iterations reaching ``||A^T r|| / ||A^T b|| <= target``, and that run.

    LSQR and CGLS are the same Krylov method, so the search starts at our CGLS count
    ``start`` and moves in steps of about 5%, then bisects (LSQR is deterministic).
    """
    import numpy as np
    from scipy.sparse.linalg import lsqr

    atb = np.linalg.norm(a.T @ b)

    def run(k):
        begin = time.perf_counter()
        x = lsqr(a, b, atol=0, btol=0, conlim=0, iter_lim=k)[0]
        seconds = time.perf_counter() - begin
        return np.linalg.norm(a.T @ (b - a @ x)) / atb, seconds, x

    hi = max(1, start)
    if run(hi)[0] <= target:
        lo = 0
        while lo < hi - 1:  # walk down until it fails
            step = max(1, hi // 20)
            if run(hi - step)[0] <= target:
                hi -= step
            else:
                lo = hi - step
                break
    else:
        lo = hi
        while run(hi)[0] > target:
            lo, hi = hi, hi + max(1, hi // 20)
            if hi > 200_000:
                raise RuntimeError("LSQR did not reach the residual in 200000 iterations")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(mid)[0] <= target:
            hi = mid
        else:
            lo = mid
    residual, seconds, x = run(hi)
    return hi, residual, seconds, x


# --- gradient inversion (Mahendran & Vedaldi style) -------------------------------------------


def gradient_inversion(model, layer, x_true, seconds, lr, tv, *, dtype=None):
    """Adam on the relative feature misfit + squared-gradient TV; the best iterate per image."""
    import copy

    import torch

    from invert.nn import layer_outputs

    dtype = dtype or torch.float32
    model = copy.deepcopy(model).to(dtype)  # the caller's float64 weights stay as they are
    target = layer_outputs(model, x_true.to(dtype), layer)[layer].detach()
    scale = (target**2).flatten(1).sum(1).clamp(min=1e-30)  # per image
    x = torch.full_like(x_true.to(dtype), 0.5).requires_grad_(True)
    best, best_loss = x.detach().clone(), torch.full_like(scale, math.inf)
    opt = torch.optim.Adam([x], lr=lr)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        opt.zero_grad()
        out = layer_outputs(model, x, layer)[layer]
        dx = x[..., 1:, :] - x[..., :-1, :]
        dy = x[..., :, 1:] - x[..., :, :-1]
        misfit = ((out - target) ** 2).flatten(1).sum(1) / scale
        per_image = misfit + tv * ((dx**2).flatten(1).sum(1) + (dy**2).flatten(1).sum(1))
        with torch.no_grad():  # the iterate just evaluated, kept where it is the best yet
            better = per_image < best_loss
            best[better], best_loss[better] = x[better], per_image[better]
        per_image.sum().backward()
        opt.step()
        steps += 1
    return best.double(), steps, time.perf_counter() - start


# --- one case -------------------------------------------------------------------------------------


def frame_lower_bound(conv, size) -> tuple[float, str]:
    from theory.frames import frame_bounds

    cin_poly = conv.in_channels * conv.stride[0] * conv.stride[1]
    if conv.out_channels < cin_poly:
        return 0.0, f"0 by counting ({conv.out_channels} filters < {cin_poly} inputs/position)"
    fb = frame_bounds(conv, size, padding="zeros", device="cpu")
    return float(fb.A), f"{fb.method}{'' if fb.converged else ', not converged'}"


def run_case(name, model, layer, x, args, lines):
    import numpy as np
    import torch
    from skimage.metrics import peak_signal_noise_ratio

    from invert.linalg.operators import ConvOperator
    from invert.linalg.solvers import least_squares
    from invert.reconstruction import LayerwiseSettings, features
    from invert.reconstruction import reconstruct_layerwise as reconstruct

    def psnr(image):
        with np.errstate(divide="ignore"):
            return peak_signal_noise_ratio(
                x[0].numpy(), image[0].detach().cpu().double().numpy(), data_range=1.0
            )

    # 1. ours, end to end
    start = time.perf_counter()
    f = features(model, x, layer=layer)
    rec = reconstruct(
        model, f, device="cpu", layerwise=LayerwiseSettings(cg_iterations=args.max_iter)
    )
    ours_total = time.perf_counter() - start
    ours_psnr = psnr(rec.image)
    _say(lines, f"- ours (features + reconstruct_layerwise, CGLS, float64): {ours_total:.2f} s, "
                 f"PSNR {ours_psnr:.1f} dB, converged {rec.converged}")  # fmt: skip

    # 2. per conv layer: our solve and LSQR on the same right-hand side, same residual
    modules = dict(model.named_modules())
    convs = [s for s in f.steps if s.operation == "Conv2d"]
    rhs = _walk_rhs(model, f, args)  # the right-hand side our walk gives each conv
    t_ours = t_lsqr = 0.0
    skipped = []
    for step in convs:
        conv = modules[step.name]
        op = ConvOperator.from_conv(conv, step.in_shape[1:]).to(torch.float64)
        b = rhs[step.name]
        solve_start = time.perf_counter()
        x_ours, info = least_squares(op, b, max_iter=args.max_iter)
        t = time.perf_counter() - solve_start
        A, how = frame_lower_bound(conv, step.in_shape[1:])
        row = (f"  - {step.name}: {tuple(step.in_shape)} -> {tuple(step.out_shape)}, A = {A:.3g} "
               f"({how}); CGLS {int(info.iterations[0])} it, {t:.2f} s, residual "
               f"{float(info.residual[0]):.1e}")  # fmt: skip
        nnz = conv_nnz(op)
        if nnz > args.lsqr_max_nnz:
            skipped.append(step.name)
            _say(lines, row + f"; LSQR skipped ({nnz / 1e6:.0f}M non-zeros > "
                               f"{args.lsqr_max_nnz / 1e6:.0f}M)")  # fmt: skip
            continue
        a = conv_sparse(op)
        probe = torch.randn(1, *op.in_shape, dtype=torch.float64)
        assert np.allclose(a @ probe.reshape(-1).numpy(), op.apply(probe).reshape(-1).numpy())
        iters, res, t_l, x_l = lsqr_to_residual(
            a, b.reshape(-1).numpy(), float(info.residual[0]), int(info.iterations[0])
        )
        diff = np.linalg.norm(x_l - x_ours.reshape(-1).numpy()) / np.linalg.norm(x_l)
        t_ours += t
        t_lsqr += t_l
        _say(lines, row + f"; LSQR {iters} it, {t_l:.2f} s, residual {res:.1e}, "
                           f"ratio {t_l / t:.1f}x, solutions differ by {diff:.1e}")  # fmt: skip
    if t_ours:
        _say(lines, f"- LSQR / ours over the compared layers: {t_lsqr:.2f} s / {t_ours:.2f} s "
                     f"= {t_lsqr / t_ours:.1f}x (goal >= 10x)")  # fmt: skip

    # 3. gradient inversion for the same wall time, best learning rate
    best = None
    for lr in args.lrs:
        image, steps, used = gradient_inversion(model, layer, x, ours_total, lr, args.tv)
        value = psnr(image)
        _say(lines, f"  - gradient inversion lr {lr}: {steps} Adam steps in {used:.2f} s, "
                     f"PSNR {value:.1f} dB")  # fmt: skip
        best = value if best is None else max(best, value)
    _say(lines, f"- ours {ours_psnr:.1f} dB vs gradient inversion {best:.1f} dB at equal time: "
                 f"{ours_psnr - best:+.1f} dB (goal >= +70 dB)")  # fmt: skip
    return rec


def _walk_rhs(model, f, args) -> dict:
    """The target ``z - b`` that the walk hands each conv layer (from our reconstruct)."""
    import torch

    from invert.reconstruction import LayerwiseSettings
    from invert.reconstruction import layerwise as R

    captured = {}
    original = R._solve_linear

    def spy(op, bias, step, target, ctx, kind):
        values = target.values if bias is None else target.values - bias
        captured[step.name] = values.detach().clone()
        return original(op, bias, step, target, ctx, kind)

    R._solve_linear = spy
    try:
        R.reconstruct_layerwise(
            model, f, device="cpu", layerwise=LayerwiseSettings(cg_iterations=args.max_iter)
        )
    finally:
        R._solve_linear = original
    return {k: v.to(torch.float64) for k, v in captured.items()}


# --- joint inversion ------------------------------------------------------------------------


def psnr_images(x, image) -> list[float]:
    """PSNR per image (data range 1), inf for a bit-exact image."""
    mse = ((image.detach().cpu().double() - x.cpu().double()) ** 2).flatten(1).mean(1)
    return [math.inf if m == 0 else -10 * math.log10(m) for m in mse.tolist()]


def _stats(values) -> str:
    v = sorted(values)
    return f"{v[0]:.1f} / {v[len(v) // 2]:.1f} / {v[-1]:.1f}"


def _best_adam(model, layer, x, seconds, args, lines):
    import torch

    best = None
    for lr in args.lrs:
        image, steps, used = gradient_inversion(model, layer, x, seconds, lr, args.tv,
                                                dtype=torch.float64)  # fmt: skip
        values = psnr_images(x, image)
        _say(lines, f"  - Adam+TV lr {lr}: {steps} steps in {used:.1f} s, PSNR "
                     f"{_stats(values)} dB (min / median / max)")  # fmt: skip
        if best is None or sorted(values)[len(values) // 2] > sorted(best[1])[len(best[1]) // 2]:
            best = (lr, values)
    return best


def run_joint_case(label, model, layer, x, args, lines, *, prior=None) -> dict:
    """Layer-wise, joint and gradient inversion on one (model, layer) for a batch x."""
    import warnings

    import torch

    from invert.linalg.solvers import ConvergenceWarning
    from invert.reconstruction import (
        JointSettings,
        LayerwiseSettings,
        features,
        reconstruct,
        reconstruct_layerwise,
    )

    f = features(model, x, layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in the table
        start = time.perf_counter()
        lw = reconstruct_layerwise(
            model, f, device="cpu", layerwise=LayerwiseSettings(cg_iterations=args.max_iter)
        )
        t_lw = time.perf_counter() - start
        extra = {}
        if prior:
            extra = dict(
                prior="tv", joint=JointSettings(prior_weight=args.prior_weight), bounds=(0, 1)
            )
        start = time.perf_counter()
        rec = reconstruct(model, f, strategy="joint", device="cpu", **extra)
        t_joint = time.perf_counter() - start
    p_lw, p_joint = psnr_images(x, lw.image), psnr_images(x, rec.image)
    cert = rec.certificate
    unique = [i for i, row in enumerate(cert) if row.unique]
    name = f"{label} {layer}" + (" + TV prior, box [0, 1]" if prior else "")
    _say(lines, f"- {name}: layer-wise {t_lw:.1f} s, PSNR {_stats(p_lw)} dB; joint {t_joint:.1f} s "
                 f"(solve {rec.seconds['solve']:.1f} s incl. its layer-wise start, "
                 f"certificate {rec.seconds['certificate']:.1f} s), "
                 f"{len(rec.history)} Gauss-Newton steps, PSNR {_stats(p_joint)} dB, "
                 f"unique {len(unique)}/{len(cert)}, status {list(rec.status)}")  # fmt: skip
    _say(lines, f"  - joint per image: PSNR {[round(p, 1) for p in p_joint]}, residual "
                 f"{[float(f'{r:.1e}') for r in cert.residual]}, A/B "
                 f"{[float(f'{r:.1e}') for r in cert.ratio]}")  # fmt: skip
    lr, p_adam = _best_adam(model, layer, x, t_joint, args, lines)
    row = dict(case=name, lw=p_lw, joint=p_joint, unique=unique, t_lw=t_lw, t_joint=t_joint,
               solve=rec.seconds["solve"], cert=rec.seconds["certificate"],
               adam=p_adam, adam10=None)  # fmt: skip
    if unique:
        image, steps, used = gradient_inversion(model, layer, x, 10 * t_joint, lr, args.tv,
                                                dtype=torch.float64)  # fmt: skip
        row["adam10"] = psnr_images(x, image)
        _say(lines, f"  - Adam+TV lr {lr}, 10x the time: {steps} steps in {used:.1f} s, PSNR "
                     f"{_stats(row['adam10'])} dB")  # fmt: skip
    return row


def joint_table(rows) -> list[str]:
    head = ("| case | layer-wise dB | joint dB | >= 100 dB | unique | layer-wise s | joint s "
            "(solve + cert.) | joint / layer-wise | Adam+TV = time dB | Adam+TV 10x dB | "
            "min gap on unique (= time / 10x) |")  # fmt: skip
    out = [head, "|" + "---|" * 11]
    for r in rows:
        n = len(r["joint"])
        gaps = "-"
        if r["unique"]:
            g1 = min(r["joint"][i] - r["adam"][i] for i in r["unique"])
            g10 = min(r["joint"][i] - r["adam10"][i] for i in r["unique"])
            gaps = f"{g1:+.1f} / {g10:+.1f}"
        ten = _stats(r["adam10"]) if r["adam10"] else "-"
        good = sum(p >= 100 for p in r["joint"])
        out.append(
            f"| {r['case']} | {_stats(r['lw'])} | {_stats(r['joint'])} | {good}/{n} | "
            f"{len(r['unique'])}/{n} | {r['t_lw']:.1f} | {r['t_joint']:.1f} ({r['solve']:.1f} + "
            f"{r['cert']:.1f}) | {r['t_joint'] / r['t_lw']:.1f}x | {_stats(r['adam'])} | {ten} "
            f"| {gaps} |"
        )
    return out


def _warm_up() -> None:
    """One tiny joint solve first: torch.func's one-time set-up is not any case's time."""
    import warnings

    import torch
    from torch import nn

    from invert.nn.activations import CReLU
    from invert.reconstruction import JointSettings, features, reconstruct

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), CReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 4, 3, padding=1), CReLU()).double()  # fmt: skip
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reconstruct(
            net,
            features(net, x, layer="4"),
            strategy="joint",
            device="cpu",
            joint=JointSettings(max_steps=2),
        )


def _digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def joint_convpool(args, lines) -> list[dict]:
    import torch

    from invert import load_dataset, load_model

    test = load_dataset("textures", split="test")
    x = torch.stack([test[i][0] for i in range(args.images)]).double()
    rows = []
    for name, label in (
        ("convpool_c_crelu", "ConvPool-C CReLU"),
        ("convpool_c", "ConvPool-C ReLU"),
    ):
        model = load_model(f"{name}@textures", recipe="fast", device="cpu").double().eval()
        _say(lines, f"Model {name}@textures, recipe fast, weights sha256 {_digest(model)}; "
                     f"{args.images} test images of textures, 3x32x32")  # fmt: skip
        for layer in args.layers:
            rows.append(run_joint_case(label, model, layer, x, args, lines))
    return rows


def joint_allcnn(args, lines, image) -> list[dict]:
    import torch

    from invert.nn.zoo import create_model

    torch.manual_seed(0)
    model = create_model("allcnn_b_crelu1_4").double().eval()
    _say(lines, "All-CNN-B CReLU conv1-4 (allcnn_b_crelu1_4), random init (torch seed 0), "
                 "identity normalization; the astronaut at 224x224")  # fmt: skip
    x = image(224)
    rows = [run_joint_case("All-CNN-B", model, layer, x, args, lines)
            for layer in ("conv2", "conv3", "conv4")]  # fmt: skip
    rows.append(run_joint_case("All-CNN-B", model, "conv4", x, args, lines, prior="tv"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cases = ["small", "allcnn", "joint-convpool", "joint-allcnn"]
    parser.add_argument("--case", nargs="+", default=cases, choices=cases)
    parser.add_argument("--images", type=int, default=8, help="joint-convpool batch size")
    parser.add_argument("--layers", nargs="+", default=["conv2", "conv3", "conv4", "conv6"])
    parser.add_argument("--prior-weight", type=float, default=3e-4, help="joint TV weight")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-iter", type=int, default=3000)
    parser.add_argument("--lsqr-max-nnz", type=float, default=1.5e8)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument(
        "--tv", type=float, default=1e-6, help="TV weight of the gradient inversion"
    )
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    _set_threads(args.threads)

    import numpy as np
    import skimage.data
    import torch
    from skimage.transform import resize
    from torch import nn

    from figures.common import machine_line
    from invert.nn.activations import CReLU
    from invert.nn.zoo import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    astronaut = skimage.data.astronaut() / 255.0

    def image(size):
        arr = resize(astronaut, (size, size), anti_aliasing=True).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr))[None].double()

    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    command = "python bench/reconstruct.py " + " ".join(sys.argv[1:])
    machine = f"Machine: {machine_line()}, {args.threads} thread(s)"
    title = f"## Reconstruction: layer-wise, joint, LSQR, gradient inversion ({date})"
    lines = [title, "", machine, "", f"Command: `{command}`", ""]
    if "small" in args.case:
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), CReLU(),
                              nn.Conv2d(32, 40, 3, padding=1), CReLU()).double().eval()  # fmt: skip
        _say(lines, "Case small: 3x64x64 astronaut, conv 3->16 + CReLU + conv 32->40 + CReLU, "
                     "3x3, zero padding, random init")  # fmt: skip
        run_case("small", model, "3", image(64), args, lines)
        _say(lines, "")
    if "allcnn" in args.case:
        model = create_model("allcnn_b_crelu1_4").double().eval()
        _say(lines, "Case allcnn: 3x224x224 astronaut, All-CNN-B CReLU conv1-4 (allcnn_b_crelu1_4,"
                     " random init, identity normalization), from conv4")  # fmt: skip
        run_case("allcnn", model, "conv4", image(224), args, lines)
        _say(lines, "")
    rows = []
    if any(case.startswith("joint") for case in args.case):
        _warm_up()
    if "joint-convpool" in args.case:
        _say(lines, "Joint inversion, ConvPool-CNN-C (fast recipe):")
        rows += joint_convpool(args, lines)
        _say(lines, "")
    if "joint-allcnn" in args.case:
        _say(lines, "Joint inversion, All-CNN-B at 224:")
        rows += joint_allcnn(args, lines, image)
        _say(lines, "")
    if rows:
        lines += ["PSNR as min / median / max over the images, in dB.", ""]
        lines += joint_table(rows) + [""]
    text = "\n".join(lines)
    print(text)
    if args.record:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
