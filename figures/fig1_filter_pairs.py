"""Figure 1: conv1 filters beside their pairing filters, ReLU and CReLU models.

Each normalized conv1 filter phi_i is shown next to its pairing filter
bar-phi_i = argmin_{j != i} <phi_i, phi_j> (:func:`theory.filter_pairing.pair_image`); mid-grey
is zero, so a filter and its near-negation look like photographic negatives. The paper
shows AlexNet's conv1; we show the ReLU ConvPool-CNN-C baseline and its CReLU variant
trained on the data used. Titles give mean mu_w (learned) and mean mu_r (Gaussian
filters of the same shape): the pairing statistic behind finding F1.

    python -m figures.fig1_filter_pairs --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig1_filter_pairs"
FIGSIZE = (10.0, 5.0)  # inches; at DPI pixels: 1000 x 500
DPI = 100


def make(session: Session, out) -> Result:
    """Draw Figure 1 into ``out/fig1_filter_pairs.png``; the pairing numbers of conv1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from theory.filter_pairing import layer_pairing, pair_image

    fig, axes = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI)
    rows = []
    for ax, role, label in zip(axes, ("relu", "crelu"), ("ReLU", "CReLU")):
        model = session.model(role)
        stats = layer_pairing(
            model, layers="conv1", trials=session.sizes.pairing_trials, seed=SEED
        )["conv1"]
        weight = model.conv1.conv.weight.detach().cpu()
        ax.imshow(pair_image(weight), interpolation="nearest")
        ax.set_title(
            f"{label} conv1 ({stats.shape[0]} filters {stats.shape[2]}x{stats.shape[3]})\n"
            f"mean mu_w = {stats.mean_w:.3f}, random mu_r = {stats.mean_r:.3f}",
            fontsize=10,
        )
        ax.axis("off")
        rows.append({"model": label, **stats.row()})
    fig.suptitle("Fig. 1: each normalized conv1 filter (left) beside its pairing filter (right)")
    save_figure(fig, f"{out}/{STEM}.png")
    return Result(
        id="fig1",
        title="Figure 1: conv1 filter pairs (ReLU and CReLU models)",
        rows=rows,
        files=[f"{STEM}.png"],
        size=pixel_size(FIGSIZE, DPI),
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
