"""``crelu pairing``: pairing statistics of conv filters vs Gaussian filters (Figs. 1-3)."""

from __future__ import annotations

import io
import math

from invert.files import atomic_write_bytes

from .common import (
    add_layers_argument,
    add_model_arguments,
    add_table_arguments,
    emit_rows,
    layer_list,
    load_model_from_args,
)

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pairing",
        help="pairing statistics of conv filters vs Gaussian filters (Figs. 1-3)",
        description="For every conv layer: mean and std of mu (cosine of each unit-norm "
        "filter with its most opposite filter) for the learned filters (mu_w) and for "
        "i.i.d. Gaussian filters of the same shape (mu_r).",
    )
    add_model_arguments(p)
    add_layers_argument(p, "comma-separated conv layers (default: all)", old=())
    p.add_argument("--trials", type=int, default=10, help="random filter sets per layer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random filters")
    p.add_argument("--out", metavar="PNG", help="write the mu_w / mu_r histograms (Fig. 2)")
    p.add_argument(
        "--pair-image",
        metavar="PNG",
        help="write the first conv layer's filters beside their pairs (Fig. 1)",
    )
    add_table_arguments(p)
    p.set_defaults(run=_pairing)


def _pairing(args) -> int:
    from theory.filter_pairing import layer_pairing, pair_image

    if args.trials < 1:
        raise ValueError(f"--trials must be positive; got {args.trials}")
    model, _ = load_model_from_args(args)
    stats = layer_pairing(model, layers=layer_list(args.layers), trials=args.trials, seed=args.seed)
    if args.out:
        atomic_write_bytes(args.out, _histogram_png(stats))
    if args.pair_image:
        from invert.nn.net import conv_layers

        first = next(iter(conv_layers(model).items()))
        atomic_write_bytes(args.pair_image, _image_png(pair_image(first[1].weight)))
    emit_rows(args, [s.row() for s in stats.values()])
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
