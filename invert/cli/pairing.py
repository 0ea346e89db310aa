"""``crelu pairing``: pairing statistics of conv filters vs Gaussian filters (Figs. 1-3)."""

from __future__ import annotations

import io

from invert.files import atomic_write_bytes

from .common import (
    Command,
    Run,
    UserError,
    add_layers_argument,
    add_out_argument,
    add_random_seed_argument,
)

__all__ = ["COMMANDS"]


def _options(p) -> None:
    add_layers_argument(p, "comma-separated conv layers (default: all)")
    p.add_argument("--trials", type=int, default=10, help="random filter sets per layer")
    add_random_seed_argument(p, "seed of the random filters (default 0)")
    add_out_argument(
        p, "PNG", "write the histograms of mu_w (learned) and mu_r (random) of each layer, "
        "on shared bins, with axis labels and a legend (as Figs. 2-3)",
    )  # fmt: skip
    p.add_argument(
        "--pair-image",
        metavar="PNG",
        help="write the first conv layer's filters beside their pairing filters, each pair "
        "labelled with its filter numbers and mu (as Fig. 1)",
    )


def _pairing(run: Run) -> int:
    from theory.filter_pairing import layer_pairing

    args = run.args
    if args.trials < 1:
        raise UserError(f"--trials must be positive; got {args.trials}")
    model, _ = run.load_model()
    for option, path in (("--out", args.out), ("--pair-image", args.pair_image)):
        if path and not str(path).lower().endswith(".png"):
            raise UserError(f"{option} must be a .png file; got {path}")
    from invert.nn.net import conv_layers

    if args.pair_image:  # before the long pairing run
        name, conv = next(iter(conv_layers(model).items()))
        if conv.weight.shape[1] not in (1, 3):
            raise UserError(f"--pair-image needs a first conv layer on 1 or 3 channels; "
                            f"{name} reads {conv.weight.shape[1]}")  # fmt: skip
    stats = layer_pairing(model, layers=run.layers(), trials=args.trials,
                          seed=args.random_seed, progress=not args.quiet)  # fmt: skip
    if args.out:
        from figures.fig2_pairing_relu import histogram_figure

        name = getattr(model, "arch", None) or "model"
        figure = histogram_figure(stats, title=f"Pairing statistic μ per conv layer, {name}")
        atomic_write_bytes(args.out, _png(figure))
    if args.pair_image:
        _write_pair_image(args, model, stats)
    run.emit([s.row() for s in stats.values()])
    return 0


def _write_pair_image(args, model, computed: dict) -> None:
    from figures.fig1_filter_pairs import figure_size, pairs_figure
    from invert.nn.net import conv_layers
    from theory.filter_pairing import layer_pairing

    name, conv = next(iter(conv_layers(model).items()))
    # each layer's baseline is seeded by its place in the model: a result already computed
    # for the first layer is the one a separate call would give
    stats = computed.get(name) or layer_pairing(model, layers=name, trials=args.trials,
                                                seed=args.random_seed)[name]  # fmt: skip
    label = getattr(model, "arch", None) or "model"
    size = figure_size(stats.shape[0], width=7.5)
    figure = pairs_figure([(label, conv.weight.detach().cpu(), stats)], figsize=size, title="")
    atomic_write_bytes(args.pair_image, _png(figure))


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


COMMANDS = (
    Command(
        "pairing",
        run=_pairing,
        help="pairing statistics of conv filters vs Gaussian filters (Figs. 1-3)",
        description="For every conv layer: mean and std of mu (cosine of each unit-norm "
        "filter with its most opposite filter) for the learned filters (mu_w) and for "
        "i.i.d. Gaussian filters of the same shape (mu_r).",
        loads_model=True,
        arguments=(_options,),
        table="a table",
    ),
)
