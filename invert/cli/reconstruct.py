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

from invert.cli import UserError, add_model_arguments, emit, load_model_from_args
from invert.train.checkpoints import atomic_write_bytes

_COLUMNS = [
    "layer", "relative_error", "projection_error", "recoverable", "feature_error", "psnr",
    "ssim", "converged", "seconds",
]  # fmt: skip
_NOT_IMAGES = {"download_all", "file_hash", "data_dir", "lbp_frontal_face", "lfw_subset",
               "stereo_motorcycle", "binary_blobs"}  # fmt: skip
_MAX_UPSCALE = 4
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
    add_model_arguments(p, option="--model")
    p.add_argument(
        "--image", required=True, help="image file, or skimage:NAME (e.g. skimage:astronaut)"
    )
    p.add_argument(
        "--layer", help="layer whose output is inverted, e.g. conv4 (or 3 for a plain Sequential)"
    )
    p.add_argument(
        "--all-layers", action="store_true",
        help="reconstruct from every conv layer (up to --layer if given), as in Fig. 5",
    )  # fmt: skip
    p.add_argument("--out", help="write a PNG: the original and the reconstructions side by side")
    p.add_argument("--json", action="store_true", help="print JSON (with per-step diagnostics)")
    p.add_argument("--relu", default="active", choices=("active", "constrained", "naive"),
                   help="how ReLU layers are undone (default: active)")  # fmt: skip
    p.add_argument("--avr", choices=("naive",), help="allow AVR layers, taking |z| as z (lossy)")
    p.add_argument("--size", type=int, help="input side (default: the zoo model's native size)")
    p.add_argument("--max-iter", type=int, default=1000, help="iteration limit per solve")
    p.add_argument("--tol", type=float, help="relative residual per solve (default 1e-12)")
    p.add_argument("--float32", action="store_true", help="keep the model in float32 (faster)")
    p.add_argument(
        "--no-projection", action="store_true",
        help="skip the recoverable part (projection_error, recoverable): one more solve per layer",
    )  # fmt: skip
    p.set_defaults(run=_reconstruct)


# --- input --------------------------------------------------------------------------------


def _skimage_names() -> list[str]:
    import skimage.data

    return sorted(n for n in skimage.data.__all__
                  if callable(getattr(skimage.data, n, None)) and n not in _NOT_IMAGES)  # fmt: skip


def read_image(source: str) -> np.ndarray:
    """The image at a path, or ``skimage:NAME``, as a numpy array (as stored)."""
    if source.startswith("skimage:"):
        import skimage.data

        name = source.partition(":")[2]
        if name not in _skimage_names():
            raise UserError(f"unknown image {source!r}; scikit-image ships: "
                            f"{', '.join(_skimage_names())}")  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(getattr(skimage.data, name)())
        except Exception as error:  # e.g. an image that needs a download
            raise UserError(f"cannot load {source}: {error}".splitlines()[0]) from None
    import skimage.io

    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {source}")
    # read the bytes ourselves: the image readers leave files open when they fail; an
    # OSError here (permissions) is the CLI's to report, one from the decoder is ours
    with open(path, "rb") as handle:
        data = io.BytesIO(handle.read())
    try:
        return np.asarray(skimage.io.imread(data))
    except Exception as error:
        raise UserError(f"cannot read {source} as an image ({type(error).__name__})") from None


def prepare_image(image: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """``(channels, size, size)`` float64 in [0, 1]: colour-converted, resized, centre-cropped."""
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb
    from skimage.transform import resize
    from skimage.util import img_as_float

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = gray2rgb(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"expected a grey, RGB or RGBA image; got an array of shape {image.shape}")
    image = img_as_float(image)
    if image.shape[-1] == 4:
        image = rgba2rgb(image)
    if channels == 1:
        image = rgb2gray(image)[..., None]
    elif channels != 3:
        raise UserError(f"the model reads {channels}-channel images; only 1 or 3 are supported")
    h, w = image.shape[:2]
    if min(h, w) * _MAX_UPSCALE < size:
        raise UserError(
            f"the image is {w}x{h} pixels, too small for a {size}x{size} input: its shorter "
            f"side must be at least {math.ceil(size / _MAX_UPSCALE)} pixels"
        )
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = resize(image, (nh, nw), anti_aliasing=scale < 1, preserve_range=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    image = np.clip(image[top : top + size, left : left + size], 0, 1)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float64)


def _input_size(model, args) -> int:
    if args.size:
        if args.size < 1:
            raise UserError(f"--size must be positive; got {args.size}")
        return args.size
    from invert.nn.zoo import list_models, model_info

    arch = getattr(model, "arch", None) or getattr(model, "metadata", {}).get("arch")
    if arch in list_models():
        return model_info(arch)["input_size"]
    raise UserError("cannot tell the model's input size; pass --size")


# --- layers ---------------------------------------------------------------------------------


def activation_layers(model) -> list[str]:
    """The layer after each conv whose output is its activation: ``conv3`` for zoo blocks,
    the activation module after the conv (``features.1``) in plain sequentials."""
    from torch import nn

    from invert.nn.net import conv_layers

    names = dict(model.named_modules())
    out = []
    for name, conv in conv_layers(model).items():
        module = names.get(name)
        if module is conv:  # a bare conv: its activation is the next leaf (after BN)
            parent_name, _, child = name.rpartition(".")
            parent = names[parent_name] if parent_name else model
            children = list(parent.named_children())
            index = [n for n, _ in children].index(child)
            for next_name, nxt in children[index + 1 :]:
                if isinstance(nxt, nn.BatchNorm2d):
                    continue
                if not isinstance(nxt, nn.Conv2d) and not list(nxt.children()):
                    name = f"{parent_name}.{next_name}" if parent_name else next_name
                break
        out.append(name)
    return out


def _layers(model, args) -> list[str]:
    if not args.all_layers:
        if not args.layer:
            raise UserError("give --layer NAME, or --all-layers")
        return [args.layer]
    layers = activation_layers(model)
    if args.layer:
        from invert.nn.net import get_layer

        get_layer(model, args.layer)  # unknown name: the error lists the valid ones
        if args.layer not in layers:
            raise UserError(f"--layer {args.layer!r} is not one of the conv layers "
                            f"{', '.join(layers)}")  # fmt: skip
        layers = layers[: layers.index(args.layer) + 1]
    return layers


# --- run --------------------------------------------------------------------------------------


def _reconstruct(args) -> int:
    import torch

    from invert.linalg.solvers import ConvergenceWarning
    from invert.reconstruction import features
    from invert.reconstruction import reconstruct_layerwise as reconstruct
    from invert.reconstruction.metrics import reconstruction_metrics

    if args.max_iter < 1:
        raise UserError(f"--max-iter must be positive; got {args.max_iter}")
    raw = read_image(args.image)  # before the (possibly long) model load
    model, device = load_model_from_args(args)
    if not args.float32:
        model = model.double()
    dtype = next(model.parameters()).dtype
    channels = int(getattr(model, "config", {}).get("in_channels", 3))
    size = _input_size(model, args)
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
    columns = [c for c in _COLUMNS if c in rows[0]]
    emit(rows, as_json=args.json, columns=None if args.json else columns)
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
