"""Training: recipes, a deterministic and resumable SGD trainer, and MODEL@DATA runs.

The trainer does what the paper's experiments need and nothing else: SGD with
momentum and weight decay, a learning-rate schedule, dropout (it lives in the zoo
models), per-channel input normalization from the training set, random flips (and
random shifts for VGG), evaluation on the test set after every epoch, and a
checkpoint plus a resumable training state after every epoch. On CUDA it runs in
bfloat16 autocast with channels-last tensors; on the CPU in plain float32.

Determinism (ours): everything random in epoch ``e`` -- the order of the training
items, the augmentation draws and the dropout masks -- comes from generators seeded
by a pure function of ``(seed, epoch)`` (and the rank, for the dropout masks of a
distributed run). Resuming after epoch ``e`` therefore replays epochs ``e+1, ...``
exactly: on the CPU, a run killed with ``kill -9`` and resumed ends with bit-identical
weights to an uninterrupted one.

Distributed runs (:mod:`invert.train.distributed`, under ``torchrun``) split each global
batch of ``recipe.batch_size`` items across the ranks: step ``k`` of rank ``r`` sees
the items at positions ``r, r + world_size, ...`` of the global batch a single
process would see at step ``k``, with the same flips and shifts (the augmentation is
drawn for the global batch on every rank and each rank keeps its rows). Without
dropout and BatchNorm, ``N`` processes therefore follow the single-process run up to
floating-point rounding; dropout masks are drawn per rank, and BatchNorm normalises
each rank's share of the batch.

Recipes are in :mod:`invert.train.recipe`; models built from ``MODEL@DATA`` specs start
from :func:`he_init` weights.

The trainer is split by concern: :mod:`~invert.train.loop` (the :class:`Trainer` and its
epochs), :mod:`~invert.train.optimisation` (the step, the clip, SGD and its schedule),
:mod:`~invert.train.evaluation`, :mod:`~invert.train.devices` (autocast, placement),
:mod:`~invert.train.state` (resuming), :mod:`~invert.train.spec` (``MODEL@DATA`` runs) and
:mod:`~invert.train.settings` (:class:`RunSettings`, the run's settings as one value).
This module is their public face: :func:`train`, and the names users import from here.
:func:`~invert.train.distributed.make_trainer` returns the distributed trainer inside
:func:`invert.train.distributed.distributed`, the plain one otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .distributed import make_trainer
from .evaluation import evaluate, evaluation_sums
from .loop import Trainer, check_classes
from .optimisation import clip_unit_gradients_, train_step
from .recipe import Recipe, get_recipe
from .settings import RunSettings
from .spec import (
    build_model,
    fit_spec,
    he_init,
    parse_model_spec,
    recipe_datasets,
    train_from_spec,
)
from .state import training_state_path

__all__ = [
    "Recipe",
    "RunSettings",
    "Trainer",
    "build_model",
    "check_classes",
    "clip_unit_gradients_",
    "evaluate",
    "evaluation_sums",
    "fit_spec",
    "get_recipe",
    "he_init",
    "make_trainer",
    "parse_model_spec",
    "recipe_datasets",
    "train",
    "train_from_spec",
    "train_step",
    "training_state_path",
]


def train(
    model: nn.Module,
    train_set,
    *,
    test_set=None,
    recipe: str | Recipe = "fast",
    out: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Train ``model`` on ``train_set`` with SGD, checkpointing and resuming.

    The model's ``normalize`` layer receives the per-channel statistics of
    ``train_set``. Each epoch trains on a seeded order of the items with random
    flips (and shifts for VGG), then evaluates on ``test_set``. With ``out``, a
    checkpoint (:func:`~invert.train.checkpoints.save_checkpoint`) and a training state
    (:func:`training_state_path`) are written atomically after every epoch, and a
    later call with ``resume=True`` continues after the last finished epoch.

    Parameters
    ----------
    model : nn.Module
        A classifier, usually from :func:`~invert.nn.zoo.create_model`; modified in place.
    train_set, test_set : Dataset
        Items ``(image C x H x W in [0, 1], label)``; :class:`~invert.data.ImageDataset`
        in memory is indexed directly (fast path), others go through a DataLoader.
    recipe : {"tiny", "fast", "paper"} or Recipe
        See :data:`RECIPES`. The recipe's ``model`` and ``data`` settings only
        matter for MODEL@DATA runs (:func:`train_from_spec`).
    out : path, optional
        The checkpoint file to write every epoch; the state goes next to it.
    resume : bool
        Continue from ``out``'s training state when there is one (it must come from
        the same model, recipe, seed and data, otherwise :class:`~invert.errors.UserError`).
    device : str or torch.device, optional
        Default ``cuda`` when available, else ``cpu``.
    progress : bool
        Show a progress bar with loss and accuracy, and one line per epoch (stderr).
    seed : int
        Seeds the item order, augmentation and dropout of every epoch.

    Inside :func:`invert.train.distributed.distributed` (a ``torchrun`` job) this trains
    data-parallel: ``recipe.batch_size`` is split across the ranks and only rank 0
    writes ``out``.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``lr`` (at its first step), ``train_loss``,
        ``train_accuracy``, ``test_loss`` and ``test_accuracy`` (with a test set),
        ``seconds``, ``images_per_second``. The model is left in eval mode on ``device``.

    Examples
    --------
    >>> import torch
    >>> from invert.data import ImageDataset
    >>> from invert.nn.zoo import create_model
    >>> images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    >>> data = ImageDataset(images, torch.arange(16) % 2, ["a", "b"])
    >>> net = create_model("convpool_c", num_classes=2, width=0.125)
    >>> history = train(net, data, recipe="tiny", device="cpu", progress=False)
    >>> len(history), sorted(history[0])[:3]
    (2, ['epoch', 'images_per_second', 'lr'])
    """
    run = RunSettings(recipe=recipe, out=out, resume=resume, device=device, progress=progress,
                      seed=seed)  # fmt: skip
    return make_trainer(model, train_set, test_set=test_set, settings=run).fit()
