"""Subcommand ``crelu reconstruct``: an image back from a layer's features.

The model SPEC goes through :func:`invert.train.loader.load_model` (checkpoint path,
``MODEL@DATA`` trained and cached on a miss, or a zoo name with random weights). The
image is a file (anything :func:`skimage.io.imread` reads) or ``skimage:NAME`` (one of
the images scikit-image ships, e.g. ``skimage:astronaut``); it is converted to the
model's channels and float [0, 1], its shorter side resized to the input size (the
model's own unless ``--image-size``) and centre-cropped to a square, which a ``note:``
line says (images needing more than 4x upscaling are refused). Features are computed in
float64 unless ``--float32`` (exact recovery needs float64).

A metrics table goes to stdout (``--json``/``--csv`` for machines), ``note:`` lines on
stderr explain the numbers that need it (errors above 1, negative PSNR, the PSNR cap,
solves that stopped at ``--max-iter``), and with ``--out`` a PNG shows the original and
the reconstructions (as the paper's Fig. 5). The recoverable part (``projection_error``,
``recoverable``) costs one more solve per layer, often more than the reconstruction: it
is computed only with ``--projection``.

Small inputs run on one CPU thread by default (``--threads``;
:func:`invert.device.cpu_threads`): their convolutions take about a millisecond, and
with two threads each one pays a synchronisation that costs more than it saves.
"""

from __future__ import annotations

import io
from pathlib import Path

from .common import (
    Command,
    Progress,
    Run,
    UserError,
    add_image_size_argument,
    add_layers_argument,
    add_out_argument,
    positive_int,
)

__all__ = ["COMMANDS", "reconstruction_figure"]

_COLUMNS = [
    "layer", "relative_error", "projection_error", "recoverable", "feature_error", "psnr",
    "ssim", "strategy", "solve_residual", "JtJ_min", "JtJ_max", "unique", "converged", "why",
    "seconds",
]  # fmt: skip
#: How the settings a note can advise are spelled on this command line.
_SPELLING = {
    "prior": "--prior tv", "strategy": "--strategy joint (or auto)",
    "joint.max_steps": "--max-steps", "layerwise.cg_iterations": "--cg-iterations",
}  # fmt: skip
_PROJECTION_TOL = 1e-8  # the recoverable part is a diagnostic: 1e-8 is plenty
_SMALL = 64 * 64  # invert.device.SMALL_INPUT_PIXELS, without importing torch for --help


def _image_options(p) -> None:
    p.add_argument(
        "--image", required=True, help="image file, or skimage:NAME (e.g. skimage:astronaut)"
    )
    add_layers_argument(
        p, "layers whose output is inverted, e.g. conv4 or conv1,conv3 (3 for a plain "
        "Sequential); 'all': every conv layer, as in Fig. 5",
    )  # fmt: skip
    add_out_argument(
        p, "PNG", "write a PNG: the original and each layer's reconstruction, titled with the "
        "layer and labelled with PSNR and relative error",
    )  # fmt: skip


