"""Frame bounds: ours against Sedghi, Gupta & Long (2019) and dense SVDs; VGG-16 at 224.

Prints a Markdown section (append it to bench/RESULTS.md):

1. ``theory.frames.frame_bounds`` (circular padding, float64) against a plain numpy
   implementation of Sedghi, Gupta & Long, "The singular values of convolutional
   layers" (ICLR 2019): ``np.fft.fft2`` of the zero-padded kernel and
   ``np.linalg.svd`` of every per-frequency matrix (stride 1, circular), on weights
   (96, 3, 3, 3) and (192, 192, 3, 3) at 32 x 32: best-of-N wall times, their ratio,
   and the largest relative differences of A and B.
2. The dense SVD of the operator matrix on small cases (circular and zero padding).
3. VGG-16 (torchvision layout, random init) at 224 x 224, every conv layer, circular
   padding, in a fresh process: wall time and peak RSS.

Usage: ``python bench/frame_bounds.py [--threads 2] [--vgg-threads N] [--repeats 3]
[--skip-vgg]``.
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
    from theory.frames import frame_bounds

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
            spectrum = method == "fft-svd"
            fb = frame_bounds(weight, size, padding=padding, device="cpu", spectrum=spectrum,
                              method="fft" if spectrum else method)  # fmt: skip
            lines.append(
                f"| 16x8x3x3, {padding}, {size} | {fb.method} | {fb.A:.10e} | {a_ref:.10e} | "
                f"{_rel(fb.A, a_ref):.1e} | {fb.B:.10e} | {b_ref:.10e} | {_rel(fb.B, b_ref):.1e} |"
            )
    return lines


def vgg_worker() -> None:
    """Every conv layer of VGG-16 at 224 (runs in its own process)."""
    import torch

    from invert.nn.zoo import create_model
    from theory.frames import checkpoint_frame_bounds

    torch.manual_seed(0)
    model = create_model("vgg16", num_classes=1000)
    marks = []
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    rows = checkpoint_frame_bounds(
        model, 224, padding="circular", random_baseline=False, device="cpu",
        progress=lambda name: marks.append((name, time.perf_counter())),
    )  # fmt: skip
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    marks.append(("end", time.perf_counter()))
    times = {name: marks[i + 1][1] - t for i, (name, t) in enumerate(marks[:-1])}
    result = {
        "wall": wall,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "layers": [
            {k: row[k] for k in ("layer", "shape", "input", "A", "B", "ratio")}
            | {"seconds": times[row["layer"]]}
            for row in rows
        ],
    }
    print(json.dumps(result))


def run_vgg(threads: int) -> list[str]:
    env = dict(os.environ)
    command = [sys.executable, os.path.abspath(__file__), "--vgg-worker", "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        return [f"VGG-16 run failed: {done.stderr.strip().splitlines()[-1]}"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [
        f"VGG-16 (torchvision layout, random init), 224x224, circular padding, all 13 conv "
        f"layers: **{result['wall']:.1f} s wall** ({result['cpu']:.1f} s CPU, "
        f"{result['threads']} torch threads), **peak RSS {result['maxrss_mib']:.0f} MiB** "
        f"(the fp32 model alone is 528 MiB).",
        "",
        "| layer | weight | input | s | A | B | B/A |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["layers"]:
        lines.append(
            f"| {row['layer']} | {row['shape']} | {row['input']} | {row['seconds']:.1f} | "
            f"{row['A']:.3e} | {row['B']:.4f} | {row['ratio']:.3e} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vgg-threads", type=int, help="threads of the VGG run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-vgg", action="store_true")
    parser.add_argument("--vgg-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.vgg_worker:
        vgg_worker()
        return
    load = os.getloadavg()
    print(f"Load average at the start: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min).\n")
    print("\n".join(compare_with_sedghi(args.repeats)))
    print()
    print("\n".join(compare_with_dense_svd()))
    print()
    if not args.skip_vgg:
        print("\n".join(run_vgg(args.vgg_threads or args.threads)))
    load = os.getloadavg()
    print(f"\nLoad average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min).")


if __name__ == "__main__":
    main()
