"""Invariance scores of network units (Goodfellow et al. 2009; Section 4.2, Figure 4).

The paper measures invariance with the protocol of Goodfellow, Lee, Le, Saxe and Ng,
"Measuring invariances in deep networks" (NIPS 2009); its own details (supplement D)
are unavailable, so the following definitions are **ours**:

* **Unit**: one channel of a layer's output at the central spatial position
  ``(H // 2, W // 2)`` (for an even size, the lower-right of the four central
  pixels). A layer with 2-D output ``N x F`` has one unit per feature.
* **Threshold**: with ``N`` untransformed images and firing rate ``r``, let
  ``k = ceil(r N)`` and ``t`` the ``k``-th largest response of the unit. A response
  ``v`` *fires* with weight ``f(v) = 1`` if ``v > t``, ``0`` if ``v < t`` and
  ``p = (k - a) / b`` if ``v == t``, where ``a`` and ``b`` count the images above and
  at the threshold. This is the expected outcome of breaking ties at random (a
  randomised threshold), and it makes the global firing rate exactly
  ``G = sum_n f(v_n) / N = k / N`` (within one image of ``r N``) whatever the ties:
  ReLU units that are positive on fewer than ``k`` images, and dead units, tie at
  ``t = 0``. Without ties it is plain "fires iff ``v >= t``" on the top ``k``.
* **Local firing rate**: ``L = sum_n f(v_n) g_n / sum_n f(v_n)`` with
  ``g_n = mean_tau f(v_{n, tau})`` the firing rate over the transformed versions
  ``tau`` of image ``n``: over the images on which the unit fires, the fraction of
  their transformations on which it still fires. A unit that fires at random has
  ``L = G`` (score 1); a dead unit also scores 1, so it never ranks as invariant.
* **Score** ``S = L / G``; **layer score**: the mean of the top
  ``ceil(top_fraction * units)`` scores. Per family (translations, rotations) the
  same with ``g_n`` over that family's transformations only; the overall ``L``
  pools all transformations, each counting once.

Transformations act on the *large* image and the model sees the central
``input_size`` crop, so a translation brings real image content in rather than a
border. Where the image is too small for that, the missing pixels come from the
``boundary`` rule (reflection by default; ``"circular"`` makes a translation exactly
:func:`torch.roll`). Translations are integer crops (no interpolation); rotations
about the crop centre, counter-clockwise for positive angles (as
:func:`skimage.transform.rotate`), resample bilinearly with
:func:`torch.nn.functional.grid_sample`. The identity is not among the default
transformations.

Defaults: translations by ``±d, ±2d, ±3d, ±4d`` pixels horizontally and vertically
(16 shifts) with ``d = max(1, round(input_size / 32))`` (1-4 px for 32 x 32 inputs,
7-28 px for 224 x 224); rotations by ``±5, ±10, ..., ±30`` degrees (12 angles).

Computation: one pass over the untransformed images gives the thresholds; a second
pass sends every image on which some unit fires through the model with all its
transformed versions at once, in batches, stopping at the deepest requested layer,
on the GPU when there is one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from invert.data import natural_images
from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.nn import conv_layers, layer_outputs, model_graph, model_input_size
from invert.progress import progress_bar

__all__ = [
    "InvarianceResult",
    "InvarianceScore",
    "Transformations",
    "invariance_scores",
    "firing_weights",
    "transform_crops",
]

DEFAULT_ROTATIONS = (-30, -25, -20, -15, -10, -5, 5, 10, 15, 20, 25, 30)
_BOUNDARIES = {"reflect": "reflect", "circular": "circular", "replicate": "replicate"}
_BOUNDARY_NAMES = ("reflect", "circular", "replicate", "zeros", "error")


# --------------------------------------------------------------------------------------
# Thresholds and firing (the mathematics)
# --------------------------------------------------------------------------------------


def _firing_count(firing_rate: float, n: int) -> int:
    # round away float noise first: 0.01 * 300 is 3.0000000000000004, not above 3
    return max(1, math.ceil(round(firing_rate * n, 9)))


def firing_weights(responses: torch.Tensor, firing_rate: float):
    """Thresholds and firing weights of units for a global firing rate.

    Parameters
    ----------
    responses : torch.Tensor, shape (N, units)
        Responses of each unit to ``N`` untransformed images.
    firing_rate : float
        Requested global firing rate ``r`` in (0, 1).

    Returns
    -------
    threshold : torch.Tensor, shape (units,)
        ``t``, the ``k``-th largest response, ``k = ceil(r N)``.
    tie_weight : torch.Tensor of float64, shape (units,)
        ``p``, the firing weight of a response equal to ``t``.
    weights : torch.Tensor of float64, shape (N, units)
        ``f(v)``: 1 above ``t``, ``p`` at ``t``, 0 below. Each column sums to ``k``.

    Examples
    --------
    >>> import torch
    >>> v = torch.tensor([[3.0], [1.0], [1.0], [1.0], [0.0]])
    >>> t, p, w = firing_weights(v, 0.4)  # k = 2: 3 fires, one of the three 1s
    >>> t.item(), round(p.item(), 4), w.flatten().tolist()[:2]
    (1.0, 0.3333, [1.0, 0.3333333333333333])
    >>> round(float(w.sum()), 12)
    2.0
    """
    n = responses.shape[0]
    k = _firing_count(firing_rate, n)
    threshold = torch.topk(responses, k, dim=0).values[-1]
    above = responses > threshold
    at = responses == threshold
    count_above = above.sum(0).to(torch.float64)
    count_at = at.sum(0).to(torch.float64)
    tie_weight = (k - count_above) / count_at
    return threshold, tie_weight, _weights(responses, threshold, tie_weight)


def _weights(responses, threshold, tie_weight):
    """f(v) for responses of any leading shape against per-unit thresholds."""
    above = (responses > threshold).to(torch.float64)
    at = (responses == threshold).to(torch.float64)
    return above + at * tie_weight


# --------------------------------------------------------------------------------------
# Transformations
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transformations:
    """The transformed versions of each image, by family.

    Attributes
    ----------
    shifts : tuple of (int, int)
        ``(dy, dx)`` translations in pixels; content moves down by ``dy`` and right
        by ``dx``, as ``torch.roll(x, (dy, dx), dims=(-2, -1))``.
    angles : tuple of float
        In-plane rotations in degrees, counter-clockwise.
    """

    shifts: tuple[tuple[int, int], ...] = ()
    angles: tuple[float, ...] = ()

    @classmethod
    def build(cls, translations, rotations, input_size: tuple[int, int]) -> Transformations:
        if translations is None:
            step = max(1, round(min(input_size) / 32))
            translations = [s * step * m for m in (1, 2, 3, 4) for s in (-1, 1)]
        shifts: list[tuple[int, int]] = []
        for item in translations:
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                shifts += [(0, int(item)), (int(item), 0)]
            elif (
                isinstance(item, Sequence)
                and len(item) == 2
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in item)
            ):
                shifts.append((int(item[0]), int(item[1])))
            else:
                raise UserTypeError(
                    "translations must be integer pixel offsets (each applied horizontally "
                    f"and vertically) or (dy, dx) integer pairs; got {item!r}"
                )
        angles = DEFAULT_ROTATIONS if rotations is None else rotations
        try:
            angles = tuple(float(a) for a in angles)
        except (TypeError, ValueError):
            raise UserTypeError(
                f"rotations must be a sequence of angles in degrees; got {rotations!r}"
            ) from None
        if not all(math.isfinite(a) for a in angles):
            raise UserError("rotation angles must be finite")
        if not shifts and not angles:
            raise UserError("no transformation given: pass some translations or rotations")
        return cls(tuple(shifts), angles)

    @property
    def families(self) -> OrderedDict[str, slice]:
        """Family name -> slice of the transformation axis."""
        fam: OrderedDict[str, slice] = OrderedDict()
        if self.shifts:
            fam["translation"] = slice(0, len(self.shifts))
        if self.angles:
            fam["rotation"] = slice(len(self.shifts), len(self.shifts) + len(self.angles))
        return fam

    def __len__(self) -> int:
        return len(self.shifts) + len(self.angles)

    def margin(self, size: tuple[int, int]) -> int:
        """Pixels needed on every side of a centred crop of ``size``."""
        need = max((max(abs(dy), abs(dx)) for dy, dx in self.shifts), default=0)
        h, w = size
        for angle in self.angles:
            c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
            # bilinear samples reach the pixel centres around the rotated crop corners
            reach_x = (w - 1) / 2 * c + (h - 1) / 2 * s + 0.5 - w / 2
            reach_y = (w - 1) / 2 * s + (h - 1) / 2 * c + 0.5 - h / 2
            need = max(need, math.ceil(max(reach_x, reach_y) + 1 - 1e-9))
        return need


class _Cropper:
    """Pads images where needed and cuts the base and transformed crops."""

    def __init__(self, image_size, input_size, transforms: Transformations, boundary: str):
        (height, width), (self.h, self.w) = image_size, input_size
        if self.h > height or self.w > width:
            raise UserError(
                f"images of {height} x {width} are smaller than the model input "
                f"{self.h} x {self.w}; pass larger images or a smaller input_size"
            )
        self.transforms = transforms
        need = transforms.margin((self.h, self.w))
        top, left = (height - self.h) // 2, (width - self.w) // 2
        bottom, right = height - self.h - top, width - self.w - left
        pads = [max(0, need - avail) for avail in (left, right, top, bottom)]
        if any(pads) and boundary == "error":
            raise UserError(
                f"the transformations need {need} pixels around the central "
                f"{self.h} x {self.w} crop: images of at least {self.h + 2 * need} x "
                f"{self.w + 2 * need}; got {height} x {width} (or choose a boundary rule "
                "such as 'reflect')"
            )
        if boundary in ("reflect", "circular") and max(pads) > min(height, width) - (
            boundary == "reflect"
        ):
            raise UserError(
                f"{boundary} padding of {max(pads)} pixels needs images larger than "
                f"{height} x {width}; use smaller transformations or boundary='zeros'"
            )
        self.pads, self.boundary = pads, boundary
        self.top, self.left = top + pads[2], left + pads[0]
        self.padded = (height + pads[2] + pads[3], width + pads[0] + pads[1])
        self.theta = self._rotation_matrices()

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        if not any(self.pads):
            return images
        if self.boundary == "zeros":
            return F.pad(images, self.pads)
        return F.pad(images, self.pads, mode=_BOUNDARIES[self.boundary])

    def base(self, padded: torch.Tensor) -> torch.Tensor:
        return padded[..., self.top : self.top + self.h, self.left : self.left + self.w]

    def _rotation_matrices(self) -> torch.Tensor | None:
        if not self.transforms.angles:
            return None
        big_h, big_w = self.padded
        # output pixel at offset (u, v) from the crop centre (y down) samples the input
        # at centre + (c u - s v, s u + c v): the content turns counter-clockwise
        cx, cy = self.left + self.w / 2, self.top + self.h / 2
        rows = []
        for angle in self.transforms.angles:
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            # affine_grid maps normalized output coords (x_o, y_o) in [-1, 1] of the crop
            # to normalized input coords of the padded image
            rows.append(
                [
                    [c * self.w / big_w, -s * self.h / big_w, 2 * cx / big_w - 1],
                    [s * self.w / big_h, c * self.h / big_h, 2 * cy / big_h - 1],
                ]
            )
        return torch.tensor(rows, dtype=torch.float64)

    def transformed(self, padded: torch.Tensor) -> torch.Tensor:
        """All transformed crops: (B, T, C, h, w)."""
        b, ch = padded.shape[:2]
        out = []
        for dy, dx in self.transforms.shifts:
            top, left = self.top - dy, self.left - dx
            out.append(padded[:, :, top : top + self.h, left : left + self.w])
        if self.theta is not None:
            r = self.theta.shape[0]
            theta = self.theta.to(padded.device, padded.dtype)
            grid = F.affine_grid(theta, [r, 1, self.h, self.w], align_corners=False)
            # rotations along the batch axis, the images' channels side by side
            stacked = padded.reshape(1, b * ch, *padded.shape[2:]).expand(r, -1, -1, -1)
            rotated = F.grid_sample(
                stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out += list(rotated.reshape(r, b, ch, self.h, self.w).unbind(0))
        return torch.stack(out, dim=1)


def transform_crops(
    images,
    *,
    translations=None,
    rotations=None,
    input_size: int | tuple[int, int] | None = None,
    boundary: str = "reflect",
) -> tuple[torch.Tensor, torch.Tensor, Transformations]:
    """The crops a model sees in :func:`invariance_scores`: untransformed and transformed.

    Parameters
    ----------
    images : tensor, array or data set
        As in :func:`invariance_scores`.
    translations, rotations, input_size, boundary
        As in :func:`invariance_scores`.

    Returns
    -------
    base : torch.Tensor, shape (N, C, h, w)
        The central crops.
    moved : torch.Tensor, shape (N, T, C, h, w)
        The crops of the transformed images, translations first.
    transformations : Transformations
        The ``T`` transformations, in that order.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 1, 8, 8)
    >>> base, moved, t = transform_crops(x, translations=[(1, -2)], rotations=(),
    ...                                  boundary="circular")
    >>> bool(torch.equal(moved[:, 0], torch.roll(x, (1, -2), dims=(-2, -1))))
    True
    """
    if boundary not in _BOUNDARY_NAMES:
        raise UserError(f"boundary must be one of {', '.join(_BOUNDARY_NAMES)}; got {boundary!r}")
    images = _as_images(images)
    size = _input_size(None, input_size, images)
    transforms = Transformations.build(translations, rotations, size)
    cropper = _Cropper(tuple(images.shape[-2:]), size, transforms, boundary)
    padded = cropper.pad(images)
    return cropper.base(padded), cropper.transformed(padded), transforms


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def _as_images(images) -> torch.Tensor:
    """A float32 N x C x H x W tensor on the CPU from a tensor, array or data set."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        stored = getattr(images, "images", None)
        if isinstance(stored, torch.Tensor):
            images = stored
        else:
            try:
                items = [item[0] if isinstance(item, (tuple, list)) else item for item in images]
            except TypeError:
                raise UserTypeError(
                    "images must be a tensor or array N x C x H x W, or a data set of "
                    f"(image, label) items; got {type(images).__name__}"
                ) from None
            if not items or not all(isinstance(x, torch.Tensor) for x in items):
                raise UserTypeError("a data set of images must yield torch tensors C x H x W")
            shapes = {tuple(x.shape) for x in items}
            if len(shapes) > 1:
                raise UserError(
                    f"the data set's images differ in size ({len(shapes)} shapes); "
                    "resize or crop them to one size first"
                )
            images = torch.stack(items)
    if images.dim() != 4:
        raise UserError(f"images must be N x C x H x W; got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif not images.is_floating_point():
        raise UserTypeError(f"images must be float in [0, 1] or uint8; got {images.dtype}")
    images = images.detach().to("cpu", torch.float32)
    if not torch.isfinite(images).all():
        raise UserError("images contain NaN or Inf values")
    return images


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------


@dataclass
class InvarianceResult:
    """Invariance scores of the units and layers of a network.

    Attributes
    ----------
    scores : dict of str to float
        Layer score: mean of the top ``top_fraction`` of its units' ``S``.
    G, L, S : dict of str to numpy.ndarray
        Per layer, per unit: global firing rate (``k / N`` for every unit), local
        firing rate over all transformations, score ``L / G``.
    thresholds : dict of str to numpy.ndarray
        Per-unit thresholds ``t``.
    family_scores : dict of str to dict of str to float
        ``family_scores["translation"]["conv3"]``: the layer score using only that
        family's transformations. ``family_L`` and ``family_S`` likewise per unit.
    n_images, firing_count : int
        ``N`` and ``k``.
    transformations : Transformations
        What was applied.
    """

    scores: dict[str, float]
    G: dict[str, np.ndarray]
    L: dict[str, np.ndarray]
    S: dict[str, np.ndarray]
    thresholds: dict[str, np.ndarray]
    family_scores: dict[str, dict[str, float]]
    family_L: dict[str, dict[str, np.ndarray]]
    family_S: dict[str, dict[str, np.ndarray]]
    n_images: int
    firing_count: int
    firing_rate: float
    top_fraction: float
    transformations: Transformations = field(default_factory=Transformations)

    def rows(self) -> list[dict]:
        """One table row per layer: units, score, and the score per family."""
        rows = []
        for layer, score in self.scores.items():
            row = {"layer": layer, "units": int(self.S[layer].size), "score": score}
            for family, per_layer in self.family_scores.items():
                row[family] = per_layer[layer]
            rows.append(row)
        return rows


def _top_mean(values: np.ndarray, fraction: float) -> float:
    count = max(1, math.ceil(round(fraction * values.size, 9)))
    return float(np.sort(values)[::-1][:count].mean())


def _unit_responses(output: torch.Tensor, layer: str) -> torch.Tensor:
    if output.dim() == 4:
        h, w = output.shape[-2:]
        units = output[:, :, h // 2, w // 2]
    elif output.dim() == 2:
        units = output
    else:
        raise UserError(
            f"layer {layer} outputs shape {tuple(output.shape)}; units need N x C x H x W "
            "or N x F outputs"
        )
    if not torch.isfinite(units).all():
        raise UserError(
            f"layer {layer} produced NaN or Inf activations; check the checkpoint's weights "
            "and the input images"
        )
    return units


def _resolve_layers(model: nn.Module, layers) -> list[str]:
    if layers is None:
        names = list(conv_layers(model))
        if not names:
            raise UserError("the model has no conv layer; name the layers to score")
        return names
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise UserError("no layer requested")
    graph = model_graph(model)
    for name in names:
        graph.resolve(name)  # a ValueError listing the valid names, closest first
    return list(dict.fromkeys(names))


def _input_size(model, input_size, images) -> tuple[int, int]:
    if input_size is None:
        if images is not None:
            return tuple(images.shape[-2:])
        size = model_input_size(model) if model is not None else None
        if size:
            return (size, size)
        raise UserError("pass input_size: the model's input size is unknown")
    if isinstance(input_size, (int, np.integer)):
        input_size = (int(input_size), int(input_size))
    if len(input_size) != 2 or min(input_size) < 1:
        raise UserError(f"input_size must be a positive int or (height, width); got {input_size}")
    return tuple(int(s) for s in input_size)


class _Responses:
    """Runs the model on batches and returns the units' responses of each layer."""

    def __init__(self, model, layers, device, dtype, *, channels_last: bool = True):
        self.model, self.layers, self.device, self.dtype = model, layers, device, dtype
        # NHWC inputs make batched convolutions 1.5-2x faster on CPU (oneDNN) and GPU;
        # a model that cannot take them (.view on activations) falls back to NCHW
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.device, self.dtype)
        if self.channels_last:
            try:
                return self._run(x.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                self.channels_last = False
        return self._run(x.contiguous())

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = layer_outputs(self.model, x, self.layers)
        return {name: _unit_responses(out, name) for name, out in outputs.items()}


@dataclass(frozen=True)
class InvarianceScore:
    """The definition of the invariance score (Goodfellow et al. 2009; module notes).

    Parameters
    ----------
    translations : sequence or None
        Integer pixel offsets, each applied horizontally and vertically, or explicit
        ``(dy, dx)`` pairs. ``()`` for none. Default: see the module notes.
    rotations : sequence of float or None
        Angles in degrees (counter-clockwise). ``()`` for none. Default ±5 ... ±30.
    boundary : {"reflect", "circular", "replicate", "zeros", "error"}
        Fills pixels a transformation needs beyond the image; ``"error"`` refuses.
    firing_rate : float
        Global firing rate ``G`` of every unit; needs at least ``ceil(1 / rate)`` images.
    top_fraction : float
        Fraction of the best units averaged into the layer score.

    Examples
    --------
    >>> InvarianceScore(rotations=(), firing_rate=0.05).top_fraction
    0.2
    >>> InvarianceScore(firing_rate=1.5)
    Traceback (most recent call last):
    ...
    invert.errors.UserError: firing_rate must lie strictly between 0 and 1; got 1.5
    """

    translations: Sequence | None = None
    rotations: Sequence[float] | None = None
    boundary: str = "reflect"
    firing_rate: float = 0.01
    top_fraction: float = 0.2

    def __post_init__(self):
        if not 0 < self.firing_rate < 1:
            raise UserError(
                f"firing_rate must lie strictly between 0 and 1; got {self.firing_rate}"
            )
        if not 0 < self.top_fraction <= 1:
            raise UserError(f"top_fraction must lie in (0, 1]; got {self.top_fraction}")
        if self.boundary not in _BOUNDARY_NAMES:
            raise UserError(
                f"boundary must be one of {', '.join(_BOUNDARY_NAMES)}; got {self.boundary!r}"
            )


def invariance_scores(
    model: nn.Module,
    images=None,
    *,
    layers: str | Sequence[str] | None = None,
    score: InvarianceScore | None = None,
    input_size: int | tuple[int, int] | None = None,
    n_images: int = 1000,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
) -> InvarianceResult:
    """Invariance scores of units and layers (Goodfellow et al. 2009); definitions above.

    Parameters
    ----------
    model : nn.Module
        The network, taking images in [0, 1] (zoo models normalise inside). It runs
        in eval mode without gradients, on ``device``; its mode and device are
        restored afterwards.
    images : tensor, array or data set, optional
        ``N x C x H x W`` float images in [0, 1] (or uint8), or a data set of
        ``(image, label)`` items. Images larger than ``input_size`` are transformed
        whole and centre-cropped. Default: ``n_images`` crops of the embedded
        natural photographs (:func:`invert.data.natural_images`), with the margin the
        transformations need.
    layers : str or sequence of str, optional
        Layers to score (default: every conv layer of :func:`invert.nn.net.conv_layers`;
        for zoo models the block outputs ``conv1``, ``conv2`` ..., after the activation).
    score : InvarianceScore, optional
        What the score measures: the transformations, the boundary fill, the firing rate
        and the fraction of units per layer (default ``InvarianceScore()``, the
        paper's definition).
    input_size : int or (int, int), optional
        Size the model sees. Default: the image size, or for ``images=None`` the zoo
        model's native size.
    n_images : int, optional
        Number of default images (only used when ``images`` is None).
    batch_size : int, optional
        Model inputs per forward pass; each pass holds whole images with all their
        transformed versions.
    device : str or torch.device, optional
        ``None``: CUDA when available, else CPU.
    seed : int, optional
        Seed of the default images.
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    InvarianceResult

    Raises
    ------
    ValueError
        Unknown layers (the valid ones are listed), too few images for the firing
        rate (how many are needed), NaN/Inf images or activations, images too small.

    Examples
    --------
    >>> import torch
    >>> from invert.nn.zoo import create_model
    >>> net = create_model("convpool_c_crelu", width=0.125)
    >>> result = invariance_scores(net, torch.rand(100, 3, 40, 40), input_size=32,
    ...                            layers=["conv1", "conv4"],
    ...                            score=InvarianceScore(rotations=()), device="cpu")
    >>> sorted(result.scores), result.firing_count
    (['conv1', 'conv4'], 1)
    >>> float(result.G["conv1"][0])
    0.01
    """
    score = score if score is not None else InvarianceScore()
    if not isinstance(score, InvarianceScore):
        raise UserTypeError(f"score must be an InvarianceScore; got {type(score).__name__}")
    firing_rate, top_fraction = score.firing_rate, score.top_fraction
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer; got {batch_size!r}")
    names = _resolve_layers(model, layers)
    needed = math.ceil(round(1 / firing_rate, 9))
    if images is not None:
        images = _as_images(images)
    size = _input_size(model, input_size, images)
    transforms = Transformations.build(score.translations, score.rotations, size)
    if images is None:
        if n_images < needed:
            raise UserError(
                f"firing_rate={firing_rate} needs at least {needed} images; n_images={n_images}"
            )
        margin = transforms.margin(size)
        crop = (size[0] + 2 * margin, size[1] + 2 * margin)
        images = natural_images(n_images, size=crop, shorter_side=6 * max(size), seed=seed)
    n = images.shape[0]
    if n < needed:
        raise UserError(
            f"firing_rate={firing_rate} needs at least {needed} images (one firing image per "
            f"unit); got {n}"
        )
    cropper = _Cropper(tuple(images.shape[-2:]), size, transforms, score.boundary)
    device = resolve_device(device)
    first = next(iter(model.parameters()), None)
    home = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():
            return _scores(
                _Responses(model, names, device, dtype), images, names, cropper,
                firing_rate, top_fraction, batch_size, progress,
            )  # fmt: skip
    finally:
        model.to(home).train(was_training)


def _batches(indices: torch.Tensor, size: int, progress: bool, desc: str):
    chunks = indices.split(size)
    return progress_bar(progress, chunks, total=len(chunks), desc=desc, unit="batch")


def _firing(responses, images, names, cropper, firing_rate, batch_size, progress):
    """Pass 1: the untransformed images -> per-layer thresholds, ties and firing weights."""
    base: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for idx in _batches(torch.arange(images.shape[0]), batch_size, progress, "thresholds"):
        crops = cropper.base(cropper.pad(images[idx].to(responses.device)))
        for name, units in responses(crops).items():
            base[name].append(units)
    thresholds, ties, weights = {}, {}, {}
    for name in names:
        thresholds[name], ties[name], weights[name] = firing_weights(
            torch.cat(base[name]), firing_rate
        )
    return thresholds, ties, weights


def _scores(responses, images, names, cropper, firing_rate, top_fraction, batch_size, progress):
    n = images.shape[0]
    device = responses.device
    thresholds, ties, weights = _firing(responses, images, names, cropper, firing_rate,
                                        batch_size, progress)  # fmt: skip
    k = _firing_count(firing_rate, n)
    # pass 2: images on which some unit fires, with all their transformed versions
    fires = torch.zeros(n, dtype=torch.bool, device=device)
    for name in names:
        fires |= (weights[name] > 0).any(dim=1)
    active = torch.nonzero(fires).flatten().cpu()
    families = cropper.transforms.families
    count = len(cropper.transforms)
    numerators = {f: {name: 0.0 for name in names} for f in (*families, "all")}
    per_pass = max(1, batch_size // count)
    for idx in _batches(active, per_pass, progress, "transformations"):
        moved = cropper.transformed(cropper.pad(images[idx].to(device)))  # B x T x C x h x w
        out = responses(moved.flatten(0, 1))
        for name, units in out.items():
            fired = _weights(units.reshape(len(idx), count, -1), thresholds[name], ties[name])
            w = weights[name][idx.to(device)]  # B x units
            numerators["all"][name] = numerators["all"][name] + (w * fired.mean(1)).sum(0)
            for family, part in families.items():
                g = fired[:, part].mean(1)
                numerators[family][name] = numerators[family][name] + (w * g).sum(0)
    g_rate = k / n

    def finish(numerator, units):
        local = torch.as_tensor(numerator, dtype=torch.float64).cpu().expand(units) / k
        return local.numpy().copy()

    G, L, S, scores = {}, {}, {}, {}
    family_L = {f: {} for f in families}
    family_S = {f: {} for f in families}
    family_scores = {f: {} for f in families}
    for name in names:
        units = thresholds[name].numel()
        G[name] = np.full(units, g_rate)
        L[name] = finish(numerators["all"][name], units)
        S[name] = L[name] / g_rate
        scores[name] = _top_mean(S[name], top_fraction)
        for family in families:
            family_L[family][name] = finish(numerators[family][name], units)
            family_S[family][name] = family_L[family][name] / g_rate
            family_scores[family][name] = _top_mean(family_S[family][name], top_fraction)
    return InvarianceResult(
        scores=scores,
        G=G,
        L=L,
        S=S,
        thresholds={name: t.cpu().numpy() for name, t in thresholds.items()},
        family_scores=family_scores,
        family_L=family_L,
        family_S=family_S,
        n_images=n,
        firing_count=k,
        firing_rate=firing_rate,
        top_fraction=top_fraction,
        transformations=cropper.transforms,
    )
