"""The paper's evaluation protocols (Section 3): "Single", k-fold "Average" and "Vote", 10-patch.

CIFAR has no validation set, so the paper reports its errors in two ways:

**Single** (:func:`single_protocol`; Goodfellow et al., 2013). Hold out part of the
training set (``holdout``, default 10%, stratified by class), train on the rest while
measuring the loss on the held-out part after every epoch, and note the lowest
held-out loss (the early-stopping point). Then retrain from the same initial weights
on the *whole* training set until the training loss reaches that value, and report
the train and test errors of the retrained model. Ours: "training loss" is the mean
cross-entropy over the whole training set measured like the held-out loss (eval
mode, no augmentation, no dropout), after every epoch; the recipe's schedule and
epoch count are kept, and the run stops after the first epoch whose training loss
is at or below the target (``reached`` is False if the recipe ends first).

**k-fold Average and Vote** (:func:`kfold_protocol`, ``k = 10`` in the paper). Split the
training set into ``k`` folds (:func:`kfold_indices`), train ``k`` models, model ``i``
on all folds but fold ``i`` (its validation fold), and evaluate all of them on the
test set. *Average* is the mean of the ``k`` test errors with its standard error
(sample standard deviation, ``ddof=1``, over ``sqrt(k)``); *Vote* is the test error of
the ensemble whose scores are the ``k`` models' **softmax probabilities averaged**
(:func:`vote`; ours: the paper says "model averaging" without defining the scores).

**10-patch** (:func:`evaluate_ten_crop`; Krizhevsky et al., 2012) for ImageNet-style
data: the images are resized (shorter side 256 for 224-pixel models,
:func:`~invert.data.load_dataset` with ``image_size=256``), and each is scored by
its centre crop alone and by the softmax probabilities averaged over 10 patches --
the four corner crops, the centre crop and their horizontal mirror images
(:func:`ten_crop`) -- giving top-1 and top-5 errors.

Fold assignment (ours, deterministic given ``seed``): the items of each class are
shuffled, the classes are laid end to end, and position ``p`` of that sequence goes
to fold ``p mod k``. The folds partition the data, their sizes differ by at most one,
and so do the counts of each class in the folds (stratification);
``stratified=False`` shuffles all items together instead.

The protocols take the run's settings as one :class:`~invert.train.settings.RunSettings`
(recipe, ``out`` folder, resume, device, progress, seed) and train with
:func:`~invert.train.distributed.make_trainer`, so inside
:func:`invert.train.distributed.distributed` (under ``torchrun``) each model trains
data-parallel; the fold models' test probabilities are then computed on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError, UserTypeError
from invert.progress import say

from .batches import INIT, derived_seed, in_memory
from .distributed import current_context, is_main_process, make_trainer
from .evaluation import batch_logits
from .recipe import get_recipe
from .settings import RunSettings

__all__ = [
    "KFoldResult",
    "SingleResult",
    "center_crop",
    "evaluate_ten_crop",
    "holdout_indices",
    "kfold_indices",
    "kfold_protocol",
    "predict_probabilities",
    "single_protocol",
    "subset",
    "ten_crop",
    "ten_crop_test_set",
    "topk_error",
    "vote",
]

_SPLIT_STREAM = 0x7E57  # seeds the fold and hold-out shuffles, apart from the trainer's


# --- splits -------------------------------------------------------------------------------


def _labels_of(data) -> np.ndarray:
    """1-D int64 labels of a data set (its ``.labels``, else read item by item) or sequence."""
    labels = getattr(data, "labels", None)
    if labels is None and hasattr(data, "__getitem__") and hasattr(data, "classes"):
        labels = [int(data[i][1]) for i in range(len(data))]
    if labels is None:
        labels = data
    labels = np.asarray(torch.as_tensor(labels).cpu())
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserTypeError(
            "labels must be a 1-D sequence of integers (or a data set with .labels)"
        )
    return labels.astype(np.int64)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _shuffled(labels: np.ndarray, seed: int, stream: int, stratified: bool) -> np.ndarray:
    """All item indices, shuffled; stratified: class after class, each class shuffled."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM, stream]))
    if not stratified:
        return rng.permutation(len(labels))
    blocks = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def kfold_indices(
    labels, *, folds: int = 10, seed: int = 0, stratified: bool = True
) -> list[np.ndarray]:
    """Split items into ``folds`` disjoint folds, deterministically; the sorted indices of each.

    Parameters
    ----------
    labels : sequence of int, or a data set with ``.labels``
        The class of every item (only their number matters when not stratified).
    folds : int
        Number of folds, at least 2 and at most the number of items.
    seed : int
        Seeds the shuffle; the same arguments always give the same folds.
    stratified : bool
        Spread every class over the folds as evenly as possible (see the module notes).

    Returns
    -------
    list of numpy.ndarray
        ``folds`` arrays of indices; together they hold every index exactly once, and
        their lengths differ by at most one.

    Examples
    --------
    >>> parts = kfold_indices([0, 0, 0, 1, 1, 1, 1], folds=3, seed=0)
    >>> sorted(np.concatenate(parts).tolist()), [len(p) for p in parts]
    ([0, 1, 2, 3, 4, 5, 6], [3, 2, 2])
    >>> kfold_indices([0, 1], folds=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: cannot split 2 samples into 3 folds: each fold needs ...
    """
    labels = _labels_of(labels)
    folds = _check_int("folds", folds, 2)
    if len(labels) < folds:
        raise UserError(
            f"cannot split {len(labels)} samples into {folds} folds: each fold needs at least "
            f"one sample; use fewer folds (--folds) or more data"
        )
    order = _shuffled(labels, _check_int("seed", seed, 0), folds, stratified)
    position = np.arange(len(order))
    return [np.sort(order[position % folds == f]) for f in range(folds)]


