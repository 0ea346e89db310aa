"""The training loop: :class:`Trainer` runs the epochs of one run, evaluates, checkpoints
and resumes; the optimiser, the devices, the evaluation and the state live in their own
modules (:mod:`~invert.train.optimisation`, :mod:`~invert.train.devices`,
:mod:`~invert.train.evaluation`, :mod:`~invert.train.state`).

Layout for extensions (distributed training wraps these, it does not rewrite them):
:func:`~invert.train.batches.epoch_order` makes one rank's share of an epoch's item order,
:func:`~invert.train.optimisation.train_step` runs one optimisation step, and
:class:`Trainer` has the hooks ``rank``/``world_size``/``is_main``, :meth:`Trainer.wrap_model`,
:meth:`Trainer.evaluate_on`, ``_reduce_totals``, ``_load_state`` and the ``until`` stopping
rule of :meth:`Trainer.fit`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from invert.device import intra_op_threads, resolve_device
from invert.errors import UserError, UserTypeError
from invert.files import check_writable
from invert.progress import progress_bar, say
from invert.validation import check_positive_int

from .batches import (
    AUGMENT,
    DROPOUT,
    derived_seed,
    epoch_order,
    in_memory,
    iterate_batches,
    per_rank_batch_size,
    split_batches,
)
from .checkpoints import load_training_state, save_checkpoint, save_training_state
from .devices import autocast_dtype, check_input_size, place_model
from .evaluation import evaluate
from .metadata import training_metadata
from .optimisation import learning_rate_schedule, sgd, train_step
from .recipe import get_recipe
from .settings import RunSettings
from .state import check_same_run, restore_rng_states, rng_states, training_state_path

__all__ = ["Trainer", "augment_share", "check_classes", "check_out_folder"]


def check_out_folder(out) -> None:
    """A one-line ``PermissionError`` now, not after an epoch, when ``out`` cannot be written."""
    check_writable(Path(out).parent, "the folder of the checkpoint", "choose another path (--out)")


def check_classes(dataset) -> None:
    """A :class:`~invert.errors.UserError` before any training when ``dataset`` has fewer
    than two classes.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> one = ImageDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 0], ["cat"])
    >>> check_classes(one)
    Traceback (most recent call last):
    ...
    invert.errors.UserError: the training set has 1 class ('cat'); a classifier needs at least two
    """
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) < 2:
        names = ", ".join(repr(c) for c in classes)
        raise UserError(
            f"the training set has {len(classes)} class{'es' if len(classes) != 1 else ''}"
            f" ({names}); a classifier needs at least two"
        )


def _check_run(model, train_set, settings, rank, world_size) -> None:
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(settings, RunSettings):
        raise UserTypeError(f"settings must be a RunSettings; got {type(settings).__name__}")
    if len(train_set) == 0:
        raise UserError("the training set is empty")
    check_classes(train_set)
    if settings.out is not None and settings.out.is_dir():
        raise UserError(f"out must be a file path (e.g. {settings.out}/model.safetensors)")
    check_positive_int(world_size, name="world_size")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise UserError(f"rank must lie in [0, world_size={world_size}); got {rank!r}")


def augment_share(images, generator, *, flip: bool, max_shift: int, rank: int = 0,
                  world_size: int = 1) -> torch.Tensor:  # fmt: skip
    """Flips and shifts of rank ``rank``'s share of a global batch, as one process draws them.

    ``images`` are the rows ``rank, rank + world_size, ...`` of the global batch; the
    augmentation is drawn for the whole global batch (the same on every rank), and each
    rank keeps its rows.

    Examples
    --------
    >>> images = torch.rand(4, 3, 5, 5)
    >>> whole = augment_share(images, torch.Generator().manual_seed(0), flip=True, max_shift=1)
    >>> mine = augment_share(images[1::2], torch.Generator().manual_seed(0), flip=True,
    ...                      max_shift=1, rank=1, world_size=2)
    >>> torch.equal(mine, whole[1::2])
    True
    """
    from invert.data import augment

    if world_size == 1:
        return augment(images, flip=flip, max_shift=max_shift, generator=generator)
    if not flip and not max_shift:
        return images
    # augment() is a gather with zero fill, so augmenting a map of pixel numbers
    # (1 ... H*W, 0 = outside) for the whole global batch tells each rank where its
    # rows' pixels come from, with exactly the draws of a single-process run
    n, channels, height, width = images.shape
    pixels = torch.arange(1, height * width + 1, device=images.device)
    pixels = pixels.view(1, 1, height, width).expand(n * world_size, 1, height, width)
    source = augment(pixels, flip=flip, max_shift=max_shift, generator=generator)
    source = source[rank::world_size].reshape(n, 1, height * width)
    flat = images.reshape(n, channels, height * width)
    out = flat.gather(2, (source - 1).clamp(min=0).expand(n, channels, height * width))
    return out.masked_fill_(source == 0, 0).view(n, channels, height, width)


class Trainer:
    """Deterministic, resumable SGD training of a classifier; see :func:`~invert.train.train`.

    ``settings`` (:class:`~invert.train.settings.RunSettings`) holds the recipe, the
    checkpoint path ``out``, ``resume``, the device, ``progress`` and the seed.
    Distributed training (:class:`invert.train.distributed.DistributedTrainer`) sets
    ``rank``/``world_size`` (each rank then visits its share of
    :func:`~invert.train.batches.epoch_order`, ``recipe.batch_size / world_size`` items per
    step) and overrides the hooks :meth:`wrap_model`, :meth:`evaluate_on`,
    ``_reduce_totals`` and ``_load_state``; only the main rank writes files and shows
    progress.
    """

    def __init__(self, model: nn.Module, train_set, *, test_set=None,
                 settings: RunSettings | None = None, rank: int = 0,
                 world_size: int = 1):  # fmt: skip
        settings = RunSettings() if settings is None else settings
        _check_run(model, train_set, settings, rank, world_size)
        self.model, self.train_set, self.test_set = model, train_set, test_set
        self.settings = settings
        self.recipe = get_recipe(settings.recipe, arch=getattr(model, "arch", None))
        self.out, self.seed = settings.out, settings.seed
        self.device = resolve_device(settings.device)
        self.rank, self.world_size = rank, world_size
        self.progress = settings.progress and self.is_main
        if self.out is not None and self.is_main:  # now, not after the first epoch's work
            check_out_folder(self.out)
        # items per step on this process; the recipe's batch size is the global batch
        self.batch_size = per_rank_batch_size(self.recipe.batch_size, world_size)
        self.history: list[dict] = []
        arch = getattr(model, "arch", "") or ""
        shift = self.recipe.max_shift
        self.max_shift = (4 if arch.startswith("vgg") else 0) if shift is None else shift
        self.amp_dtype = autocast_dtype(self.device, self.recipe.hardware.amp)
        self.channels_last = self.device.type == "cuda" and self.recipe.hardware.channels_last

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module the training steps run (hook for DistributedDataParallel)."""
        return model

    def steps_per_epoch(self) -> int:
        n = len(epoch_order(len(self.train_set), seed=0, epoch=0, world_size=self.world_size))
        return len(split_batches(torch.arange(n), self.batch_size))

    def evaluate_on(self, dataset) -> dict:
        """Mean loss and accuracy of the model on ``dataset`` (every rank gets the same)."""
        hardware = self.recipe.hardware
        return evaluate(self.model, dataset, batch_size=hardware.eval_batch_size,
                        device=self.device, amp=hardware.amp,
                        channels_last=self.channels_last)  # fmt: skip

    def setup(self) -> None:
        """Normalization from the training set, device placement, optimiser and schedule."""
        place_model(self.model, self.train_set, self.device, self.channels_last)
        check_input_size(self.model, self.train_set, self.device)
        self._memory = in_memory(self.train_set, self.device)
        self.optimizer = sgd(self.model, self.recipe)
        self.scheduler = learning_rate_schedule(self.optimizer, self.recipe, self.steps_per_epoch())
        self.train_model = self.wrap_model(self.model)

    # -- state --

    def _identity(self) -> dict:
        return {
            "arch": getattr(self.model, "arch", None),
            "config": getattr(self.model, "config", None),
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "world_size": self.world_size,
            "num_items": len(self.train_set),
            "classes": list(getattr(self.train_set, "classes", []) or []),
        }

    def state_dict(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "identity": self._identity(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states(),
            "history": self.history,
            "order_generator_seed": self.seed,
        }

    def _load_state(self) -> dict | None:
        """The training state to resume from, or None (hook: ranks must agree)."""
        if self.out is None or not training_state_path(self.out).exists():
            return None
        return load_training_state(training_state_path(self.out))

    def _resume_from(self, state: dict, path) -> int:
        check_same_run(state.get("identity", {}), self._identity(), path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"])
        self.history = list(state["history"])
        return int(state["epoch"])

    def _save(self, epoch: int) -> None:
        if self.out is None or not self.is_main:
            return
        # checkpoint first, then state: if killed in between, the state is one epoch
        # behind and resuming recomputes that epoch to the same result
        save_checkpoint(self.model, self.out, **self.checkpoint_metadata())
        save_training_state(self.state_dict(epoch), training_state_path(self.out))

    def checkpoint_metadata(self) -> dict:
        """:func:`~invert.train.metadata.training_metadata` of this run so far."""
        return training_metadata(self.train_set, recipe=self.recipe, seed=self.seed,
                                 history=self.history)  # fmt: skip

    # -- the loop --

    def fit(self, *, until=None) -> list[dict]:
        """Train for the recipe's epochs (resuming from ``out``'s state if the settings say
        so); the history.

        ``until(trainer, record)``, if given, is called after each epoch (before the
        checkpoint is written; it may add entries to ``record``) and stops training
        when it returns True. A resumed run asks it again about its last epoch.
        """
        self.setup()
        threads = self.recipe.hardware.cpu_threads
        with intra_op_threads(threads if self.device.type == "cpu" else None):
            return self._fit(until)

    def _resume(self, until) -> tuple[int, bool]:
        """The epochs already done, and whether ``until`` says the resumed run is finished."""
        state = self._load_state() if self.settings.resume else None
        if state is None:
            return 0, False
        # ranks other than 0 may have no ``out``: they resume from rank 0's state
        path = training_state_path(self.out) if self.out is not None else "rank 0's state"
        start = self._resume_from(state, path)
        if start:
            say(self.progress, f"resuming {self.out} after epoch {start}")
        done = bool(start and until is not None and self.history and until(self, self.history[-1]))
        return start, done

    def _fit(self, until) -> list[dict]:
        start, done = self._resume(until)
        for epoch in range(start, 0 if done else self.recipe.epochs):
            record = self.run_epoch(epoch)
            if self.test_set is not None:
                result = self.evaluate_on(self.test_set)
                record["test_loss"], record["test_accuracy"] = result["loss"], result["accuracy"]
            stop = until is not None and bool(until(self, record))
            self.history.append(record)
            self._report(record)
            self._save(epoch + 1)
            if stop:
                break
        self.model.eval()
        return self.history

    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch (seeded by ``(seed, epoch)``); its record without test results."""
        started = time.perf_counter()
        first_lr = self.optimizer.param_groups[0]["lr"]
        # dropout masks: the global RNG, reseeded so the epoch depends on (seed, epoch) only
        torch.manual_seed(derived_seed(self.seed, epoch, DROPOUT, self.rank))
        order = epoch_order(len(self.train_set), seed=self.seed, epoch=epoch, rank=self.rank,
                            world_size=self.world_size)  # fmt: skip
        batches = split_batches(order, self.batch_size)
        self.train_model.train()
        desc = f"epoch {epoch + 1}/{self.recipe.epochs}"
        with progress_bar(self.progress, total=len(batches), desc=desc, unit="batch") as bar:
            loss_sum, correct, seen = self._train_batches(epoch, batches, bar)
        loss_sum, correct, seen = self._reduce_totals(loss_sum, correct, seen)
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            raise UserError(
                f"training diverged in epoch {epoch + 1} (the loss is not finite); "
                f"lower the learning rate (lr={self.recipe.lr})"
            )
        seconds = time.perf_counter() - started
        return {
            "epoch": epoch + 1,
            "lr": first_lr,  # at the epoch's first step
            "train_loss": train_loss,
            "train_accuracy": correct.item() / max(seen, 1),
            "seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else None,
        }

    def _train_batches(self, epoch: int, batches: list, bar):
        """One optimisation step per batch; the summed loss, correct count and item count."""
        r = self.recipe
        # augmentation: one stream for the global batch, the same on every rank
        augmenter = torch.Generator().manual_seed(derived_seed(self.seed, epoch, AUGMENT, 0))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        stream = iterate_batches(self.train_set, batches, self.device, r.hardware.num_workers,
                                 memory=self._memory)  # fmt: skip
        for step, (images, labels) in enumerate(stream):
            images = self._augment(images, augmenter)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss, hits = train_step(self.train_model, self.optimizer, images, labels,
                                    amp_dtype=self.amp_dtype, grad_clip=r.grad_clip,
                                    unit_clip=r.unit_clip,
                                    clip_first_conv=r.clip_first_conv)  # fmt: skip
            self.scheduler.step()
            loss_sum += loss.double()
            correct += hits
            seen += len(labels)
            bar.update()
            if self.progress and (step % 10 == 0 or step == len(batches) - 1):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                                acc=f"{correct.item() / seen:.1%}")  # fmt: skip
        return loss_sum, correct, seen

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flips and shifts of this rank's share of the global batch, as one process draws them."""
        return augment_share(images, generator, flip=self.recipe.flip, max_shift=self.max_shift,
                             rank=self.rank, world_size=self.world_size)  # fmt: skip

    def _reduce_totals(self, loss_sum, correct, seen):
        """Combine an epoch's summed loss, correct count and item count (hook: ranks)."""
        return loss_sum, correct, seen

    def _report(self, record: dict) -> None:
        line = (
            f"epoch {record['epoch']}/{self.recipe.epochs}: loss {record['train_loss']:.4f}, "
            f"train accuracy {record['train_accuracy']:.1%}"
        )
        if "test_accuracy" in record:
            line += f", test accuracy {record['test_accuracy']:.1%}"
        say(self.progress, line + f" ({record['seconds']:.1f} s)")