def _solver_options(p) -> None:
    p.add_argument(
        "--strategy", default="auto", choices=("auto", "layerwise", "joint"),
        help="auto (default): the paper's layer-wise walk, then a joint refinement where it "
        "does not reproduce the features; layerwise: the walk only; joint: every layer at once",
    )  # fmt: skip
    p.add_argument(
        "--bounds", metavar="LO,HI",
        help="a box on the pixels for the joint solve, e.g. 0,1 (a constraint, not a prior)",
    )  # fmt: skip
    p.add_argument(
        "--prior", choices=("tv",),
        help="tv: add total variation to the joint solve's objective, for layers whose map "
        "is not injective (A = 0); a prior, off by default",
    )  # fmt: skip
    p.add_argument(
        "--prior-weight", type=float, default=3e-4,
        help="weight of the --prior term against the feature residual (default 3e-4; the prior "
        "is measured in units of the image's side, so a weight means the same at any size)",
    )  # fmt: skip
    p.add_argument(
        "--pooling", default="recorded", choices=("recorded", "model"),
        help="max-pooling in the joint solve: the switches recorded with the features "
        "(default), or the network's own max",
    )  # fmt: skip
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="Gauss-Newton steps of the joint solve (default 50; 5 without --prior "
                   "where the layer has fewer numbers than the image: not injective)")  # fmt: skip
    p.add_argument("--relu", default="active", choices=("active", "constrained", "naive"),
                   help="how the layer-wise walk undoes ReLU layers (default: active)")  # fmt: skip
    p.add_argument("--avr", choices=("naive",), help="allow AVR layers, taking |z| as z (lossy)")
    add_image_size_argument(
        p, "side the image is resized and cropped to (default: the model's input size; the "
        "zoo's models are fully convolutional, so larger works)",
    )  # fmt: skip
    p.add_argument("--cg-iterations", type=int, default=None,
                   help="CGLS iterations per least-squares solve: per layer of the layer-wise "
                   "walk (default 1000) and per Gauss-Newton step (default 500)")  # fmt: skip
    p.add_argument(
        "--tol", type=float,
        help="relative feature residual taken as converged (default: 1e-10 with float64 "
        "features, 1e-5 with --float32)",
    )  # fmt: skip
    p.add_argument("--float32", action="store_true", help="keep the model in float32 (faster)")
    p.add_argument(
        "--projection", action="store_true",
        help="also compute the recoverable part (columns projection_error, recoverable): "
        "one more solve per layer, often slower than the reconstruction itself",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=positive_int,
        help=f"CPU threads (default: 1 for inputs up to {_SMALL} pixels, whose "
        "small convolutions lose more to thread synchronisation than they gain; else "
        "torch's default)",
    )  # fmt: skip


def _layers(model, run: Run) -> list[str]:
    """The layers to invert: ``--layers`` names, or every activation layer."""
    import warnings

    from invert.nn import TracingFallbackWarning, activation_layers, model_graph

    wanted = run.args.layers
    if wanted is None:
        raise UserError("give --layers NAME[,NAME...] or --layers all")
    with warnings.catch_warnings():  # the hook fallback: said below, from the graph
        warnings.simplefilter("ignore", TracingFallbackWarning)
        graph = model_graph(model)
        every = activation_layers(model)
    if not graph.traced:
        run.note(graph.note)
    names = run.layers() or every
    for name in names:
        graph.resolve(name)  # unknown name: the error lists the valid ones, closest first
    return names


# --- run --------------------------------------------------------------------------------------


def _input(run: Run, raw, model, device):
    """The image ``raw`` as the model's input, and a note when it was resized or cropped."""
    import torch

    from invert.data.images import prepare_image

    args = run.args
    dtype = next(model.parameters()).dtype
    channels = int(getattr(model, "config", {}).get("in_channels", 3))
    size = run.image_size(model)
    x = torch.from_numpy(prepare_image(raw, size, channels))[None].to(device=device, dtype=dtype)
    height, width = raw.shape[:2]
    if (height, width) != (size, size):
        how = "shorter side resized" + (", centre-cropped" if height != width else "")
        own = "" if args.image_size else " (the model's input size; --image-size for another)"
        run.note(f"{args.image} is {width}x{height}; reconstructing it at {size}x{size}{own}: "
                  f"{how}")  # fmt: skip
    return x


def _reconstruct(run: Run) -> int:
    from invert.data.images import read_image

    args = run.args
    if args.cg_iterations is not None and args.cg_iterations < 1:
        raise UserError(f"--cg-iterations must be a positive integer; got {args.cg_iterations}")
    if args.tol is not None and not args.tol > 0:
        raise UserError(f"--tol must be a positive number; got {args.tol}")
    raw = read_image(args.image)  # before the (possibly long) model load
    model, device = run.load_model()
    if not args.float32:
        model = model.double()
    layers = _layers(model, run)
    if args.out:
        _out_path(args.out)  # a bad --out fails before any work
    x = _input(run, raw, model, device)
    from invert.device import cpu_threads

    with cpu_threads(x.shape[-1] * x.shape[-2], threads=args.threads):
        rows, images, notes = _run_layers(args, model, x, layers, device)
    if args.out:
        write_figure(args.out, x[0].detach().cpu().double().numpy(), images)
    from invert.display import psnr_text

    run.emit(rows, _COLUMNS, formats={"psnr": lambda v: psnr_text(v, unit=False)})
    for text in notes:
        run.note(text)
    _explain(run, rows)
    return 0


