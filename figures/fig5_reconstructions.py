"""Figure 5: a natural image reconstructed from conv1 to conv4 features, CReLU and ReLU.

Two strategies, both with no learning and in float64 (:func:`invert.reconstruct`):

* **layer-wise**, our Algorithm 1 (the paper's): from a layer's features, walk back one
  layer at a time -- CReLU exactly (z = pos - neg), each conv by minimum-norm least
  squares, max-pooling through its switches. The CReLU row is the paper's Fig. 5; the
  ReLU row (inactive units give no equation, ``relu="active"``) shows what ReLU throws
  away layer by layer;
* **joint** (beyond the paper): Gauss-Newton on the whole map from the image to the
  layer at once, max-pooling switches held at the recorded ones, started at the
  layer-wise estimate; its certificate (the frame bounds of the stack at the solution,
  ``A_network``) says where the features determine the image (finding F6).

conv1-conv3 of ConvPool-CNN-C come before any pooling, conv4 after the first max-pooling.

The inputs are photographs with content, :data:`IMAGES`, one of them from outside the
training sources (as ``crelu reconstruct --image``
prepares it: shorter side resized, centre crop), at the models' input size and, since
the models are fully convolutional up to their global pooling, once more at
``reconstruction_large_size`` pixels (:class:`~figures.common.AnalysisSizes`), where
more of it can be seen. With ``reconstruction_images > 1`` the table's numbers are
means over that image and the most varied test images. Under each panel: PSNR against
the original (one cap convention, :func:`invert.display.psnr_text`). The
table also gives the relative error and the lower frame bound A of each conv on the way
(circular boundary, :func:`theory.frames.checkpoint_frame_bounds`): Proposition 2.1
predicts exact recovery where every conv on the way is a frame (A > 0) and no pooling
intervenes (finding F2, judged on the input-size rows).

    python -m figures.fig5_reconstructions --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np

from .common import SEED, Result, Session, pixel_size, run_standalone, save_figure, script

STEM = "fig5_reconstructions"
FIGSIZE = (10.0, 9.0)  # inches; at DPI pixels: 1000 x 900
DPI = 100
LAYERS = ("conv1", "conv2", "conv3", "conv4")
#: The photographs Fig. 5 reconstructs (shipped by scikit-image and matplotlib; nothing
#: is downloaded): the astronaut is one of the ``textures`` sources (a training class),
#: Grace Hopper's portrait (matplotlib's sample data) is not. F2 and F6 are judged on each.
IMAGES = ("skimage:astronaut", "matplotlib:grace_hopper.jpg")
#: The photograph of the larger input (and of the figure's first rows).
IMAGE = IMAGES[0]
COLUMNS = ["image", "model", "strategy", "layer", "pooling_before", "A_layer", "frame_path",
           "rel_error", "psnr", "ssim", "A_network", "unique", "converged"]  # fmt: skip
LARGE_COLUMNS = ["model", "input", "layer", "rel_error", "psnr", "ssim", "converged"]
ROLES = (("crelu", "CReLU"), ("relu", "ReLU"))
STRATEGIES = ("layerwise", "joint")


def pick_images(test_set, count: int, *, candidates: int = 16, seed: int = SEED):
    """The ``count`` most varied (largest pixel std) of ``candidates`` seeded test images."""
    import torch

    rng = np.random.default_rng(seed)
    pool = rng.choice(len(test_set), size=min(candidates, len(test_set)), replace=False)
    images = torch.stack([test_set[int(i)][0] for i in pool])
    order = torch.argsort(images.flatten(1).std(dim=1), descending=True)[:count]
    return images[order], [int(pool[int(i)]) for i in order]


def natural_image(size: int, channels: int = 3, source: str = IMAGE):
    """A photograph (``skimage:NAME`` or ``matplotlib:FILE`` of matplotlib's sample data)
    as a ``(1, channels, size, size)`` float64 tensor in [0, 1].

    Examples
    --------
    >>> x = natural_image(32)
    >>> tuple(x.shape), bool(x.std() > 0.1)  # a photograph with content
    ((1, 3, 32, 32), True)
    >>> bool(natural_image(32, source=IMAGES[1]).std() > 0.1)
    True
    """
    import torch

    from invert.data.images import prepare_image, read_image

    if source.startswith("matplotlib:"):
        import matplotlib.cbook

        source = str(matplotlib.cbook.get_sample_data(source.partition(":")[2], asfileobj=False))
    return torch.from_numpy(prepare_image(read_image(source), size, channels))[None]


def _inputs(session: Session, size: int, channels: int, source: str = IMAGE):
    """A photograph, then (for :data:`IMAGE`) ``reconstruction_images - 1`` varied test
    images."""
    import torch

    x = natural_image(size, channels, source)
    if source != IMAGE:
        return x, []
    extra, indices = pick_images(session.test_set(), session.sizes.reconstruction_images - 1)
    if len(extra):
        x = torch.cat([x, extra.double()])
    return x, indices


def _frame_rows(model, x, device) -> dict:
    from theory.frames import checkpoint_frame_bounds

    bounds = checkpoint_frame_bounds(model, x.shape[-1], padding="circular", layers=list(LAYERS),
                                     random_baseline=False, device=device)  # fmt: skip
    return {r.layer: {"A": r.bounds and r.bounds.A, "tol": r.bounds and r.bounds.tol}
            for r in bounds}  # fmt: skip


def _reconstruct_model(session: Session, role: str, x, *, strategy="layerwise", bounds=True):
    """Rows (one per layer, means over the images) and the first image's reconstructions."""
    import torch
    from torch import nn

    from invert.device import cpu_threads
    from invert.nn.net import conv_layers
    from invert.reconstruction import LayerwiseSettings, features, reconstruct
    from invert.reconstruction.metrics import reconstruction_metrics

    model = copy.deepcopy(session.model(role)).double().eval()
    x = x.to(model.conv1.conv.weight.device, torch.float64)
    a_of = _frame_rows(model, x, session.device) if bounds else {}
    modules = dict(model.named_modules())
    conv_names = {id(conv): name for name, conv in conv_layers(model).items()}
    rows, images = [], []
    for layer in LAYERS:
        with cpu_threads(x.shape[-1] * x.shape[-2]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported in the table
            feats = features(model, x, layer=layer)
            walk = LayerwiseSettings(cg_iterations=session.sizes.reconstruction_max_iter)
            rec = reconstruct(model, feats, strategy=strategy, device=session.device,
                              layerwise=walk)  # fmt: skip
            metrics = reconstruction_metrics(model, x, rec, projection=False)
        row = {
            "model": dict(ROLES)[role],
            "strategy": strategy,
            "layer": layer,
            "rel_error": float(np.mean([m["relative_error"] for m in metrics])),
            "psnr": float(np.mean([m["psnr"] for m in metrics])),
            "ssim": float(np.mean([m["ssim"] for m in metrics])),
            "A_network": float(min(rec.certificate.A)),
            "unique": all(rec.certificate.unique),
            "converged": rec.converged,
        }
        if bounds:
            convs = [conv_names[id(modules[s.name])] for s in feats.steps
                     if id(modules[s.name]) in conv_names]  # fmt: skip
            path_a = [a_of[c]["A"] for c in convs]
            row.update(
                pooling_before=any(isinstance(modules[s.name], nn.MaxPool2d) for s in feats.steps),
                A_layer=a_of[layer]["A"], A_path=path_a,
                frame_path=all(a is not None and a > a_of[c]["tol"] for a, c in zip(path_a, convs)),
            )  # fmt: skip
        rows.append(row)
        images.append(rec.image[0].detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy())
    return rows, images


def reconstruction_grid(blocks, *, figsize=FIGSIZE, dpi=DPI):
    """The figure: one row per ``(label, original, images, rows)`` block; the columns are
    the input and the reconstructions from :data:`LAYERS`, labelled with PSNR."""
    from matplotlib.figure import Figure

    from invert.display import psnr_text

    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(len(blocks), 1 + len(LAYERS), squeeze=False)
    for r, (label, original, images, rows) in enumerate(blocks):
        panels = [original] + list(images)
        labels = [f"{original.shape[1]}x{original.shape[0]} input"] + [
            f"PSNR {psnr_text(row['psnr'])}" for row in rows
        ]
        for c, (ax, image) in enumerate(zip(axes[r], panels)):
            ax.imshow(image, interpolation="nearest" if image.shape[0] <= 64 else "antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(labels[c], fontsize=9)
            ax.set_title(("input", *LAYERS)[c] if r == 0 else "", fontsize=10)
        axes[r][0].set_ylabel(label, fontsize=10)
    fig.suptitle("Fig. 5: photographs reconstructed from conv1-conv4 features, layer by "
                 "layer (the paper's) and jointly (no learning)", fontsize=11)  # fmt: skip
    return fig


def make(session: Session, out) -> Result:
    """Draw Figure 5 into ``out/fig5_reconstructions.png``; errors and PSNR per layer."""
    from invert.nn import model_input_size

    size = model_input_size(session.model("crelu")) or 32
    channels = int(session.model("crelu").config.get("in_channels", 3))
    blocks, rows, indices = [], [], []
    for source in IMAGES:
        x, picked = _inputs(session, size, channels, source)
        indices += picked
        shown = x[0].float().permute(1, 2, 0).numpy()
        name = source.partition(":")[2].removesuffix(".jpg")
        for role, label in ROLES:
            for strategy in STRATEGIES:
                model_rows, images = _reconstruct_model(session, role, x, strategy=strategy)
                model_rows = [{"image": name, **row} for row in model_rows]
                rows += model_rows
                blocks.append((f"{name}\n{label}, {strategy}", shown, images, model_rows))
    large, details = session.sizes.reconstruction_large_size, {"test_indices": indices}
    if large and large != size:
        big = natural_image(large, channels)
        extra = []
        for role, label in ROLES:  # layer-wise: a joint solve costs minutes at this size
            model_rows, images = _reconstruct_model(session, role, big, bounds=False)
            for row in model_rows:
                row["input"] = f"{large}x{large}"
            extra += model_rows
            original = big[0].float().permute(1, 2, 0).numpy()
            blocks.append((f"{label}, layer-wise, {large} px", original, images, model_rows))
        details["more_tables"] = {f"The same at {large}x{large} pixels": {
            "columns": LARGE_COLUMNS, "rows": extra}}  # fmt: skip
    figsize = (FIGSIZE[0], FIGSIZE[1] * len(blocks) / 4)
    file = session.figure_name(STEM)
    save_figure(reconstruction_grid(blocks, figsize=figsize), f"{out}/{file}")
    return Result(
        id="fig5",
        title=f"Figure 5: {len(IMAGES)} photographs reconstructed from conv1-conv4, CReLU and "
        f"ReLU models",
        rows=rows,
        columns=COLUMNS,
        files=[file],
        size=pixel_size(figsize),
        details={
            **details,
            "image": IMAGE,
            "images": list(IMAGES),
            "command": session.reproduce(STEM),
        },  # fmt: skip
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
