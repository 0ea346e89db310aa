"""Subcommands for the paper's filter analyses: ``crelu pairing``, ``crelu invariance``,
``crelu correlations``.

Each takes a model SPEC as :func:`invert.train.loader.load_model` understands it: a
checkpoint path, ``MODEL@DATA`` (trained with ``--recipe`` and cached on a miss,
unless ``--no-train``) or a bare zoo name (fresh random weights). Tables go to stdout,
``--json`` prints the same rows as JSON.
"""

from __future__ import annotations

import io
import math

from invert.cli import add_model_arguments, emit, load_model_from_args, print_notes
from invert.files import atomic_write_bytes


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pairing",
        help="pairing statistics of conv filters vs Gaussian filters (Figs. 1-3)",
        description="For every conv layer: mean and std of mu (cosine of each unit-norm "
        "filter with its most opposite filter) for the learned filters (mu_w) and for "
        "i.i.d. Gaussian filters of the same shape (mu_r).",
    )
    add_model_arguments(p)
    p.add_argument("--layers", help="comma-separated conv layers (default: all)")
    p.add_argument("--trials", type=int, default=10, help="random filter sets per layer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random filters")
    p.add_argument("--out", metavar="PNG", help="write the mu_w / mu_r histograms (Fig. 2)")
    p.add_argument(
        "--pair-image",
        metavar="PNG",
        help="write the first conv layer's filters beside their pairs (Fig. 1)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_pairing)

    p = subparsers.add_parser(
        "invariance",
        help="invariance scores of the layers (Goodfellow et al. 2009, Fig. 4)",
        description="Per layer: mean of the top 20% of unit scores S = L / G, with "
        "thresholds giving a 1% global firing rate G and L the firing rate over "
        "translated and rotated versions of the images on which a unit fires.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--data",
        help="textures, cifar10:PATH, cifar100:PATH or folder:PATH (default: crops of the "
        "embedded natural photographs, with room for the transformations)",
    )
    p.add_argument("--split", default="test", help="data set split (default: test)")
    p.add_argument("--layers", help="comma-separated layers (default: every conv layer)")
    p.add_argument("--n-images", type=int, default=1000, help="images used (default: 1000)")
    p.add_argument(
        "--input-size", type=int, help="side of the model input (default: the zoo model's)"
    )
    p.add_argument("--firing-rate", type=float, default=0.01)
    p.add_argument("--top-fraction", type=float, default=0.2)
    p.add_argument(
        "--translations",
        help="pixel shifts, each applied +/- horizontally and vertically, e.g. 1,2,3,4 "
        "(default: 1-4 px for 32 px inputs, scaled with the input size); 'none' for none",
    )
    p.add_argument(
        "--rotations",
        help="angles in degrees, each applied +/-, e.g. 10,20,30 "
        "(default: 5,10,...,30); 'none' for none",
    )
    p.add_argument(
        "--boundary",
        default="reflect",
        choices=("reflect", "circular", "replicate", "zeros", "error"),
        help="fills pixels a transformation needs beyond the image (default: reflect)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="model inputs per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_invariance)

    p = subparsers.add_parser(
        "correlations",
        help="correlations of CReLU outgoing weights, pair vs non-pair (Table 6)",
        description="For each CReLU layer followed by a conv layer: cosine between the "
        "next layer's weights on the positive and the negative phase of the same filter "
        "(pair) and of different filters (non-pair), mean and std.",
    )
    add_model_arguments(p)
    p.add_argument("--layers", help="comma-separated CReLU layers (default: all)")
    p.add_argument("--absolute", action="store_true", help="average |cos| instead of cos")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_correlations)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError("--layers needs at least one layer name")
    return names


