"""Figure 1: conv1 filters beside their pairing filters, ReLU and CReLU models.

Each normalized conv1 filter phi_i has a pairing filter
bar-phi_i = argmin_{j != i} <phi_i, phi_j>, with mu_i = <phi_i, bar-phi_i>
(:func:`theory.filter_pairing.pairing`). A pair {i, j} is drawn once, however many of its
two filters chose the other (a mutual pair would otherwise appear twice), labelled with
its cosine. The two filters of a pair share one display scale,
0.5 + 0.5 phi / max(|phi_i|, |phi_j|): mid-grey is zero, so a filter and its
near-negation look like photographic negatives. Pairs are ordered by their cosine (most
opposite first); a layer with more than :data:`MAX_PAIRS` distinct pairs shows that many,
evenly spread over that order.

The paper shows AlexNet's conv1 (96 filters of 11x11x3); so do we, on the AlexNet-layout
models ``alexnet64`` and ``alexnet64_crelu`` (:mod:`invert.nn.zoo`) trained on the data
used. Titles give mean mu_w (learned) and mean mu_r (Gaussian filters of the same shape):
the pairing statistic behind F1. The ConvPool-CNN-C conv1 (24 filters of 3x3x3 at the
fast width, where random filters already pair at about -0.36) is reported in a second
table, outside the paper's claim.

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


def distinct_pairs(mu: np.ndarray, pair: np.ndarray) -> list[tuple[int, int, float]]:
    """The unordered pairs ``{i, pair[i]}`` once each, as ``(i, j, mu)`` by ascending mu.

    Examples
    --------
    >>> distinct_pairs(np.array([-0.9, -0.9, -0.5]), np.array([1, 0, 0]))
    [(0, 1, -0.9), (0, 2, -0.5)]
    """
    seen, out = set(), []
    for i in np.argsort(mu, kind="stable"):
        key = tuple(sorted((int(i), int(pair[i]))))
        if key not in seen:
            seen.add(key)
            out.append((key[0], key[1], float(mu[i])))
    return out


def draw_pairs(holder, weight, *, title: str, max_pairs: int = MAX_PAIRS, columns=COLUMNS):
    """Draw a conv1 weight's distinct filter pairs into ``holder`` (a figure or a
    subfigure): one axes per pair, labelled ``#i | #j`` and ``mu``; returns the axes."""
    from theory.filter_pairing import pairing

    weight = np.asarray(weight.detach().cpu().double() if hasattr(weight, "detach") else weight)
    n, channels = weight.shape[:2]
    result = pairing(weight)
    unit = weight.reshape(n, -1) / np.linalg.norm(weight.reshape(n, -1), axis=1, keepdims=True)
    filters = unit.reshape(weight.shape).transpose(0, 2, 3, 1)  # n x kh x kw x c
    pairs = distinct_pairs(result.mu, result.pair)
    shown = [pairs[k] for k in _shown_order(np.array([p[2] for p in pairs]), max_pairs)]
    rows = math.ceil(len(shown) / columns)
    axes = holder.subplots(rows, columns, squeeze=False).ravel()
    for ax, (i, j, mu) in zip(axes, shown):
        cell = _pair_cell(filters[i], filters[j])
        if channels == 1:
            ax.imshow(cell[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.clip(cell, 0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"#{i} | #{j}\nμ = {mu:.2f}", fontsize=8, labelpad=2)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    every = f"\n{len(pairs)} distinct pairs" + (
        "" if len(shown) == len(pairs) else f", {len(shown)} shown, spread over the μ order"
    )
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


#: Columns of the pairing tables (one row per model and seed).
TABLE_COLUMNS = ["model", "seed", "layer", "filters", "dim", "mu_w_mean", "mu_w_std", "mu_r_mean",
           "mu_r_std", "cos_initial"]  # fmt: skip
#: Roles drawn and judged (F1), and the ConvPool-CNN-C roles reported beside them.
PAPER_ROLES = (("alex_relu", "ReLU"), ("alex_crelu", "CReLU"))
CONVPOOL_ROLES = (("relu", "ReLU"), ("crelu", "CReLU"))


def initial_conv1(session: Session, role: str, seed: int):
    """conv1's filters before training: the model rebuilt as training builds it (its initial
    weights depend on the seed only, :func:`invert.train.spec.fit_spec`)."""
    import torch

    from invert.train.spec import INIT, build_model, derived_seed

    name = session.spec(role).split("@")[0]
    torch.manual_seed(derived_seed(seed, 0, INIT))
    model = build_model(name, session.test_set(), session.recipe_for(role), seed=seed)
    return model.conv1.conv.weight.detach()


def mean_cosine(a, b) -> float:
    """Mean over filters of the cosine between ``a[i]`` and ``b[i]``."""
    import torch

    a, b = a.detach().double().cpu().flatten(1), b.detach().double().cpu().flatten(1)
    return float(torch.nn.functional.cosine_similarity(a, b).mean())


def _conv1_rows(session: Session, roles) -> tuple[list[dict], list]:
    from theory.filter_pairing import layer_pairing

    rows, panels = [], []
    for seed in session.seed_list():
        for role, label in roles:
            model = session.model(role, seed)
            stats = layer_pairing(
                model, layers="conv1", trials=session.sizes.pairing_trials, seed=SEED
            )["conv1"]
            if seed == SEED:  # the figure shows the first seed's filters
                panels.append((label, model.conv1.conv.weight.detach().cpu(), stats))
            moved = mean_cosine(initial_conv1(session, role, seed), model.conv1.conv.weight)
            rows.append({"model": label, "seed": seed, "arch": model.arch, **stats.row(),
                         "cos_initial": moved})  # fmt: skip
    return rows, panels


def make(session: Session, out) -> Result:
    """Draw Figure 1 on the AlexNet-layout conv1; the pairing numbers of conv1 of the
    AlexNet-layout models (judged, F1) and of the ConvPool-CNN-C models (reported)."""
    rows, panels = _conv1_rows(session, PAPER_ROLES)
    convpool, _ = _conv1_rows(session, CONVPOOL_ROLES)
    figsize = figure_size(max(stats.shape[0] for _, _, stats in panels))
    name = session.figure_name(STEM)
    save_figure(pairs_figure(panels, figsize=figsize), f"{out}/{name}")
    command = session.reproduce(STEM)
    return Result(
        id="fig1",
        title="Figure 1: conv1 filter pairs, AlexNet-layout ReLU and CReLU models",
        rows=rows,
        columns=TABLE_COLUMNS,
        files=[name],
        size=pixel_size(figsize),
        details={
            "command": command,
            "more_tables": {
                "ConvPool-CNN-C conv1 pairing (outside the paper's claim: its 3x3x3 filters "
                "have 27 numbers, and random ones already pair at about -0.36; not judged)": {
                    "rows": convpool,
                    "columns": TABLE_COLUMNS,
                    "command": command,
                },
            },
        },
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
