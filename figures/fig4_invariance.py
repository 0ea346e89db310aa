"""Figure 4: invariance scores per conv layer, ReLU model against CReLU model.

Scores of Goodfellow et al. (2009) as defined in :mod:`theory.invariance` (ours, the
paper's supplement D being unavailable): a unit is a channel at the centre of a layer's
output, its threshold gives a 1% global firing rate G over natural images, its local
firing rate L is the share of translated (1-4 px) and rotated (5-30 degrees) versions of
its firing images on which it still fires, S = L / G, and a layer scores the mean of its
top 20% units. Images: crops of the embedded photographs for ``textures`` (with room
for the transformations), else the first test images of the data. The paper finds
CReLU above ReLU at (nearly) every layer, with jumps after max-pooling (dashed lines).

With several seeds the figure and the table show the mean over the seeds, the error bars
and ``*_sd`` columns their standard deviation, and ``crelu_minus_relu`` the mean of the
per-seed differences of matched runs with its standard error and what the paired rule
of F3 (:func:`figures.findings.paired_rule`) decides: the numbers the verdict reads.

    python -m figures.fig4_invariance --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

import numpy as np

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig4_invariance"
FIGSIZE = (8.0, 4.5)  # inches; at DPI pixels: 800 x 450
DPI = 100
COLUMNS = ["layer", "relu", "relu_sd", "crelu", "crelu_sd", "crelu_minus_relu",
           "difference_se", "paired_rule", "relu_translation", "crelu_translation",
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


def _scores(session: Session, images) -> tuple[dict, list[str]]:
    """Invariance scores of the ReLU and CReLU models of every seed, and their layers."""
    from invert.nn.net import conv_layers
    from theory.invariance import invariance_scores

    runs, layers = {}, None
    for seed in session.seed_list():
        for role in ("relu", "crelu"):
            model = session.model(role, seed)
            layers = list(conv_layers(model))[:-1]  # the last conv is the class layer
            runs[role, seed] = invariance_scores(
                model, images, layers=layers, input_size=32,
                n_images=session.sizes.invariance_images, device=session.device, seed=SEED,
            )  # fmt: skip
    return runs, layers


def _rows(runs: dict, layers: list[str], seeds: list[int]) -> list[dict]:
    """One row per layer: each model's mean score over the seeds, and the paired rule."""
    from .findings import paired_rule

    rows = []
    for name in layers:
        row = {"layer": name}
        for role in ("relu", "crelu"):
            values = [runs[role, s].scores[name] for s in seeds]
            row[role] = float(np.mean(values))
            row[f"{role}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            row[f"{role}_seeds"] = values
        rule = paired_rule([c - r for c, r in zip(row["crelu_seeds"], row["relu_seeds"])])
        row["crelu_minus_relu"] = rule["mean"]
        row["difference_se"] = rule["se"]
        row["paired_rule"] = {True: "CReLU >= ReLU", False: "CReLU < ReLU"}.get(
            rule["decision"], "undecided"
        )
        for family in ("translation", "rotation"):
            for role in ("relu", "crelu"):
                row[f"{role}_{family}"] = float(
                    np.mean([runs[role, s].family_scores[family][name] for s in seeds])
                )
        rows.append(row)
    return rows


def _draw(session: Session, rows: list[dict], layers: list[str], seeds: list[int], first):
    """The figure: each model's scores per layer, max-pooling as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    x = list(range(len(layers)))
    many = len(seeds) > 1
    for role, marker, color, label in (("relu", "o-", "tab:blue", "ReLU"),
                                       ("crelu", "s-", "tab:red", "CReLU")):  # fmt: skip
        spread = [r[f"{role}_sd"] for r in rows] if many else None
        shown = f"{label}, mean of {len(seeds)} seeds ± s.d." if many else label
        ax.errorbar(x, [r[role] for r in rows], yerr=spread, fmt=marker, color=color,
                    capsize=3, label=shown)  # fmt: skip
    for xi, r in zip(x, rows):  # the paired rule's decision per layer
        if r["paired_rule"] != "undecided":
            mark = "▲" if r["paired_rule"] == "CReLU >= ReLU" else "▼"
            ax.annotate(mark, (xi, max(r["relu"], r["crelu"])), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=9)  # fmt: skip
    for gap in _pool_gaps(session.model("relu"), layers):
        ax.axvline(gap, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, layers)
    ax.set_ylabel("invariance score (top 20% units)")
    ax.set_xlabel("conv layer")
    decided = " (▲/▼: paired rule shows CReLU above/below)" if many else ""
    ax.set_title(
        f"Fig. 4: invariance scores, {first.n_images} images, "
        f"{len(first.transformations)} transformations\n(dashed: max-pooling){decided}",
        fontsize=10,
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def make(session: Session, out) -> Result:
    """Draw Figure 4 into ``out/fig4_invariance.png``; layer scores of both models."""
    seeds = session.seed_list()
    runs, layers = _scores(session, _images(session))
    first = runs["relu", SEED]
    rows = _rows(runs, layers, seeds)
    file = session.figure_name(STEM)
    save_figure(_draw(session, rows, layers, seeds, first), f"{out}/{file}")
    many = len(seeds) > 1
    return Result(
        id="fig4",
        title=f"Figure 4: invariance scores per layer, ReLU vs CReLU (mean over {len(seeds)} "
        f"seed{'s' if many else ''})",
        rows=rows,
        columns=COLUMNS,
        files=[file],
        size=pixel_size(FIGSIZE),
        details={
            "images": first.n_images,
            "transformations": len(first.transformations),
            "seeds": seeds,
            "command": session.reproduce(STEM),
        },
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
