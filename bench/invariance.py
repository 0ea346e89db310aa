"""Invariance scores: our batched two-pass scoring vs a per-image, per-transformation loop.

Both sides use the same model, images, transformations (the same crops and rotation
grids) and the same threshold rule, each computing its thresholds from its own
responses (the script reports how far they differ). The reference sends one crop at a
time through the model, looping over the images on which some unit fires and over
each of their transformed versions. In float64 the scores agree exactly; in float32
batched and single-image convolutions round differently, so a response within an ulp
of a threshold can fire on one side only. The script prints the agreement and the
speed ratio, and with ``--record`` appends them to ``bench/RESULTS.md``.

    python bench/invariance.py --width 0.25 --n-images 300 --threads 1 --record
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from record import append_results

from figures.common import machine_line as machine
from invert.data import natural_images
from invert.nn.net import conv_layers
from invert.nn.zoo import create_model
from theory.invariance import (
    InvarianceScore,
    Transformations,
    _Cropper,
    _Responses,
    _weights,
    firing_weights,
    invariance_scores,
)


def reference_scores(
    model,
    images,
    layers,
    cropper: _Cropper,
    firing_rate: float,
    device,
    *,
    channels_last=False,
):
    """Straightforward loops: one image and one transformation per forward pass."""
    dtype = next(model.parameters()).dtype
    responses = _Responses(model, layers, device, dtype, channels_last=channels_last)
    base = {name: [] for name in layers}
    for image in images:
        crop = cropper.base(cropper.pad(image[None].to(device)))
        for name, units in responses(crop).items():
            base[name].append(units[0])
    rule = {name: firing_weights(torch.stack(base[name]), firing_rate) for name in layers}
    thresholds = {name: rule[name][0].cpu().numpy() for name in layers}
    transforms = cropper.transforms
    theta = cropper.theta
    k = rule[layers[0]][2].sum(0)[0].round().item()
    numerator = {name: 0.0 for name in layers}
    for n, image in enumerate(images):
        if not any((rule[name][2][n] > 0).any() for name in layers):
            continue
        padded = cropper.pad(image[None].to(device))
        fired = {name: [] for name in layers}
        for j in range(len(transforms)):
            if j < len(transforms.shifts):
                dy, dx = transforms.shifts[j]
                top, left = cropper.top - dy, cropper.left - dx
                crop = padded[:, :, top : top + cropper.h, left : left + cropper.w]
            else:
                t = theta[j - len(transforms.shifts)][None].to(device, padded.dtype)
                grid = torch.nn.functional.affine_grid(
                    t, [1, 1, cropper.h, cropper.w], align_corners=False
                )
                crop = torch.nn.functional.grid_sample(
                    padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False
                )
            for name, units in responses(crop).items():
                threshold, tie, _ = rule[name]
                fired[name].append(_weights(units[0], threshold, tie))
        for name in layers:
            g = torch.stack(fired[name]).mean(0)
            numerator[name] = numerator[name] + rule[name][2][n] * g
    n_images = len(images)
    scores = {name: (numerator[name] / k).cpu().numpy() * n_images / k for name in layers}
    return scores, thresholds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convpool_c_crelu")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--firing-rate", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    dtype = getattr(torch, args.dtype)
    model = create_model(args.model, width=args.width).to(dtype).eval()
    layers = list(conv_layers(model))
    size = (32, 32)
    transforms = Transformations.build(None, None, size)
    margin = transforms.margin(size)
    images = natural_images(args.n_images, size=32 + 2 * margin, seed=0)
    cropper = _Cropper(tuple(images.shape[-2:]), size, transforms, "reflect")
    score = InvarianceScore(firing_rate=args.firing_rate)
    options = dict(layers=layers, input_size=32, score=score, device=device)

    invariance_scores(model, images[:100], **{**options, "score": InvarianceScore()})  # warm-up
    start = time.perf_counter()
    ours = invariance_scores(model, images, batch_size=args.batch_size, **options)
    t_ours = time.perf_counter() - start
    timings = {}
    for channels_last in (False, True):
        start = time.perf_counter()
        with torch.no_grad():
            ref, ref_thresholds = reference_scores(
                model, images, layers, cropper, args.firing_rate, device,
                channels_last=channels_last,
            )  # fmt: skip
        timings[channels_last] = time.perf_counter() - start

    diffs = [np.abs(ours.S[name] - ref[name]).max() for name in layers]
    t_diff = max(
        float(np.max(np.abs(ours.thresholds[name] - ref_thresholds[name])
                     / np.maximum(np.abs(ref_thresholds[name]), 1e-30)))
        for name in layers
    )  # fmt: skip
    flips = sum(
        int((~np.isclose(ours.S[name], ref[name], rtol=1e-9, atol=1e-9)).sum()) for name in layers
    )
    units = sum(ours.S[name].size for name in layers)
    ratio = timings[False] / t_ours
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"model {args.model} width {args.width} ({args.dtype}), {len(layers)} conv layers "
        f"({units} units), {args.n_images} natural images of 32 x 32 (+{margin} px margin), "
        f"{len(transforms)} transformations, firing rate {args.firing_rate}, "
        f"{args.threads} thread(s)",
        f"batched two-pass (ours): {t_ours:.2f} s; per-image per-transformation loop: "
        f"{timings[False]:.2f} s; ratio {ratio:.1f}x (goal >= 20x)",
        f"the same loop with NHWC (channels_last) inputs, as ours uses: {timings[True]:.2f} s; "
        f"ratio from batching alone {timings[True] / t_ours:.1f}x",
        f"agreement: thresholds within {t_diff:.1e} (relative); max |S_ours - S_ref| = "
        f"{max(diffs):.2e}; units differing: {flips} of {units}",
    ]
    print("\n".join(lines))
    if args.record:
        results = append_results(
            "Invariance scores: batched vs per-image loop",
            "\n".join(f"- {line}" for line in lines),
            command=f"`{command}`",
            machine=machine(),
        )
        print(f"appended to {results}")
    # float32: batched and single-image convolutions round differently, so a transformed
    # response within an ulp of its threshold may fire on one side only; float64 is exact
    return 0 if flips == 0 or args.dtype == "float32" else 1


if __name__ == "__main__":
    sys.exit(main())
