"""Figure 2: histograms of mu_w (learned) and mu_r (random) per conv layer, ReLU model.

For every conv layer but the class layer, mu_i = <phi_i, bar-phi_i> of the unit-norm
filters (blue) against the same statistic for i.i.d. Gaussian filters of the same shape
and count (red; :func:`theory.filter_pairing.layer_pairing`). The paper's Fig. 2 shows AlexNet,
whose conv1 histogram is centred far left of the random one ("pairs"), the gap closing
with depth; we show the AlexNet-layout ReLU model (``alexnet64``: AlexNet's conv1 of 96
filters of 11x11x3, the later convs at a CPU-sized width) trained on the data used.

    python -m figures.fig2_pairing_relu --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import math
import sys

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig2_pairing_relu"
FIGSIZE = (12.0, 6.5)  # inches; at DPI pixels: 1200 x 650
DPI = 100
COLUMNS = ["model", "layer", "filters", "dim", "mu_w_mean", "mu_w_std", "mu_r_mean", "mu_r_std"]


def histogram_figure(stats, *, title: str, columns: int = 4, figsize=None, dpi: int = DPI):
    """The mu_w / mu_r histograms of ``stats`` (layer name -> :class:`~theory.LayerPairing`)
    as a :class:`~matplotlib.figure.Figure`, one panel per layer.

    In each panel the learned and the random histogram share their bin edges (bars line
    up), dashed lines mark the two means, the x axis is mu and the y axis the density;
    one legend for the figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    columns = max(1, min(columns, len(stats)))
    rows_n = math.ceil(len(stats) / columns)
    figsize = figsize or (max(3.2 * columns, 7.5), 2.6 * rows_n + 0.8)  # room for the legend
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(rows_n, columns, squeeze=False)
    for index, (ax, (name, layer)) in enumerate(zip(axes.flat, stats.items())):
        edges, density_w, density_r = layer.histogram(bins=20)  # one set of edges
        ax.stairs(density_w, edges, fill=True, color="tab:blue", alpha=0.55)
        ax.stairs(density_r, edges, color="tab:red", linewidth=1.6)
        ax.axvline(layer.mean_w, color="tab:blue", linestyle="--", linewidth=1.2)
        ax.axvline(layer.mean_r, color="tab:red", linestyle="--", linewidth=1.2)
        ax.set_title(f"{name}: mean μ_w {layer.mean_w:.2f}, μ_r {layer.mean_r:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("μ (cosine with the pairing filter)", fontsize=8)
        if index % columns == 0:
            ax.set_ylabel("density", fontsize=8)
    for ax in list(axes.flat)[len(stats) :]:
        ax.set_visible(False)
    handles = [
        Patch(color="tab:blue", alpha=0.55, label="μ_w: learned filters"),
        Line2D([], [], color="tab:red", linewidth=1.6, label="μ_r: Gaussian filters, same shape"),
        Line2D([], [], color="grey", linestyle="--", label="means"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def pairing_figure(session: Session, out, *, number: int, role: str, label: str) -> Result:
    """Figure ``number``: the mu_w / mu_r histograms of every conv layer but the last,
    for the model of ``role``, into ``out/fig{number}_pairing_{role}.png``."""
    from invert.nn.net import conv_layers
    from theory.filter_pairing import layer_pairing

    model = session.model(role)
    layers = list(conv_layers(model))[:-1]  # the last conv is the class layer
    stats = layer_pairing(model, layers=layers, trials=session.sizes.pairing_trials, seed=SEED)
    fig = histogram_figure(
        stats,
        title=f"Fig. {number}: pairing statistic μ per conv layer, AlexNet-layout {label} model",
        figsize=FIGSIZE,
    )  # fmt: skip
    stem = f"fig{number}_pairing_{role.removeprefix('alex_')}"
    name = session.figure_name(stem)
    save_figure(fig, f"{out}/{name}")
    return Result(
        id=f"fig{number}",
        title=f"Figure {number}: pairing histograms mu_w vs mu_r, AlexNet-layout {label} model",
        rows=[{"model": label, **layer.row()} for layer in stats.values()],
        columns=COLUMNS,
        files=[name],
        size=pixel_size(FIGSIZE),
        details={"command": session.reproduce(stem)},
    )


def make(session: Session, out) -> Result:
    """Draw Figure 2 into ``out/fig2_pairing_relu.png``; mu statistics per layer."""
    return pairing_figure(session, out, number=2, role="alex_relu", label="ReLU")


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