def holdout_indices(
    labels, *, fraction: float = 0.1, seed: int = 0, stratified: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Split items into a training part and a held-out part of ``round(fraction * n)`` items.

    Stratified, the held-out items are evenly spaced along the class-by-class shuffled
    order, so each class gives ``fraction`` of its items, up to one.

    Returns
    -------
    (train, held_out) : numpy.ndarray, numpy.ndarray
        Sorted, disjoint index arrays whose union is ``range(n)``.

    Examples
    --------
    >>> train, held = holdout_indices([0] * 10 + [1] * 10, fraction=0.2, seed=1)
    >>> len(train), len(held), sorted(np.r_[train, held].tolist()) == list(range(20))
    (16, 4, True)
    """
    labels = _labels_of(labels)
    n = len(labels)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise UserError(f"the held-out fraction must lie in (0, 1); got {fraction!r}")
    count = round(fraction * n)
    if not 1 <= count <= n - 1:
        raise UserError(
            f"holding out {fraction:g} of {n} samples leaves {count} held out and {n - count} "
            f"to train on; both need at least one (change --holdout or use more data)"
        )
    order = _shuffled(labels, _check_int("seed", seed, 0), 1, stratified)
    picked = np.floor((np.arange(count) + 0.5) * n / count).astype(np.int64)
    chosen = np.zeros(n, dtype=bool)
    chosen[picked] = True
    return np.sort(order[~chosen]), np.sort(order[chosen])


class _Subset(torch.utils.data.Subset):
    """A lazily read subset that keeps ``classes``, ``labels``, ``spec`` and ``split``."""

    def __init__(self, dataset, indices, spec):
        super().__init__(dataset, indices)
        self.classes = list(getattr(dataset, "classes", []) or [])
        self.labels = torch.as_tensor(_labels_of(dataset)[np.asarray(indices, dtype=np.int64)])
        self.spec = spec
        self.split = getattr(dataset, "split", "train")


def subset(dataset, indices, *, label: str | None = None):
    """The items ``indices`` of ``dataset``, as a data set the trainer reads fast.

    In-memory :class:`~invert.data.ImageDataset` s give an in-memory copy, others a
    lazy view; both keep ``classes`` and ``labels``. ``label`` is appended to the
    spec (it ends up in checkpoints).

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> data = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), [0, 1, 0, 1], list("ab"))
    >>> part = subset(data, [1, 3], label="odd")
    >>> len(part), part.labels.tolist(), part.classes, part.spec
    (2, [1, 1], ['a', 'b'], '[odd]')
    """
    from invert.data import ImageDataset

    index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    spec = str(getattr(dataset, "spec", "") or "") + (f"[{label}]" if label else "")
    memory = in_memory(dataset)
    if memory is not None:
        images, labels = memory
        return ImageDataset(
            images[index],
            labels[index],
            getattr(dataset, "classes", []),
            spec=spec,
            split=getattr(dataset, "split", "train"),
        )
    return _Subset(dataset, index.tolist(), spec)


# --- scores and errors ----------------------------------------------------------------------


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    amp: bool = True,
    num_workers: int = 0,
) -> torch.Tensor:
    """Softmax class probabilities of ``model`` for every item of ``dataset`` (eval mode).

    Returns
    -------
    torch.Tensor
        float32, shape ``(len(dataset), num_classes)``, on the CPU; rows sum to 1.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> from invert.nn.zoo import create_model
    >>> data = ImageDataset(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), [0, 1, 0], list("ab"))
    >>> p = predict_probabilities(create_model("convpool_c", num_classes=2, width=0.125), data)
    >>> tuple(p.shape), bool(torch.allclose(p.sum(1), torch.ones(3)))
    ((3, 2), True)
    """
    device = resolve_device(device)
    batches = torch.arange(len(dataset)).split(batch_size)
    out = [F.softmax(logits.float(), dim=1).cpu()
           for logits, _ in batch_logits(model, dataset, batches, device=device, amp=amp,
                                         num_workers=num_workers)]  # fmt: skip
    if not out:
        raise UserError("cannot score an empty data set")
    return torch.cat(out)


def vote(scores) -> torch.Tensor:
    """The class each item gets from several models' averaged scores (ties: lowest class).

    Parameters
    ----------
    scores : sequence of tensors, or a tensor, of shape ``(models, items, classes)``
        Per-model scores, e.g. from :func:`predict_probabilities`.

    Returns
    -------
    torch.Tensor
        int64, shape ``(items,)``: ``argmax`` over classes of the mean over models.

    Examples
    --------
    >>> a = torch.tensor([[0.9, 0.1], [0.4, 0.6]])
    >>> b = torch.tensor([[0.2, 0.8], [0.3, 0.7]])
    >>> vote([a, b]).tolist()
    [0, 1]
    """
    stacked = torch.stack(list(scores)) if not isinstance(scores, torch.Tensor) else scores
    if stacked.dim() != 3 or stacked.shape[0] == 0:
        raise UserError("scores must have the shape (models, items, classes)")
    if not torch.isfinite(stacked).all():
        raise UserError("scores must be finite")
    return stacked.double().mean(dim=0).argmax(dim=1)


def topk_error(scores: torch.Tensor, labels, *, k: int = 1) -> float | None:
    """Fraction of items whose label is not among their ``k`` highest scores.

    None when ``k`` exceeds the number of classes (a top-5 error of 3 classes).

    Examples
    --------
    >>> s = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    >>> topk_error(s, [1, 2]), topk_error(s, [1, 2], k=2), topk_error(s, [1, 2], k=5)
    (0.5, 0.0, None)
    """
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels, dtype=torch.int64).to(scores.device)
    if scores.dim() != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise UserError("scores must be (items, classes) with one label per item")
    if k > scores.shape[1]:
        return None
    top = scores.topk(k, dim=1).indices
    return 1.0 - (top == labels[:, None]).any(dim=1).double().mean().item()


# --- crops ----------------------------------------------------------------------------------


def _crop_size(size) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in pair):
        raise UserError(f"crop size must be a positive integer or (height, width); got {size!r}")
    return int(pair[0]), int(pair[1])


def _corners(images: torch.Tensor, size) -> tuple[int, int, list[tuple[int, int]]]:
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        raise UserTypeError("images must be a tensor C x H x W or N x C x H x W")
    h, w = _crop_size(size)
    height, width = images.shape[-2:]
    if h > height or w > width:
        raise UserError(
            f"a {h} x {w} crop does not fit images of {height} x {width}; load the data "
            f"larger (image_size / --resize) or crop smaller (--crop-size)"
        )
    top, left = (height - h) // 2, (width - w) // 2  # centre: rounded towards the top left
    origins = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]
    return h, w, origins


def center_crop(images: torch.Tensor, size) -> torch.Tensor:
    """The central ``size`` crop; offsets ``(H - h) // 2``, ``(W - w) // 2``.

    Examples
    --------
    >>> center_crop(torch.arange(25).view(1, 5, 5), 2)[0].tolist()
    [[6, 7], [11, 12]]
    """
    h, w, origins = _corners(images, size)
    top, left = origins[4]
    return images[..., top : top + h, left : left + w]


def ten_crop(images: torch.Tensor, size) -> torch.Tensor:
    """The 10 patches of Krizhevsky et al. (2012): 4 corners, centre, and their mirror images.

    Parameters
    ----------
    images : torch.Tensor
        ``C x H x W`` or ``N x C x H x W``.
    size : int or (int, int)
        Crop height and width (``h <= H``, ``w <= W``).

    Returns
    -------
    torch.Tensor
        ``10 x C x h x w`` or ``N x 10 x C x h x w``, in the order top-left,
        top-right, bottom-left, bottom-right, centre, then the same five flipped
        left-right. Crop origins: ``(0, 0)``, ``(0, W - w)``, ``(H - h, 0)``,
        ``(H - h, W - w)``, ``((H - h) // 2, (W - w) // 2)``.

    Examples
    --------
    >>> x = torch.arange(12.0).view(1, 3, 4)
    >>> patches = ten_crop(x, 2)
    >>> tuple(patches.shape), patches[1, 0].tolist(), patches[6, 0].tolist()
    ((10, 1, 2, 2), [[2.0, 3.0], [6.0, 7.0]], [[3.0, 2.0], [7.0, 6.0]])
    """
    h, w, origins = _corners(images, size)
    crops = [images[..., t : t + h, l : l + w] for t, l in origins]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=-4)


@torch.no_grad()
def ten_crop_test_set(
    data: str, *, crop_size: int, resize: int | None = None, seed: int = 0, data_options=None
):
    """The test split for :func:`evaluate_ten_crop`, loaded larger than the crops.

    Images are loaded at ``resize`` pixels (default ``crop_size * 256 / 224``, the
    ImageNet ratio); CIFAR's 32 x 32 images cannot be resized (crops smaller than 32 pick
    corners, 32 only mirrors). For ``textures`` the sources are rescaled so that a crop of
    the training size shows what it showed in training: ``context`` (from
    ``data_options``, the options the model was trained with) shrinks by
    ``crop_size / resize``.

    Examples
    --------
    >>> test = ten_crop_test_set("textures", crop_size=32, data_options={"test_per_class": 2})
    >>> tuple(test[0][0].shape)
    (3, 37, 37)
    """
    from invert.data import DataSpec, load_dataset

    spec = DataSpec.parse(data)
    if spec.fixed_size:
        if resize not in (None, spec.fixed_size):
            raise UserError("CIFAR images are 32 x 32 and cannot be resized (--resize)")
        size = None
    else:
        size = resize or round(crop_size * 256 / 224)
    options = spec.options(data_options)
    if spec.takes_options:
        options["context"] = options.get("context", 6.0) * crop_size / size
    return load_dataset(data, split="test", image_size=size, seed=seed, **options)


def evaluate_ten_crop(
    model: nn.Module,
    dataset,
    *,
    crop_size=None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    amp: bool = True,
    num_workers: int = 0,
) -> dict:
    """Top-1 and top-5 errors from the centre crop and from 10 patches (scores averaged).

    Parameters
    ----------
    model : nn.Module
        A classifier for ``crop_size`` inputs (in eval mode during the call).
    dataset : Dataset
        Items ``(image C x H x W in [0, 1], label)`` of one size at least ``crop_size``,
        e.g. ``load_dataset("folder:PATH", split="val", image_size=256)``.
    crop_size : int or (int, int), optional
        Default: the zoo model's input size (``model.arch``).
    batch_size : int
        Images per step (each gives 10 crops).
    device, amp, num_workers
        As in :func:`~invert.train.evaluate`.

    Returns
    -------
    dict
        ``count``, ``crop_size``, ``center_top1_error``, ``center_top5_error``,
        ``ten_crop_top1_error``, ``ten_crop_top5_error`` (top-5: None with fewer than
        5 classes). The 10-patch scores are the mean of the patches' softmax
        probabilities. Inside :func:`invert.train.distributed.distributed` the items are
        shared out among the ranks and the counts of errors summed.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> from invert.nn.zoo import create_model
    >>> data = ImageDataset(torch.zeros(2, 3, 36, 36, dtype=torch.uint8), [0, 1], list("ab"))
    >>> net = create_model("convpool_c", num_classes=2, width=0.125)
    >>> result = evaluate_ten_crop(net, data, crop_size=32)
    >>> result["count"], result["ten_crop_top1_error"], result["center_top5_error"]
    (2, 0.5, None)
    """
    device = resolve_device(device)
    if crop_size is None:
        from invert.nn.zoo import model_info

        arch = getattr(model, "arch", None)
        if not arch:
            raise UserError("pass crop_size= (the model has no zoo architecture to take it from)")
        crop_size = model_info(arch)["input_size"]
    h, w = _crop_size(crop_size)
    context = current_context()
    rank, world = (0, 1) if context is None else (context.rank, context.world_size)
    batches = torch.arange(rank, len(dataset), world).split(batch_size)
    counts, classes = _ten_crop_counts(model, dataset, batches, (h, w), device=device, amp=amp,
                                       num_workers=num_workers)  # fmt: skip
    if context is not None:
        counts, classes = _summed_over_ranks(context, counts, classes)
    total = int(counts[4].item())
    if total == 0:
        raise UserError("cannot evaluate on an empty data set")
    five = classes is not None and classes >= 5
    return {
        "count": total,
        "crop_size": [h, w],
        "center_top1_error": counts[0].item() / total,
        "center_top5_error": counts[1].item() / total if five else None,
        "ten_crop_top1_error": counts[2].item() / total,
        "ten_crop_top5_error": counts[3].item() / total if five else None,
    }


@torch.no_grad()
def _ten_crop_counts(model, dataset, batches, size, *, device, amp, num_workers):
    """Wrong answers (centre top-1, top-5, ten top-1, top-5) and the count; the classes."""

    def crops(images):
        return ten_crop(images, size).flatten(0, 1)

    counts = torch.zeros(5, dtype=torch.float64)
    classes = None
    for logits, labels in batch_logits(model, dataset, batches, device=device, amp=amp,
                                       num_workers=num_workers, transform=crops):  # fmt: skip
        n = len(labels)
        probabilities = F.softmax(logits.float(), dim=1).view(n, 10, -1)
        classes = probabilities.shape[2]
        for slot, scores in ((0, probabilities[:, 4]), (2, probabilities.mean(dim=1))):
            for j, k in enumerate((1, 5)):
                if k <= classes:
                    top = scores.topk(k, dim=1).indices
                    counts[slot + j] += (~(top == labels[:, None]).any(dim=1)).sum().item()
        counts[4] += n
    return counts, classes


def _summed_over_ranks(context, counts, classes):
    """The counts summed over the ranks, and the class count (a rank may have no items)."""
    import torch.distributed as dist

    reduced = counts.to(context.device)
    sizes = torch.tensor([classes or 0], device=context.device)
    dist.all_reduce(reduced, group=context.group)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX, group=context.group)
    return reduced.cpu(), int(sizes.item())


# --- the training protocols -----------------------------------------------------------------


@dataclass
class SingleResult:
    """Outcome of :func:`single_protocol` (errors are fractions in [0, 1])."""

    target_loss: float  # lowest held-out loss of the run on the training subset
    target_epoch: int  # the epoch that reached it (counted from 1)
    reached: bool  # the retrained model's training loss got down to target_loss
    epochs: int  # epochs of the retraining run
    train_loss: float  # of the retrained model on the whole training set (eval mode)
    train_error: float
    test_loss: float
    test_error: float
    train_items: int  # of the subset
    holdout_items: int
    subset_history: list = field(repr=False, default_factory=list)
    history: list = field(repr=False, default_factory=list)
    model: nn.Module | None = field(repr=False, default=None)

    def to_dict(self) -> dict:
        """JSON-ready numbers and histories (without the model)."""
        out = {k: v for k, v in self.__dict__.items() if k != "model"}
        return {"protocol": "single", **out}


@dataclass
class KFoldResult:
    """Outcome of :func:`kfold_protocol` (errors are fractions in [0, 1])."""

    folds: int
    average_error: float  # mean of the fold models' test errors
    standard_error: float  # their sample standard deviation / sqrt(folds)
    vote_error: float  # test error of the averaged softmax probabilities
    test_errors: list  # per fold model
    validation_errors: list  # of each model on its held-out fold
    fold_sizes: list
    vote_predictions: torch.Tensor = field(repr=False, default=None)
    histories: list = field(repr=False, default_factory=list)
    models: list = field(repr=False, default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready numbers and histories (without the models and predictions)."""
        skip = ("models", "vote_predictions")
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        return {"protocol": "kfold", **out}


