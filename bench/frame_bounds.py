"""Frame bounds: ours against Sedghi, Gupta & Long (2019) and dense SVDs; VGG-16 at 224.

Prints a Markdown section (append it to bench/RESULTS.md):

1. ``theory.frames.frame_bounds`` (circular padding, float64) against a plain numpy
   implementation of Sedghi, Gupta & Long, "The singular values of convolutional
   layers" (ICLR 2019): ``np.fft.fft2`` of the zero-padded kernel and
   ``np.linalg.svd`` of every per-frequency matrix (stride 1, circular), on weights
   (96, 3, 3, 3) and (192, 192, 3, 3) at 32 x 32: best-of-N wall times, their ratio,
   and the largest relative differences of A and B.
2. The dense SVD of the operator matrix on small cases (circular and zero padding).
3. Zero padding on a VGG-16 layer at 14 x 14: ours ("krylov") against the plain
   Lanczos of the same engine ("lanczos"; SciPy ``eigsh`` before issue 17), in this process.
4. VGG-16 and ResNet-18 (torchvision layout, random init) at 224 x 224, every conv
   layer, zero padding by default (``--padding circular``: the FFT), each in a fresh
   process: wall time and peak RSS.

Usage: ``python bench/frame_bounds.py [--threads 2] [--vgg-threads N] [--repeats 3]
[--skip-vgg] [--skip-small] [--models vgg16,resnet18] [--padding zeros]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _set_threads(threads: int) -> None:
    # before numpy / torch start their thread pools
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def sedghi_bounds(weight_oihw, n: int) -> tuple[float, float]:
    """Sedghi, Gupta & Long (2019): all singular values by FFT + per-frequency SVD.

    Their code takes the kernel as (k, k, c_in, c_out): ``transforms =
    np.fft.fft2(kernel, input_shape, axes=[0, 1])``, then
    ``np.linalg.svd(transforms, compute_uv=False)``.
    """
    import numpy as np

    kernel = np.transpose(weight_oihw, (2, 3, 1, 0))
    transforms = np.fft.fft2(kernel, (n, n), axes=[0, 1])
    singular = np.linalg.svd(transforms, compute_uv=False)
    return float(singular.min() ** 2), float(singular.max() ** 2)


def _best(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a)


def compare_with_sedghi(repeats: int) -> list[str]:
    import torch
    from torch import nn

    from theory.frames import frame_bounds

    lines = [
        "| weight | input | ours (s) | Sedghi et al. numpy (s) | speed-up | max rel. diff A "
        "| max rel. diff B | A | B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in ((96, 3, 3, 3), (192, 192, 3, 3)):
        torch.manual_seed(0)
        conv = nn.Conv2d(shape[1], shape[0], shape[2], padding=1).double()  # default init
        weight = conv.weight.detach()
        t_ours, ours = _best(lambda w=weight: frame_bounds(w, 32, device="cpu"), repeats)
        t_ref, (a_ref, b_ref) = _best(lambda w=weight: sedghi_bounds(w.numpy(), 32), repeats)
        lines.append(
            f"| {'x'.join(map(str, shape))} | 32x32 | {t_ours:.3f} | {t_ref:.3f} | "
            f"{t_ref / t_ours:.1f}x | {_rel(ours.A, a_ref):.1e} | {_rel(ours.B, b_ref):.1e} | "
            f"{ours.A:.6e} | {ours.B:.6e} |"
        )
    return lines


def compare_with_dense_svd() -> list[str]:
    import numpy as np
    import torch

    from invert.linalg.operators import ConvOperator
    from theory.frames import frame_bounds, frame_spectrum

    lines = [
        "| case | method | A | dense SVD A | rel. diff A | B | dense SVD B | rel. diff B |",
        "|---|---|---|---|---|---|---|---|",
    ]
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(16, 8, 3, 3, dtype=torch.float64, generator=g)
    for padding, size, methods in (
        ("circular", 8, ("fft", "fft-svd")),
        ("zeros", 8, ("dense", "lanczos")),
        ("circular", (12, 10), ("fft",)),
    ):
        mode = "circular" if padding == "circular" else "zeros"
        op = ConvOperator(weight, size, padding=1, padding_mode=mode)
        s = np.linalg.svd(op.dense().numpy(), compute_uv=False)
        a_ref = float(s.min() ** 2) if op.dense().shape[0] >= op.dense().shape[1] else 0.0
        b_ref = float(s.max() ** 2)
        for method in methods:
            if method == "fft-svd":  # the whole spectrum
                fb = frame_spectrum(weight, size, padding=padding, device="cpu", method="fft")
            else:
                fb = frame_bounds(weight, size, padding=padding, device="cpu", method=method)
            lines.append(
                f"| 16x8x3x3, {padding}, {size} | {fb.method} | {fb.A:.10e} | {a_ref:.10e} | "
                f"{_rel(fb.A, a_ref):.1e} | {fb.B:.10e} | {b_ref:.10e} | {_rel(fb.B, b_ref):.1e} |"
            )
    return lines


def model_worker(name: str, padding: str) -> None:
    """Every conv layer of one model at 224 (runs in its own process: peak RSS is its own)."""
    import torch

    from invert.display import frame_bounds_rows
    from invert.nn.zoo import create_model
    from theory.frames import checkpoint_frame_bounds

    torch.manual_seed(0)
    model = create_model(name, num_classes=1000)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    layers = checkpoint_frame_bounds(model, 224, padding=padding, random_baseline=False,
                                     device="cpu")  # fmt: skip
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    result = {
        "wall": wall,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "layers": frame_bounds_rows(layers, random_baseline=False),
    }
    print(json.dumps(result))


def run_model(name: str, padding: str, threads: int) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--padding",
               padding, "--threads", str(threads)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        return [f"{name} run failed: {done.stderr.strip().splitlines()[-1]}"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [
        f"{name} (torchvision layout, random init), 224x224, {padding} padding, all "
        f"{len(result['layers'])} conv layers: **{result['wall']:.1f} s wall** "
        f"({result['cpu']:.1f} s CPU, {result['threads']} torch threads), **peak RSS "
        f"{result['maxrss_mib']:.0f} MiB** (the process, model included).",
        "",
        "| layer | weight | stride | input | method | frame_A | frame_B | tol | B/A | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["layers"]:
        lines.append(
            f"| {row['layer']} | {row['shape']} | {row['stride']} | {row['input']} | "
            f"{row['method']} | {row['frame_A']:.3e} | {row['frame_B']:.4f} | "
            f"{row['tol']:.1e} | {row['frame_ratio']:.3e} | {row['note']} |"
        )
    return lines


def compare_krylov_with_eigsh() -> list[str]:
    """Zero padding on one VGG-16 layer (512x512x3x3 at 14x14): ours ("krylov": one Krylov
    space, float32 products, the default checkpoint budget) against the plain Lanczos of the
    same engine ("lanczos": float64 products, random start, rtol 1e-4, 300 products; SciPy's
    ``eigsh`` before issue 17), in this process."""
    import warnings

    import torch

    from invert.nn.zoo import create_model
    from theory.frames import FrameBoundsWarning, frame_bounds

    torch.manual_seed(0)
    convs = [m for m in create_model("vgg16", num_classes=1000).modules()
             if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    conv = convs[10]
    lines = ["| method | s | A | B | tol | converged |", "|---|---|---|---|---|---|"]
    for method, kwargs in (("krylov", {"max_iter": 30}), ("lanczos", {"max_iter": 300})):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FrameBoundsWarning)
            fb = frame_bounds(conv, 14, padding="zeros", method=method, rtol=1e-4, device="cpu",
                              **kwargs)  # fmt: skip
        seconds = time.perf_counter() - start
        lines.append(f"| {method} {kwargs} | {seconds:.1f} | {fb.A:.4e} | {fb.B:.6f} | "
                     f"{fb.tol:.1e} | {fb.converged} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vgg-threads", type=int, help="threads of the VGG run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-vgg", action="store_true")
    parser.add_argument("--padding", default="zeros", choices=("zeros", "circular"),
                        help="boundary model of the 224 px model runs")  # fmt: skip
    parser.add_argument("--models", default="vgg16,resnet18", help="the 224 px model runs")
    parser.add_argument("--skip-small", action="store_true", help="only the model runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        model_worker(args.worker, args.padding)
        return
    load = os.getloadavg()
    print(f"Load average at the start: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min).\n")
    if not args.skip_small:
        print("\n".join(compare_with_sedghi(args.repeats)))
        print()
        print("\n".join(compare_with_dense_svd()))
        print()
        print("\n".join(compare_krylov_with_eigsh()))
        print()
    if not args.skip_vgg:
        for name in args.models.split(","):
            print("\n".join(run_model(name, args.padding, args.vgg_threads or args.threads)))
            print()
    load = os.getloadavg()
    print(f"\nLoad average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min).")


if __name__ == "__main__":
    main()