def _bounds(text: str | None):
    """``"0,1"`` -> ``(0.0, 1.0)``; a one-line error for anything else."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--bounds takes two numbers LO,HI such as 0,1; got {text!r}") from None
    if not low < high:
        raise UserError(f"--bounds needs LO < HI; got {text!r}")
    return low, high


def _settings(args):
    """The solvers' settings from the options (None: the library's default)."""
    from invert.reconstruction import JointSettings, LayerwiseSettings

    cg = {} if args.cg_iterations is None else dict(cg_iterations=args.cg_iterations)
    joint = JointSettings(pooling=args.pooling, prior_weight=args.prior_weight,
                          max_steps=args.max_steps, **cg)  # fmt: skip
    return joint, LayerwiseSettings(relu=args.relu, avr=args.avr, **cg)


def _run_layers(args, model, x, layers, device):
    """One reconstruction per layer: table rows, images, and the notes of the results
    (each with its true cause and the option that acts on it)."""
    import time
    import warnings

    from invert.linalg.solvers import ConvergenceWarning
    from invert.reconstruction import features, reconstruct, reconstruction_metrics

    bounds = _bounds(args.bounds)
    joint, layerwise = _settings(args)
    rows, images, notes = [], [], []
    with Progress(args, len(layers), desc="reconstruct") as step:
        for layer in layers:
            step(layer)
            started = time.perf_counter()
            with warnings.catch_warnings():  # the result's notes say it, with the option
                warnings.simplefilter("ignore", ConvergenceWarning)
                feats = features(model, x, layer=layer)
                rec = reconstruct(
                    model, feats, strategy=args.strategy, bounds=bounds, prior=args.prior,
                    tol=args.tol, joint=joint, layerwise=layerwise, device=device,
                    progress=not args.quiet,
                )  # fmt: skip
                metrics = reconstruction_metrics(model, x, rec, projection=args.projection,
                                                 cg_tol=_PROJECTION_TOL)[0]  # fmt: skip
            notes += [f"{layer}: {n.text(_SPELLING)}" for n in rec.notes]
            certificate = rec.certificate[0]
            row = {"layer": layer, "strategy": rec.strategy, **metrics,
                   "solve_residual": certificate.residual, "JtJ_min": certificate.A,
                   "JtJ_max": certificate.B, "unique": certificate.unique,
                   "converged": rec.converged, "why": certificate.note,
                   "seconds": time.perf_counter() - started}  # fmt: skip
            if args.json:
                row["certificate"] = certificate.as_dict()
                row["steps"] = rec.report()
                row["gauss_newton"] = list(rec.history)
            rows.append(row)
            panel = f"{layer} ({rec.strategy})"  # what made it: the walk or the joint solve
            images.append((panel, rec.image[0].detach().cpu().double().numpy(), metrics))
    return rows, images, notes


def _names(rows, test) -> str:
    return ", ".join(r["layer"] for r in rows if test(r))


def _explain(run: Run, rows: list[dict]) -> None:
    """``note:`` lines for the numbers that need one: a legend, not a lecture."""
    from invert.display import PSNR_CAP

    args = run.args
    above = _names(rows, lambda r: r["relative_error"] > 1)
    if above:
        run.note(
            f"relative_error = ||x' - x|| / ||x|| is above 1 at {above}: the "
            f"reconstruction is farther from the image than an all-black image is (the "
            f"layer-by-layer walk loses what a layer's filters cannot see, or a solve "
            f"stopped early; --projection shows how much the features determine)",
        )
    negative = _names(rows, lambda r: r["psnr"] < 0)
    if negative:
        run.note(
            f"PSNR (dB, against the [0, 1] range) is below 0 at {negative}: the RMS "
            f"error exceeds the whole intensity range (values far outside [0, 1])",
        )
    switched = _names(rows, lambda r: r["converged"] and r["feature_error"] > 1e-6)
    if switched and args.pooling == "recorded":
        run.note(f"{switched}: the features are matched with the recorded max-pooling "
                  f"switches, not through the network's own max-pooling (feature_error "
                  f"recomputes the features with the network's own): such an image explains "
                  f"the features only given the switches")  # fmt: skip
    capped = _names(rows, lambda r: r["psnr"] > PSNR_CAP)
    if capped and not (args.json or args.csv):
        run.note(f"PSNR '> {PSNR_CAP:g}' ({capped}): exact to float64 rounding; --json has "
                  f"the number")  # fmt: skip
    if args.projection:
        run.note(
            "recoverable = ||P u|| / ||u||: the share of the (normalized) image that "
            "the features determine to first order; projection_error = distance of the "
            "reconstruction to that part, relative (0: all of it was recovered)",
        )


# --- figure -----------------------------------------------------------------------------------


def reconstruction_figure(original, reconstructions: list, *, columns: int = 5):
    """The original and each reconstruction as a :class:`matplotlib.figure.Figure`.

    ``reconstructions`` holds ``(layer, image, metrics)`` with images ``(C, H, W)`` in
    [0, 1] (clipped for display only) and ``metrics`` a row of
    :func:`~invert.reconstruction.metrics.reconstruction_metrics`. Each panel is titled
    with its layer and labelled with PSNR (one cap convention) and relative error.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((3, 8, 8))
    >>> fig = reconstruction_figure(image, [("conv1", image, {"psnr": 300.0,
    ...                                                       "relative_error": 1e-13})])
    >>> [ax.get_title() for ax in fig.axes], fig.axes[1].get_xlabel()
    (['original', 'conv1'], 'PSNR > 100 dB\\nerror 1e-13')
    """
    import math
    import textwrap

    import numpy as np
    from matplotlib.figure import Figure

    from invert.display import cell_text, psnr_text

    panels = [("original", original, None), *reconstructions]
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(2.2 * columns, 2.6 * rows + 0.5), dpi=100, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, image, metrics) in zip(axes, panels):
        shown = np.clip(image.transpose(1, 2, 0), 0, 1)
        if shown.shape[-1] == 1:
            ax.imshow(shown[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(shown, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if metrics is not None:
            label = (
                f"PSNR {psnr_text(metrics['psnr'])}\nerror {cell_text(metrics['relative_error'])}"
            )
            ax.set_xlabel(label, fontsize=9)
        else:
            ax.set_xlabel(f"{image.shape[-1]}x{image.shape[-2]} input", fontsize=9)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    title = (
        "Reconstructions from each layer's features (no learning; each panel says "
        "what made it: the layer-wise walk or the joint solve)"
    )
    width = figure.get_figwidth()  # about 9 characters an inch at this size: wrap to fit
    figure.suptitle(textwrap.fill(title, max(20, int(9 * width))), fontsize=11)
    return figure


def _out_path(path: str) -> Path:
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file; got {path}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no such folder for --out: {target.parent}")
    return target


def write_figure(path: str, original, reconstructions: list) -> None:
    """:func:`reconstruction_figure`, written atomically as a PNG."""
    from invert.files import atomic_write_bytes

    target = _out_path(path)
    buffer = io.BytesIO()
    reconstruction_figure(original, reconstructions).savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(target, buffer.getvalue())


COMMANDS = (
    Command(
        "reconstruct",
        run=_reconstruct,
        help="reconstruct an image from the features of a layer (no learning)",
        description="Invert the features of a layer back to the input. --strategy layerwise: "
        "the paper's walk, one layer at a time (CReLU pre-activations exactly as pos - neg, "
        "convolutions by minimum-norm least squares, max-pooling through its switches); "
        "joint: Gauss-Newton on the whole map from the image to the layer at once; auto "
        "(default): layer-wise, then joint where the features are not reproduced. Prints "
        "relative error, feature error, PSNR, SSIM and the certificate per layer: JtJ_min and "
        "JtJ_max, the extreme eigenvalues of J^T J of the whole map to the layer at the "
        "solution (not one conv layer's frame bounds), why, and unique (the features "
        "determine the image there; and, with --projection, the error to the recoverable "
        "part).",
        loads_model=True,
        arguments=(_image_options, _solver_options),
        table="a table",
    ),
)