def _seeded_model(make_model: Callable[[], nn.Module], seed: int, run: int) -> nn.Module:
    torch.manual_seed(derived_seed(seed, run, INIT))
    model = make_model()
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"make_model must return a torch.nn.Module; got {type(model).__name__}")
    return model


def _say(settings: RunSettings, message: str) -> None:
    say(settings.progress and is_main_process(), message)


def _out_file(settings: RunSettings, name: str) -> RunSettings:
    """The settings of one of the protocol's runs: its checkpoint in the ``out`` folder."""
    out = settings.out
    if out is None:
        return settings
    if out.exists() and not out.is_dir():
        raise UserError(f"out must be a folder for the protocol's checkpoints; {out} is a file")
    return settings.replace(out=out / name)


def _prepared(train_set, test_set, settings) -> RunSettings:
    """The settings with the recipe resolved; checks the sets first."""
    if len(train_set) == 0:
        raise UserError("the training set is empty")
    if test_set is not None and len(test_set) == 0:
        raise UserError("the test set is empty")
    settings = RunSettings() if settings is None else settings
    return settings.replace(recipe=get_recipe(settings.recipe))


def single_protocol(make_model: Callable[[], nn.Module], train_set, test_set, *,
                    holdout: float = 0.1, stratified: bool = True,
                    settings: RunSettings | None = None) -> SingleResult:  # fmt: skip
    """The paper's "Single" protocol: hold out, note the held-out loss, retrain on everything.

    Parameters
    ----------
    make_model : callable
        ``make_model()`` returns a fresh classifier; it is called twice with the
        global torch RNG seeded from the seed, the same way both times (so both runs
        start from the same weights).
    train_set, test_set : Dataset
        Items ``(image, label)``; see :func:`~invert.train.train`.
    holdout : float
        Fraction of the training set held out in the first run (stratified by class).
    stratified : bool
        Stratify the held-out part by class.
    settings : RunSettings, optional
        How both runs train (the recipe's epochs cap the retraining run); the seed seeds
        the split, the initial weights and the trainer; ``out`` is a folder for the two
        runs' checkpoints and resumable states (``single-subset.safetensors``,
        ``single-full.safetensors``), and ``resume`` continues interrupted runs found there.

    Returns
    -------
    SingleResult

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> from invert.train import Recipe, RunSettings
    >>> images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    >>> data = ImageDataset(images, torch.arange(20) % 2, ["a", "b"])
    >>> make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                              nn.Linear(4, 2))
    >>> run = RunSettings(recipe=Recipe(epochs=2, batch_size=4, lr=0.01), device="cpu",
    ...                   progress=False)
    >>> r = single_protocol(make, data, data, holdout=0.2, settings=run)
    >>> r.holdout_items, r.train_items, 1 <= r.epochs <= 2, 0 <= r.test_error <= 1
    (4, 16, True, True)
    """
    settings = _prepared(train_set, test_set, settings)
    train_idx, held_idx = holdout_indices(train_set, fraction=holdout, seed=settings.seed,
                                          stratified=stratified)  # fmt: skip
    part = subset(train_set, train_idx, label=f"single: {len(train_idx)} of {len(train_set)}")
    held = subset(train_set, held_idx, label=f"single: held-out {len(held_idx)}")
    tag = "" if stratified else "-unstratified"
    _say(settings, f"single: training on {len(part)} items, {len(held)} held out")
    first = make_trainer(
        _seeded_model(make_model, settings.seed, 0),
        part,
        test_set=held,
        settings=_out_file(settings, f"single-subset{tag}.safetensors"),
    )
    subset_history = first.fit()
    losses = [h["test_loss"] for h in subset_history]
    best = int(np.argmin(losses))
    target = float(losses[best])
    _say(settings, f"single: lowest held-out loss {target:.4f} (epoch {best + 1}); retraining")
    second = make_trainer(
        _seeded_model(make_model, settings.seed, 0),
        train_set,
        test_set=test_set,
        settings=_out_file(settings, f"single-full{tag}.safetensors"),
    )
    history = second.fit(until=_training_loss_at_most(target))
    last = history[-1]
    result = SingleResult(
        target_loss=target, target_epoch=best + 1,
        reached=bool(last["train_eval_loss"] <= target), epochs=len(history),
        train_loss=last["train_eval_loss"], train_error=1.0 - last["train_eval_accuracy"],
        test_loss=last["test_loss"], test_error=1.0 - last["test_accuracy"],
        train_items=len(part), holdout_items=len(held),
        subset_history=subset_history, history=history, model=second.model,
    )  # fmt: skip
    if not result.reached:
        _say(settings, f"single: the training loss {result.train_loss:.4f} did not reach "
                       f"{target:.4f} in {settings.recipe.epochs} epochs; reporting the "
                       f"last epoch")  # fmt: skip
    return result