def _magnitudes(text: str | None, option: str, cast):
    """'1,2' -> [-1, 1, -2, 2]; 'none' -> []; None -> None (the library default)."""
    if text is None:
        return None
    if text.strip().lower() in ("none", ""):
        return []
    values = []
    for item in text.split(","):
        try:
            value = cast(item.strip())
        except ValueError:
            raise ValueError(
                f"{option} takes comma-separated {cast.__name__} values such as 1,2,3; got {text!r}"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{option} values must be positive (each is applied +/-); got {item}")
        values += [-value, value]
    return values


# --- pairing --------------------------------------------------------------------------


def _pairing(args) -> int:
    from theory.filter_pairing import layer_pairing, pair_image

    if args.trials < 1:
        raise ValueError(f"--trials must be positive; got {args.trials}")
    model, _ = load_model_from_args(args)
    stats = layer_pairing(model, layers=_names(args.layers), trials=args.trials, seed=args.seed)
    if args.out:
        atomic_write_bytes(args.out, _histogram_png(stats))
    if args.pair_image:
        from invert.nn.net import conv_layers

        first = next(iter(conv_layers(model).items()))
        atomic_write_bytes(args.pair_image, _image_png(pair_image(first[1].weight)))
    emit([s.row() for s in stats.values()], as_json=args.json)
    return 0


def _histogram_png(stats) -> bytes:
    from matplotlib.figure import Figure

    count = len(stats)
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, layer) in zip(axes, stats.items()):
        edges, density_w, density_r = layer.histogram(bins=30)
        ax.stairs(density_r, edges, fill=True, color="tab:red", alpha=0.5, label="mu_r (random)")
        ax.stairs(density_w, edges, fill=True, color="tab:blue", alpha=0.5, label="mu_w (learned)")
        ax.set_title(name)
        ax.set_xlabel("mu")
    for ax in axes[count:]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _image_png(image) -> bytes:
    """The pair image magnified (nearest neighbour) so 3 x 3 filters stay visible."""
    from matplotlib.figure import Figure

    height, width = image.shape[:2]
    zoom = max(1, 600 // max(height, width))
    figure = Figure(figsize=(width * zoom / 100, height * zoom / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# --- invariance -----------------------------------------------------------------------


def _invariance(args) -> int:
    from theory.invariance import Transformations, invariance_scores

    if args.n_images < 1:
        raise ValueError(f"--n-images must be positive; got {args.n_images}")
    translations = _magnitudes(args.translations, "--translations", int)
    rotations = _magnitudes(args.rotations, "--rotations", float)
    model, device = load_model_from_args(args)
    size = args.input_size or _model_input_size(model)
    if size < 1:
        raise ValueError(f"--input-size must be positive; got {size}")
    margin = Transformations.build(translations, rotations, (size, size)).margin((size, size))
    images = None
    if args.data is not None:
        from invert.data.natural_images import dataset_images

        images = dataset_images(
            args.data, args.n_images, split=args.split, size=size, margin=margin, seed=args.seed
        )
    result = invariance_scores(
        model,
        images,
        layers=_names(args.layers),
        translations=translations,
        rotations=rotations,
        input_size=size,
        boundary=args.boundary,
        firing_rate=args.firing_rate,
        top_fraction=args.top_fraction,
        n_images=args.n_images,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
        progress=args.progress,
    )
    emit(result.rows(), as_json=args.json)
    return 0


def _model_input_size(model) -> int:
    from invert.nn.zoo import model_info

    arch = getattr(model, "arch", None)
    try:
        return int(model_info(arch)["input_size"])
    except (ValueError, TypeError, KeyError):
        raise ValueError(
            "the model's input size is unknown (not a zoo architecture); pass --input-size"
        ) from None


# --- correlations ---------------------------------------------------------------------


def _correlations(args) -> int:
    import warnings

    from theory.correlations import outgoing_correlations

    model, _ = load_model_from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        stats = outgoing_correlations(model, layers=_names(args.layers), absolute=args.absolute)
    print_notes(args, caught)
    emit([s.row() for s in stats.values()], as_json=args.json)
    return 0
