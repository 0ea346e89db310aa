"""Subcommand ``crelu reconstruct``: an image back from a layer's features.

The model SPEC goes through :func:`invert.train.loader.load_model` (checkpoint path,
``MODEL@DATA`` trained and cached on a miss, or a zoo name with random weights). The
image is a file (anything :func:`skimage.io.imread` reads) or ``skimage:NAME`` (one of
the images scikit-image ships, e.g. ``skimage:astronaut``); it is converted to the
model's channels and float [0, 1], its shorter side resized to the model's input size
and centre-cropped to a square (images needing more than 4x upscaling are refused).
Features are computed in float64 unless ``--float32`` (exact recovery needs float64).
A metrics table goes to stdout (``--json`` for machines) and, with ``--out``, a PNG
with the original and the reconstructions side by side (as the paper's Fig. 5).
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from invert.files import atomic_write_bytes

from .common import (
    UserError,
    add_image_size_argument,
    add_layers_argument,
    add_model_arguments,
    add_table_arguments,
    deprecated,
    emit_rows,
    image_size_of,
    layer_list,
    load_model_from_args,
)

_COLUMNS = [
    "layer", "relative_error", "projection_error", "recoverable", "feature_error", "psnr",
    "ssim", "converged", "seconds",
]  # fmt: skip
_PROJECTION_TOL = 1e-8  # the recoverable part is a diagnostic: 1e-8 is plenty


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruct an image from the features of a layer (no learning)",
        description="Invert the features of a layer back to the input, one layer at a time: "
        "CReLU pre-activations exactly (pos - neg), convolutions by minimum-norm least "
        "squares, max-pooling through its switches. Prints relative error, error to the "
        "recoverable part, feature error, PSNR and SSIM per layer.",
    )
    add_model_arguments(p, deprecated_option="--model")
    p.add_argument(
        "--image", required=True, help="image file, or skimage:NAME (e.g. skimage:astronaut)"
    )
    add_layers_argument(
        p, "layers whose output is inverted, e.g. conv4 or conv1,conv3 (3 for a plain "
        "Sequential); 'all': every conv layer, as in Fig. 5",
    )  # fmt: skip
    deprecated(p, "--all-layers", new="--layers all (or --layers up to the one you want)",
               dest="all_layers", nargs=0)  # fmt: skip
    p.add_argument(
        "--out",
        metavar="PNG",
        help="write a PNG: the original and the reconstructions side by side",
    )
    add_table_arguments(p)
    p.add_argument("--relu", default="active", choices=("active", "constrained", "naive"),
                   help="how ReLU layers are undone (default: active)")  # fmt: skip
    p.add_argument("--avr", choices=("naive",), help="allow AVR layers, taking |z| as z (lossy)")
    add_image_size_argument(p, "input side (default: the model's own input size)", old=("--size",))
    p.add_argument("--max-iter", type=int, default=1000, help="iteration limit per solve")
    p.add_argument("--tol", type=float, help="relative residual per solve (default 1e-12)")
    p.add_argument("--float32", action="store_true", help="keep the model in float32 (faster)")
    p.add_argument(
        "--no-projection", action="store_true",
        help="skip the recoverable part (projection_error, recoverable): one more solve per layer",
    )  # fmt: skip
    p.set_defaults(run=_reconstruct)


def _layers(model, args) -> list[str]:
    """The layers to invert: ``--layers`` names, or every activation layer (up to the last
    named one with the deprecated ``--all-layers``)."""
    from invert.nn import activation_layers, get_layer

    wanted = args.layers
    if wanted is None and args.all_layers is None:
        raise UserError("give --layers NAME[,NAME...] or --layers all")
    every = activation_layers(model)
    names = layer_list(wanted) or every
    for name in names:
        get_layer(model, name)  # unknown name: the error lists the valid ones
    if args.all_layers is not None and wanted and wanted.strip().lower() != "all":
        last = names[-1]
        if last not in every:
            raise UserError(f"--layers {last!r} is not one of the conv layers {', '.join(every)}")
        names = every[: every.index(last) + 1]
    return names


# --- run --------------------------------------------------------------------------------------


def _reconstruct(args) -> int:
    import torch

    from invert.data.images import prepare_image, read_image
    from invert.linalg.solvers import ConvergenceWarning
    from invert.reconstruction import features, reconstruct, reconstruction_metrics

    if args.max_iter < 1:
        raise UserError(f"--max-iter must be positive; got {args.max_iter}")
    raw = read_image(args.image)  # before the (possibly long) model load
    model, device = load_model_from_args(args)
    if not args.float32:
        model = model.double()
    dtype = next(model.parameters()).dtype
    channels = int(getattr(model, "config", {}).get("in_channels", 3))
    size = image_size_of(args, model)
    x = torch.from_numpy(prepare_image(raw, size, channels))[None].to(device=device, dtype=dtype)
    layers = _layers(model, args)

    rows, images = [], []
    for layer in layers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            feats = features(model, x, layer=layer)
            rec = reconstruct(model, feats, relu=args.relu, avr=args.avr, tol=args.tol,
                              max_iter=args.max_iter, device=device)  # fmt: skip
            metrics = reconstruction_metrics(
                model, x, rec, projection=not args.no_projection, tol=_PROJECTION_TOL,
                max_iter=args.max_iter,
            )[0]  # fmt: skip
        for warning in caught:
            print(f"crelu reconstruct: note: {layer}: {warning.message}", file=sys.stderr)
        row = {"layer": layer, **metrics, "converged": rec.converged,
               "seconds": sum(r.seconds for r in rec.layers)}  # fmt: skip
        if args.json:
            row["steps"] = rec.report()
        rows.append(row)
        images.append((layer, rec.image[0].detach().cpu().double().numpy(), metrics["psnr"]))
    if args.out:
        write_figure(args.out, x[0].detach().cpu().double().numpy(), images)
    emit_rows(args, rows, _COLUMNS)
    return 0


# --- figure -----------------------------------------------------------------------------------


def write_figure(path: str, original: np.ndarray, reconstructions: list) -> None:
    """Original and reconstructions side by side, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file; got {path}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no such folder for --out: {target.parent}")
    panels = [("original", original, None), *reconstructions]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (title, image, psnr) in zip(axes[0], panels):
        shown = np.clip(image.transpose(1, 2, 0), 0, 1)  # clipped for display only
        if shown.shape[-1] == 1:
            ax.imshow(shown[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(shown)
        if psnr is not None:
            title = f"{title}\n{'exact' if psnr == math.inf else f'{psnr:.1f} dB'}"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(target, buffer.getvalue())