def _training_loss_at_most(target: float):
    """The ``until`` rule of the retraining run: the training loss (eval mode) <= target."""

    def reached(trainer, record) -> bool:
        measured = trainer.evaluate_on(trainer.train_set)
        record["train_eval_loss"] = measured["loss"]
        record["train_eval_accuracy"] = measured["accuracy"]
        return measured["loss"] <= target

    return reached


def kfold_protocol(make_model: Callable[[], nn.Module], train_set, test_set, *,
                   folds: int = 10, stratified: bool = True, keep_models: bool = True,
                   settings: RunSettings | None = None) -> KFoldResult:  # fmt: skip
    """The paper's k-fold protocol: "Average" (mean +- standard error) and "Vote" test errors.

    Parameters
    ----------
    make_model : callable
        ``make_model()`` returns a fresh classifier; called once per fold with the
        global torch RNG seeded from ``(seed, fold)``.
    train_set, test_set : Dataset
        Items ``(image, label)``; the folds split ``train_set``.
    folds : int
        ``k`` (the paper: 10); at most the number of training items.
    stratified : bool
        As in :func:`single_protocol`; the folds come from :func:`kfold_indices`.
    keep_models : bool
        Return the ``k`` trained models in ``result.models``.
    settings : RunSettings, optional
        As in :func:`single_protocol`; ``out`` is a folder for the fold models'
        checkpoints and resumable states (``fold-01-of-10.safetensors`` ...).

    Returns
    -------
    KFoldResult

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> from invert.train import Recipe, RunSettings
    >>> images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    >>> data = ImageDataset(images, torch.arange(12) % 2, ["a", "b"])
    >>> make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                              nn.Linear(4, 2))
    >>> run = RunSettings(recipe=Recipe(epochs=1, batch_size=4), device="cpu", progress=False)
    >>> r = kfold_protocol(make, data, data, folds=3, settings=run)
    >>> r.fold_sizes, len(r.test_errors), len(r.models)
    ([4, 4, 4], 3, 3)
    """
    settings = _prepared(train_set, test_set, settings)
    parts = kfold_indices(train_set, folds=folds, seed=settings.seed, stratified=stratified)
    k = len(parts)
    test_labels = torch.as_tensor(_labels_of(test_set))
    tag = "" if stratified else "-unstratified"
    total = None
    test_errors, validation_errors, histories, models = [], [], [], []
    for fold in range(k):
        rest = np.sort(np.concatenate([p for i, p in enumerate(parts) if i != fold]))
        training = subset(train_set, rest, label=f"fold {fold + 1} of {k} held out")
        name = f"fold-{fold + 1:02d}-of-{k:02d}{tag}.safetensors"
        trainer = make_trainer(_seeded_model(make_model, settings.seed, fold), training,
                               settings=_out_file(settings, name))  # fmt: skip
        histories.append(trainer.fit())
        held = subset(train_set, parts[fold], label=f"fold {fold + 1} of {k}")
        validation_errors.append(1.0 - trainer.evaluate_on(held)["accuracy"])
        hardware = settings.recipe.hardware
        probabilities = predict_probabilities(trainer.model, test_set,
                                              batch_size=hardware.eval_batch_size,
                                              device=trainer.device, amp=hardware.amp)  # fmt: skip
        test_errors.append(topk_error(probabilities, test_labels))
        total = probabilities.double() if total is None else total + probabilities.double()
        if keep_models:
            models.append(trainer.model)
        _say(settings, f"fold {fold + 1}/{k}: validation error {validation_errors[-1]:.2%}, "
                       f"test error {test_errors[-1]:.2%}")  # fmt: skip
    predictions = vote(total[None] / k)
    errors = np.asarray(test_errors, dtype=np.float64)
    return KFoldResult(
        folds=k,
        average_error=float(errors.mean()),
        standard_error=float(errors.std(ddof=1) / math.sqrt(k)),
        vote_error=float((predictions != test_labels).double().mean().item()),
        test_errors=test_errors,
        validation_errors=validation_errors,
        fold_sizes=[len(p) for p in parts],
        vote_predictions=predictions,
        histories=histories,
        models=models,
    )
