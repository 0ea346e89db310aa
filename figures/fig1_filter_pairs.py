"""Figure 1: conv1 filters beside their pairing filters, ReLU and CReLU models.

Each normalized conv1 filter phi_i is drawn next to its pairing filter
bar-phi_i = argmin_{j != i} <phi_i, phi_j>, with mu_i = <phi_i, bar-phi_i> under the pair
(:func:`theory.filter_pairing.pairing`). The two filters of a pair share one display
scale, 0.5 + 0.5 phi / max(|phi_i|, |bar-phi_i|): mid-grey is zero, so a filter and its
near-negation look like photographic negatives. Pairs are ordered by mu (most opposite
first); a layer with more than :data:`MAX_PAIRS` filters shows that many, evenly spread
over the mu order. The paper shows AlexNet's conv1; we show the ReLU ConvPool-CNN-C
baseline and its CReLU variant trained on the data used. Titles give mean mu_w (learned)
and mean mu_r (Gaussian filters of the same shape): the pairing statistic behind F1.

    python -m figures.fig1_filter_pairs --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig1_filter_pairs"
WIDTH = 13.0  # inches (two blocks of COLUMNS pairs); the height follows the rows
DPI = 100
MAX_PAIRS = 24  # pairs drawn per model
COLUMNS = 4  # pairs per row


def _shown_order(mu: np.ndarray, count: int) -> np.ndarray:
    """Filter indices by ascending mu; ``count`` of them spread evenly over that order."""
    order = np.argsort(mu, kind="stable")
    if len(order) <= count:
        return order
    return order[np.round(np.linspace(0, len(order) - 1, count)).astype(int)]


def _pair_cell(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``filter | gap | pair`` (kh x (2 kw + 1) x c) on the pair's shared scale."""
    scale = max(np.abs(a).max(), np.abs(b).max()) or 1.0
    gap = np.ones((a.shape[0], 1, a.shape[2]))
    return np.concatenate([0.5 + 0.5 * a / scale, gap, 0.5 + 0.5 * b / scale], axis=1)


def draw_pairs(holder, weight, *, title: str, max_pairs: int = MAX_PAIRS, columns=COLUMNS):
    """Draw a conv1 weight's filters beside their pairs into ``holder`` (a figure or a
    subfigure): one axes per pair, labelled ``#i | #j`` and ``mu``; returns the axes."""
    from theory.filter_pairing import pairing

    weight = np.asarray(weight.detach().cpu().double() if hasattr(weight, "detach") else weight)
    n, channels = weight.shape[:2]
    result = pairing(weight)
    unit = weight.reshape(n, -1) / np.linalg.norm(weight.reshape(n, -1), axis=1, keepdims=True)
    filters = unit.reshape(weight.shape).transpose(0, 2, 3, 1)  # n x kh x kw x c
    shown = _shown_order(result.mu, max_pairs)
    rows = math.ceil(len(shown) / columns)
    axes = holder.subplots(rows, columns, squeeze=False).ravel()
    for ax, i in zip(axes, shown):
        j = int(result.pair[i])
        cell = _pair_cell(filters[i], filters[j])
        if channels == 1:
            ax.imshow(cell[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.clip(cell, 0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"#{i} | #{j}\nμ = {result.mu[i]:.2f}", fontsize=8, labelpad=2)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    every = "" if len(shown) == n else f"; {len(shown)} of {n}, spread over the μ order"
    holder.suptitle(f"{title}{every}", fontsize=10)
    return list(axes[: len(shown)])


def figure_size(filters: int, *, width: float = WIDTH) -> tuple[float, float]:
    """Inches of a pairs figure of blocks with ``filters`` filters: 1.25 in per row.

    Examples
    --------
    >>> figure_size(12), figure_size(96)  # 3 rows of 4 pairs; at most MAX_PAIRS: 6 rows
    ((13.0, 4.75), (13.0, 8.5))
    """
    rows = math.ceil(min(filters, MAX_PAIRS) / COLUMNS)
    return (width, 1.25 * rows + 1.0)


def pairs_figure(panels, *, figsize=None, dpi=DPI, title: str = "Fig. 1: "):
    """Figure 1 as a :class:`~matplotlib.figure.Figure`: one block of pairs per
    ``(label, weight, stats)`` panel (``stats``: a :class:`~theory.LayerPairing`);
    ``title`` starts the figure's title."""
    from matplotlib.figure import Figure

    figsize = figsize or figure_size(max(stats.shape[0] for _, _, stats in panels))
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    blocks = fig.subfigures(1, len(panels), wspace=0.04, squeeze=False).ravel()
    for block, (label, weight, stats) in zip(blocks, panels):
        kh, kw = stats.shape[2:]
        draw_pairs(block, weight, title=(
            f"{label} {stats.layer}: {stats.shape[0]} filters {kh}x{kw}, each beside its pair\n"
            f"mean μ_w = {stats.mean_w:.3f} (learned), μ_r = {stats.mean_r:.3f} (random)"
        ))  # fmt: skip
    fig.suptitle(
        f"{title}First-layer filters (left of each pair) beside their pairing "
        f"filters (right),\nordered by μ, the cosine of the two",
        fontsize=11,
    )
    return fig


def make(session: Session, out) -> Result:
    """Draw Figure 1 into ``out/fig1_filter_pairs.png``; the pairing numbers of conv1."""
    from theory.filter_pairing import layer_pairing

    panels, rows = [], []
    for seed in session.seed_list():
        for role, label in (("relu", "ReLU"), ("crelu", "CReLU")):
            model = session.model(role, seed)
            stats = layer_pairing(
                model, layers="conv1", trials=session.sizes.pairing_trials, seed=SEED
            )["conv1"]
            if seed == SEED:  # the figure shows the first seed's filters
                panels.append((label, model.conv1.conv.weight.detach().cpu(), stats))
            rows.append({"model": label, "seed": seed, **stats.row()})
    figsize = figure_size(max(stats.shape[0] for _, _, stats in panels))
    save_figure(pairs_figure(panels, figsize=figsize), f"{out}/{STEM}.png")
    return Result(
        id="fig1",
        title="Figure 1: conv1 filter pairs (ReLU and CReLU models)",
        rows=rows,
        files=[f"{STEM}.png"],
        size=pixel_size(figsize, DPI),
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
