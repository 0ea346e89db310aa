"""Figure 2: histograms of mu_w (learned) and mu_r (random) per conv layer, ReLU model.

For every conv layer but the class layer, mu_i = <phi_i, bar-phi_i> of the unit-norm
filters (blue) against the same statistic for i.i.d. Gaussian filters of the same shape
and count (red; :func:`theory.filter_pairing.layer_pairing`). The paper's Fig. 2 shows AlexNet,
whose conv1 histogram is centred far left of the random one ("pairs"), the gap closing
with depth; we show the ReLU ConvPool-CNN-C baseline trained on the data used.

    python -m figures.fig2_pairing_relu --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import math
import sys

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig2_pairing_relu"
FIGSIZE = (12.0, 6.0)  # inches; at DPI pixels: 1200 x 600
DPI = 100
COLUMNS = ["model", "layer", "filters", "dim", "mu_w_mean", "mu_w_std", "mu_r_mean", "mu_r_std"]


def pairing_figure(session: Session, out, *, number: int, role: str, label: str) -> Result:
    """Figure ``number``: the mu_w / mu_r histograms of every conv layer but the last,
    for the model of ``role``, into ``out/fig{number}_pairing_{role}.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invert.nn.net import conv_layers
    from theory.filter_pairing import layer_pairing

    model = session.model(role)
    layers = list(conv_layers(model))[:-1]  # the last conv is the class layer
    stats = layer_pairing(model, layers=layers, trials=session.sizes.pairing_trials, seed=SEED)
    columns = 4
    rows_n = math.ceil(len(layers) / columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=FIGSIZE, dpi=DPI, squeeze=False)
    rows = []
    for ax, (name, layer) in zip(axes.flat, stats.items()):
        edges, density_w, density_r = layer.histogram(bins=20)
        ax.stairs(density_r, edges, fill=True, color="tab:red", alpha=0.45, label="mu_r random")
        ax.stairs(density_w, edges, fill=True, color="tab:blue", alpha=0.6, label="mu_w learned")
        ax.set_title(f"{name}: mu_w {layer.mean_w:.2f}, mu_r {layer.mean_r:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        rows.append({"model": label, **layer.row()})
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Fig. {number}: pairing statistic mu per conv layer, {label} model "
        "(blue: learned, red: random)",
        fontsize=11,
    )
    fig.tight_layout()
    stem = f"fig{number}_pairing_{role}"
    save_figure(fig, f"{out}/{stem}.png")
    return Result(
        id=f"fig{number}",
        title=f"Figure {number}: pairing histograms mu_w vs mu_r, {label} model",
        rows=rows,
        columns=COLUMNS,
        files=[f"{stem}.png"],
        size=pixel_size(FIGSIZE, DPI),
    )


def make(session: Session, out) -> Result:
    """Draw Figure 2 into ``out/fig2_pairing_relu.png``; mu statistics per layer."""
    return pairing_figure(session, out, number=2, role="relu", label="ReLU")


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
