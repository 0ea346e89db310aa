"""Figure 5: an image reconstructed from conv1 to conv4 features, CReLU and ReLU models.

Our Algorithm 1 (:func:`invert.reconstruction.reconstruct`, no learning): from a layer's
features, walk back one layer at a time -- CReLU exactly (z = pos - neg), each conv by
minimum-norm least squares, max-pooling through its switches -- in float64. conv1-conv3
of ConvPool-CNN-C come before any pooling, conv4 after the first max-pooling. The CReLU
row is the paper's Fig. 5; the ReLU row (its inactive units give no equation,
``relu="active"``) shows what ReLU throws away. Under each panel: PSNR against the
original (:func:`invert.reconstruction.metrics.reconstruction_metrics`). The table also gives the
relative error and the lower frame bound A of each conv on the way (circular boundary,
:func:`theory.frames.checkpoint_frame_bounds`): Proposition 2.1 predicts exact recovery
where every conv on the way is a frame (A > 0) and no pooling intervenes (finding F2).

    python -m figures.fig5_reconstructions --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import copy
import math
import sys
import warnings

import numpy as np

from .common import SEED, Session, run_standalone, save_figure

STEM = "fig5_reconstructions"
FIGSIZE = (10.0, 4.8)  # inches; at DPI pixels: 1000 x 480
DPI = 100
LAYERS = ("conv1", "conv2", "conv3", "conv4")
COLUMNS = ["model", "layer", "pooling_before", "A_layer", "frame_path", "rel_error", "psnr",
           "ssim", "converged"]  # fmt: skip


def pick_images(test_set, count: int, *, candidates: int = 16, seed: int = SEED):
    """The ``count`` most varied (largest pixel std) of ``candidates`` seeded test images."""
    import torch

    rng = np.random.default_rng(seed)
    pool = rng.choice(len(test_set), size=min(candidates, len(test_set)), replace=False)
    images = torch.stack([test_set[int(i)][0] for i in pool])
    order = torch.argsort(images.flatten(1).std(dim=1), descending=True)[:count]
    return images[order], [int(pool[int(i)]) for i in order]


def _psnr_label(value: float) -> str:
    if not math.isfinite(value):
        return "PSNR inf (exact)"
    if value > 100:
        return "PSNR > 100 dB"
    return f"PSNR {value:.1f} dB"


def _reconstruct_model(session: Session, role: str, x) -> tuple[list[dict], list]:
    import torch
    from torch import nn

    from invert.nn.net import conv_layers
    from invert.reconstruction import features
    from invert.reconstruction import reconstruct_layerwise as reconstruct
    from invert.reconstruction.metrics import reconstruction_metrics
    from theory.frames import checkpoint_frame_bounds

    model = copy.deepcopy(session.model(role)).double().eval()
    x = x.to(model.conv1.conv.weight.device, torch.float64)
    bounds = checkpoint_frame_bounds(
        model, x.shape[-1], padding="circular", layers=list(LAYERS), random_baseline=False,
        device=session.device,
    )  # fmt: skip
    a_of = {row["layer"]: row for row in bounds}
    modules = dict(model.named_modules())
    conv_names = {id(conv): name for name, conv in conv_layers(model).items()}
    rows, images = [], []
    for layer in LAYERS:
        feats = features(model, x, layer=layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported in the table
            rec = reconstruct(
                model, feats, max_iter=session.sizes.reconstruction_max_iter,
                device=session.device,
            )  # fmt: skip
            metrics = reconstruction_metrics(model, x, rec, projection=False)
        convs = [
            conv_names[id(modules[s.name])]
            for s in feats.steps
            if id(modules[s.name]) in conv_names
        ]
        pooled = any(isinstance(modules[s.name], nn.MaxPool2d) for s in feats.steps)
        path_a = [a_of[c]["A"] for c in convs]
        frame_path = all(a is not None and a > a_of[c]["tol"] for a, c in zip(path_a, convs))
        rows.append({
            "model": "CReLU" if role == "crelu" else "ReLU",
            "layer": layer,
            "pooling_before": pooled,
            "A_layer": a_of[layer]["A"],
            "A_path": path_a,
            "frame_path": frame_path,
            "rel_error": float(np.mean([m["relative_error"] for m in metrics])),
            "psnr": float(np.mean([m["psnr"] for m in metrics])),
            "ssim": float(np.mean([m["ssim"] for m in metrics])),
            "converged": rec.converged,
        })  # fmt: skip
        images.append(rec.image[0].detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy())
    return rows, images


def main(out, *, session: Session | None = None, **options) -> dict:
    """Draw Figure 5 into ``out/fig5_reconstructions.png``; errors and PSNR per layer.

    Parameters
    ----------
    out : path
        Existing output folder.
    session : Session, optional
        Shared models and settings; default ``Session(**options)``.
    **options
        ``data``, ``recipe``, ``cache_dir``, ``device`` for a new session.

    Returns
    -------
    dict
        ``id``, ``title``, ``files``, ``rows`` (one per model and layer: pooling on the
        way, frame bounds, relative error, PSNR, SSIM, convergence), ``test_indices``.

    Examples
    --------
    >>> main("figs", recipe="tiny")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    session = session or Session(**options)
    x, indices = pick_images(session.test_set(), session.sizes.reconstruction_images)
    x = x.double()
    fig, axes = plt.subplots(2, 1 + len(LAYERS), figsize=FIGSIZE, dpi=DPI)
    rows = []
    for r, role in enumerate(("crelu", "relu")):
        model_rows, images = _reconstruct_model(session, role, x)
        rows += model_rows
        panels = [x[0].float().permute(1, 2, 0).numpy()] + images
        labels = ["original"] + [_psnr_label(row["psnr"]) for row in model_rows]
        titles = ["input"] + list(LAYERS)
        for c, (ax, image) in enumerate(zip(axes[r], panels)):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(labels[c], fontsize=9)
            ax.set_title(titles[c] if r == 0 else "", fontsize=10)
        axes[r][0].set_ylabel("CReLU" if role == "crelu" else "ReLU", fontsize=11)
    fig.suptitle("Fig. 5: reconstructions from conv1-conv4 features (linear, no learning)")
    fig.tight_layout()
    save_figure(fig, f"{out}/{STEM}.png")
    return {
        "id": "fig5",
        "title": "Figure 5: reconstructions from conv1-conv4, CReLU and ReLU models",
        "files": [f"{STEM}.png"],
        "size": [int(FIGSIZE[1] * DPI), int(FIGSIZE[0] * DPI)],
        "test_indices": indices,
        "columns": COLUMNS,
        "rows": rows,
    }


if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
