"""Figure 4: invariance scores per conv layer, ReLU model against CReLU model.

Scores of Goodfellow et al. (2009) as defined in :mod:`theory.invariance` (ours, the
paper's supplement D being unavailable): a unit is a channel at the centre of a layer's
output, its threshold gives a 1% global firing rate G over natural images, its local
firing rate L is the share of translated (1-4 px) and rotated (5-30 degrees) versions of
its firing images on which it still fires, S = L / G, and a layer scores the mean of its
top 20% units. Images: crops of the embedded photographs for ``textures`` (with room
for the transformations), else the first test images of the data. The paper finds
CReLU above ReLU at (nearly) every layer, with jumps after max-pooling (dashed lines).

    python -m figures.fig4_invariance --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig4_invariance"
FIGSIZE = (8.0, 4.5)  # inches; at DPI pixels: 800 x 450
DPI = 100
COLUMNS = ["layer", "relu", "crelu", "crelu_minus_relu", "relu_translation", "crelu_translation",
           "relu_rotation", "crelu_rotation"]  # fmt: skip


def _images(session: Session):
    """``None`` (the invariance module's own natural crops) for textures, else test images."""
    from invert.data import DataSpec

    if DataSpec.parse(session.data).kind == "textures":
        return None
    test = session.test_set()
    n = min(len(test), session.sizes.invariance_images)
    images = getattr(test, "images", None)
    if images is not None:
        return images[:n]
    import torch

    return torch.stack([test[i][0] for i in range(n)])


def _pool_gaps(model, layers: list[str]) -> list[float]:
    """x positions (between two conv layers) where a max-pooling layer sits."""
    from torch import nn

    order = [name for name, _ in model.named_children()]
    kinds = dict(model.named_children())
    gaps = []
    for i in range(len(layers) - 1):
        a, b = order.index(layers[i]), order.index(layers[i + 1])
        if any(isinstance(kinds[n], nn.MaxPool2d) for n in order[a + 1 : b]):
            gaps.append(i + 0.5)
    return gaps


def make(session: Session, out) -> Result:
    """Draw Figure 4 into ``out/fig4_invariance.png``; layer scores of both models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from invert.nn.net import conv_layers
    from theory.invariance import invariance_scores

    images = _images(session)
    runs, layers = {}, None
    for seed in session.seed_list():
        for role in ("relu", "crelu"):
            model = session.model(role, seed)
            layers = list(conv_layers(model))[:-1]  # the last conv is the class layer
            runs[role, seed] = invariance_scores(
                model, images, layers=layers, input_size=32,
                n_images=session.sizes.invariance_images, device=session.device, seed=SEED,
            )  # fmt: skip
    results = {role: runs[role, SEED] for role in ("relu", "crelu")}  # drawn: the first seed
    rows = []
    for name in layers:
        row = {"layer": name}
        for role in ("relu", "crelu"):
            row[role] = results[role].scores[name]
        row["crelu_minus_relu"] = row["crelu"] - row["relu"]
        for family in ("translation", "rotation"):
            for role in ("relu", "crelu"):
                row[f"{role}_{family}"] = results[role].family_scores[family][name]
        if session.seeds > 1:  # every seed's score, for the findings' seed spread
            for role in ("relu", "crelu"):
                row[f"{role}_seeds"] = [runs[role, s].scores[name] for s in session.seed_list()]
        rows.append(row)

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    x = list(range(len(layers)))
    ax.plot(x, [r["relu"] for r in rows], "o-", color="tab:blue", label="ReLU")
    ax.plot(x, [r["crelu"] for r in rows], "s-", color="tab:red", label="CReLU")
    for gap in _pool_gaps(session.model("relu"), layers):
        ax.axvline(gap, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, layers)
    ax.set_ylabel("invariance score (top 20% units)")
    ax.set_xlabel("conv layer")
    ax.set_title(
        f"Fig. 4: invariance scores, {results['relu'].n_images} images, "
        f"{len(results['relu'].transformations)} transformations (dashed: max-pooling)",
        fontsize=10,
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, f"{out}/{STEM}.png")
    return Result(
        id="fig4",
        title="Figure 4: invariance scores per layer, ReLU vs CReLU",
        rows=rows,
        columns=COLUMNS,
        files=[f"{STEM}.png"],
        size=pixel_size(FIGSIZE, DPI),
        details={
            "images": results["relu"].n_images,
            "transformations": len(results["relu"].transformations),
        },
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
