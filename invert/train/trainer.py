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

Layout for extensions (distributed training wraps these, it does not rewrite them):
:func:`epoch_order` makes one rank's share of an epoch's item order,
:func:`train_step` runs one optimisation step, and :class:`Trainer` has the hooks
``rank``/``world_size``/``is_main``, :meth:`Trainer.wrap_model`,
:meth:`Trainer.evaluate_on` and the ``until`` stopping rule of :meth:`Trainer.fit`.
:func:`make_trainer` returns the distributed trainer inside
:func:`invert.train.distributed.distributed`, the plain one otherwise.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from invert.device import intra_op_threads, resolve_device
from invert.files import check_writable

from .batches import (
    AUGMENT,
    DROPOUT,
    INIT,
    derived_seed,
    epoch_order,
    in_memory,
    iterate_batches,
    per_rank_batch_size,
    split_batches,
)
from .checkpoints import (
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from .recipe import Recipe, get_recipe, learning_rate_factor

__all__ = [
    "train",
    "Trainer",
    "make_trainer",
    "build_model",
    "train_step",
    "evaluate",
    "evaluation_sums",
    "training_state_path",
    "parse_model_spec",
    "train_from_spec",
    "he_init",
    "clip_unit_gradients_",
]

# --- one step, one evaluation -------------------------------------------------------------


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    unit_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch; returns the summed loss and the count of correct answers.

    Both results stay on the device (no synchronisation); ``amp_dtype`` enables
    autocast, ``grad_clip`` caps the global gradient norm, ``unit_clip`` each unit's
    gradient relative to its weights (:func:`clip_unit_gradients_`).
    """
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if unit_clip is not None:
        clip_unit_gradients_(model, unit_clip)
    optimizer.step()
    with torch.no_grad():
        correct = (logits.argmax(1) == labels).sum()
    return loss.detach() * len(labels), correct


@torch.no_grad()
def clip_unit_gradients_(
    model: nn.Module, max_ratio: float, *, eps: float = 1e-3
) -> torch.Tensor | None:
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets), in place.

    A unit is one output row of a module's ``weight`` together with the matching
    entry of its ``bias``: a conv filter, a linear neuron, a BatchNorm channel. Each
    unit's gradient ``g_i`` is rescaled to at most ``max_ratio * max(|w_i|, eps)``
    (L2 norms), so no step changes a unit by more than a fixed fraction of its size.
    The bound involves neither the number of units nor their fan-in: a wider copy
    of a model is clipped the same way, unit for unit (a global-norm clip is not:
    the global norm grows with the parameter count). Parameters of modules without
    a ``weight`` are left alone. Returns the fraction of units that were clipped, a
    0-dim tensor on the device (no synchronisation), or None without gradients.

    Examples
    --------
    >>> conv = nn.Conv2d(1, 2, 1)
    >>> with torch.no_grad():
    ...     _ = conv.weight.fill_(1.0), conv.bias.zero_()
    >>> conv.weight.grad = torch.tensor([10.0, 0.01]).view(2, 1, 1, 1)
    >>> conv.bias.grad = torch.zeros(2)
    >>> float(clip_unit_gradients_(conv, 0.1))
    0.5
    >>> [round(g, 6) for g in conv.weight.grad.flatten().tolist()]  # unit 0 cut to 0.1 |w_0|
    [0.1, 0.01]
    """
    clipped, units = None, 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.grad is None or weight.ndim == 0:
            continue
        pairs = [(weight, weight.grad)]
        bias = getattr(module, "bias", None)
        if (
            isinstance(bias, nn.Parameter)
            and bias.grad is not None
            and bias.shape == weight.shape[:1]
        ):
            pairs.append((bias, bias.grad))
        n = weight.shape[0]
        w_norm = sum(p.detach().reshape(n, -1).float().square().sum(1) for p, _ in pairs).sqrt()
        g_norm = sum(g.reshape(n, -1).float().square().sum(1) for _, g in pairs).sqrt()
        limit = max_ratio * w_norm.clamp(min=eps)
        scale = (limit / g_norm.clamp(min=1e-12)).clamp(max=1.0)
        for _, g in pairs:
            g.mul_(scale.to(g.dtype).view(n, *[1] * (g.ndim - 1)))
        count = (g_norm > limit).sum()
        clipped = count if clipped is None else clipped + count
        units += n
    return None if clipped is None else clipped / units


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    amp: bool = True,
    channels_last: bool = False,
) -> dict:
    """Mean cross-entropy loss and accuracy of ``model`` on ``dataset`` (eval mode).

    Examples
    --------
    >>> import torch
    >>> from invert.data import ImageDataset
    >>> from invert.nn.zoo import create_model
    >>> data = ImageDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
    >>> sorted(evaluate(create_model("convpool_c", num_classes=2, width=0.125), data))
    ['accuracy', 'loss']
    """
    device = resolve_device(device)
    batches = torch.arange(len(dataset)).split(batch_size)
    total_loss, correct, count = evaluation_sums(
        model, dataset, batches, device=device, amp=amp, channels_last=channels_last
    )
    if count == 0:
        raise ValueError("cannot evaluate on an empty data set")
    return {"loss": total_loss.item() / count, "accuracy": correct.item() / count}


@torch.no_grad()
def evaluation_sums(model, dataset, batches, *, device, amp=True, channels_last=False):
    """Summed loss (float64), count of correct answers (int64) and item count over ``batches``."""
    was_training = model.training
    model.eval()
    amp_dtype = torch.bfloat16 if (amp and device.type == "cuda") else None
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    memory = in_memory(dataset, device)
    for images, labels in iterate_batches(dataset, batches, device, memory=memory):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        total_loss += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    model.train(was_training)
    return total_loss, correct, count


# --- the trainer ------------------------------------------------------------------------


def training_state_path(out: str | Path) -> Path:
    """Where :func:`train` keeps the resumable state for the checkpoint ``out``.

    Examples
    --------
    >>> training_state_path("runs/model.safetensors").name
    'model.state.pt'
    """
    out = Path(out)
    state = out.with_suffix(".state.pt")
    return state if state != out else out.with_name(out.name + ".state.pt")


def _rng_states() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002 (saving the legacy global state)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def _restore_rng_states(states: Mapping) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        # a state written on a machine with more GPUs (another node of a distributed
        # run) restores the devices this one has
        for index, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


_OUT_FOLDER = "the folder of the checkpoint"


def _check_out_folder(out) -> None:
    check_writable(Path(out).parent, _OUT_FOLDER, "choose another path (--out)")


def check_classes(dataset) -> None:
    """A ``ValueError`` before any training when ``dataset`` has fewer than two classes.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> one = ImageDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 0], ["cat"])
    >>> check_classes(one)
    Traceback (most recent call last):
    ...
    ValueError: the training set has 1 class ('cat'); a classifier needs at least two
    """
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) < 2:
        names = ", ".join(repr(c) for c in classes)
        raise ValueError(
            f"the training set has {len(classes)} class{'es' if len(classes) != 1 else ''}"
            f" ({names}); a classifier needs at least two"
        )


class Trainer:
    """Deterministic, resumable SGD training of a classifier; see :func:`train`.

    Distributed training (:class:`invert.train.distributed.DistributedTrainer`) sets
    ``rank``/``world_size`` (each rank then visits its share of :func:`epoch_order`,
    ``recipe.batch_size / world_size`` items per step) and overrides the hooks
    :meth:`wrap_model`, :meth:`evaluate_on`, ``_reduce_totals`` and ``_load_state``;
    only the main rank writes files and shows progress.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set,
        *,
        test_set=None,
        recipe: str | Recipe = "fast",
        out: str | Path | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        if len(train_set) == 0:
            raise ValueError("the training set is empty")
        check_classes(train_set)
        self.model = model
        self.train_set = train_set
        self.test_set = test_set
        self.recipe = get_recipe(recipe, arch=getattr(model, "arch", None))
        self.out = Path(out) if out is not None else None
        if self.out is not None and self.out.is_dir():
            raise ValueError(f"out must be a file path (e.g. {self.out}/model.safetensors)")
        self.device = resolve_device(device)
        self.progress = progress
        self.seed = seed
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer; got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}); got {rank!r}")
        self.rank, self.world_size = rank, world_size
        if self.out is not None and self.is_main:  # now, not after the first epoch's work
            _check_out_folder(self.out)
        # items per step on this process; the recipe's batch size is the global batch
        self.batch_size = per_rank_batch_size(self.recipe.batch_size, world_size)
        self.history: list[dict] = []
        arch = getattr(model, "arch", "") or ""
        shift = self.recipe.max_shift
        self.max_shift = (4 if arch.startswith("vgg") else 0) if shift is None else shift
        cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if (cuda and self.recipe.hardware.amp) else None
        self.channels_last = cuda and self.recipe.hardware.channels_last

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
        return evaluate(
            self.model,
            dataset,
            batch_size=self.recipe.hardware.eval_batch_size,
            device=self.device,
            amp=self.recipe.hardware.amp,
            channels_last=self.channels_last,
        )

    # -- setup --

    def setup(self) -> None:
        """Normalization from the training set, device placement, optimiser and schedule."""
        from invert.data import channel_statistics

        normalize = getattr(self.model, "normalize", None)
        if normalize is not None and hasattr(normalize, "set_statistics"):
            mean, std = channel_statistics(self.train_set)
            # a constant channel is only centred (dividing by 0 would give NaN)
            normalize.set_statistics(mean, [s if s > 0 else 1.0 for s in std])
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._check_input_size()
        self._memory = in_memory(self.train_set, self.device)
        r = self.recipe
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=r.lr,
            momentum=r.momentum,
            weight_decay=r.weight_decay,
            nesterov=r.nesterov and r.momentum > 0,
        )
        steps = self.steps_per_epoch()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(r, step, steps)
        )
        self.train_model = self.wrap_model(self.model)

    def _check_input_size(self) -> None:
        image, _ = self.train_set[0]
        x = torch.as_tensor(image).unsqueeze(0).to(self.device).float()
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.model(x)
        except RuntimeError as error:
            name = getattr(self.model, "arch", type(self.model).__name__)
            raise ValueError(
                f"images of {tuple(x.shape[1:])} do not fit {name} (too small, or the wrong "
                f"number of channels): {str(error).splitlines()[0]}"
            ) from error
        finally:
            self.model.train(was)

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
            "rng": _rng_states(),
            "history": self.history,
            "order_generator_seed": self.seed,
        }

    def _load_state(self) -> dict | None:
        """The training state to resume from, or None (hook: ranks must agree)."""
        if self.out is None or not training_state_path(self.out).exists():
            return None
        return load_training_state(training_state_path(self.out))

    def _resume(self, path: Path) -> int:
        return self._resume_from(load_training_state(path), path)

    def _resume_from(self, state: dict, path) -> int:
        saved, now = state.get("identity", {}), self._identity()
        for key in now:
            if saved.get(key) != now[key]:
                detail = key
                if key in ("recipe", "config") and isinstance(saved.get(key), dict):
                    diff = [k for k in now[key] if saved[key].get(k) != now[key].get(k)]
                    detail = ", ".join(f"{key}.{k}={saved[key].get(k)!r}" for k in diff[:3])
                raise ValueError(
                    f"cannot resume from {path}: it was made with a different {detail}; start "
                    f"over with resume=False (--no-resume) or choose another output path"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _restore_rng_states(state["rng"])
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
        last = self.history[-1] if self.history else {}
        image, _ = self.train_set[0]
        return {
            "data": getattr(self.train_set, "spec", None),
            "classes": list(getattr(self.train_set, "classes", []) or []),
            "input_size": list(torch.as_tensor(image).shape),
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "epochs": len(self.history),
            "test_accuracy": last.get("test_accuracy"),
            "history": self.history,
        }

    # -- the loop --

    def fit(self, *, resume: bool = True, until=None) -> list[dict]:
        """Train for the recipe's epochs (resuming from ``out``'s state if asked); the history.

        ``until(trainer, record)``, if given, is called after each epoch (before the
        checkpoint is written; it may add entries to ``record``) and stops training
        when it returns True. A resumed run asks it again about its last epoch.
        """
        self.setup()
        threads = self.recipe.hardware.cpu_threads
        with intra_op_threads(threads if self.device.type == "cpu" else None):
            return self._fit(resume, until)

    def _fit(self, resume, until) -> list[dict]:
        start = 0
        state = self._load_state() if resume else None
        if state is not None:
            # ranks other than 0 may have no ``out``: they resume from rank 0's state
            path = training_state_path(self.out) if self.out is not None else "rank 0's state"
            start = self._resume_from(state, path)
            if start and self.progress and self.is_main:
                print(f"resuming {self.out} after epoch {start}", file=sys.stderr)
            if start and until is not None and self.history and until(self, self.history[-1]):
                self.model.eval()
                return self.history
        for epoch in range(start, self.recipe.epochs):
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
        r = self.recipe
        started = time.perf_counter()
        first_lr = self.optimizer.param_groups[0]["lr"]
        # dropout masks: the global RNG, reseeded so the epoch depends on (seed, epoch) only
        torch.manual_seed(derived_seed(self.seed, epoch, DROPOUT, self.rank))
        # augmentation: one stream for the global batch, the same on every rank
        augmenter = torch.Generator().manual_seed(derived_seed(self.seed, epoch, AUGMENT, 0))
        order = epoch_order(
            len(self.train_set),
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
        )
        batches = split_batches(order, self.batch_size)
        self.train_model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(batches),
                desc=f"epoch {epoch + 1}/{r.epochs}",
                unit="batch",
                leave=False,
                file=sys.stderr,
            )
        stream = iterate_batches(
            self.train_set, batches, self.device, r.hardware.num_workers, memory=self._memory
        )
        for step, (images, labels) in enumerate(stream):
            images = self._augment(images, augmenter)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss, hits = train_step(
                self.train_model,
                self.optimizer,
                images,
                labels,
                amp_dtype=self.amp_dtype,
                grad_clip=r.grad_clip,
                unit_clip=r.unit_clip,
            )
            self.scheduler.step()
            loss_sum += loss.double()
            correct += hits
            seen += len(labels)
            if bar is not None:
                bar.update()
                if step % 10 == 0 or step == len(batches) - 1:
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.1%}"
                    )
        if bar is not None:
            bar.close()
        loss_sum, correct, seen = self._reduce_totals(loss_sum, correct, seen)
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            raise ValueError(
                f"training diverged in epoch {epoch + 1} (the loss is not finite); "
                f"lower the learning rate (lr={r.lr})"
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

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flips and shifts of this rank's share of the global batch, as one process draws them."""
        from invert.data import augment

        flip, shift = self.recipe.flip, self.max_shift
        if self.world_size == 1:
            return augment(images, flip=flip, max_shift=shift, generator=generator)
        if not flip and not shift:
            return images
        # augment() is a gather with zero fill, so augmenting a map of pixel numbers
        # (1 ... H*W, 0 = outside) for the whole global batch tells each rank where its
        # rows' pixels come from, with exactly the draws of a single-process run
        n, channels, height, width = images.shape
        pixels = torch.arange(1, height * width + 1, device=images.device)
        pixels = pixels.view(1, 1, height, width).expand(n * self.world_size, 1, height, width)
        source = augment(pixels, flip=flip, max_shift=shift, generator=generator)
        source = source[self.rank :: self.world_size].reshape(n, 1, height * width)
        flat = images.reshape(n, channels, height * width)
        out = flat.gather(2, (source - 1).clamp(min=0).expand(n, channels, height * width))
        return out.masked_fill_(source == 0, 0).view(n, channels, height, width)

    def _reduce_totals(self, loss_sum, correct, seen):
        """Combine an epoch's summed loss, correct count and item count (hook: ranks)."""
        return loss_sum, correct, seen

    def _report(self, record: dict) -> None:
        if not (self.progress and self.is_main):
            return
        line = (
            f"epoch {record['epoch']}/{self.recipe.epochs}: loss {record['train_loss']:.4f}, "
            f"train accuracy {record['train_accuracy']:.1%}"
        )
        if "test_accuracy" in record:
            line += f", test accuracy {record['test_accuracy']:.1%}"
        line += f" ({record['seconds']:.1f} s)"
        print(line, file=sys.stderr)


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
        the same model, recipe, seed and data, otherwise ``ValueError``).
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
    trainer = make_trainer(
        model,
        train_set,
        test_set=test_set,
        recipe=recipe,
        out=out,
        device=device,
        progress=progress,
        seed=seed,
    )
    return trainer.fit(resume=resume)


def make_trainer(model: nn.Module, train_set, **options) -> Trainer:
    """A :class:`Trainer`, or a distributed one inside :func:`invert.train.distributed.distributed`.

    ``options`` are those of :class:`Trainer` (without ``rank``/``world_size``, which
    come from the process group).
    """
    from .distributed import DistributedTrainer, current_context

    context = current_context()
    if context is None:
        return Trainer(model, train_set, **options)
    return DistributedTrainer(model, train_set, context=context, **options)


def he_init(model: nn.Module) -> nn.Module:
    """He et al. (2015) initialisation, with the gain of the activation feeding each layer.

    PyTorch's default initialisation shrinks the signal by about sqrt(6) per ReLU
    layer, which stalls a deep network without BatchNorm such as ConvPool-CNN-C for
    epochs. Here each conv/linear weight is drawn from N(0, gain^2 / fan_in) with
    gain sqrt(2) after ReLU and after CReLU (each of the 2K CReLU channels carries
    half the energy of a pre-activation, as a ReLU channel does) and gain 1 after
    AVR (|x| keeps all of it) and on the raw input; biases start at zero. Used by
    :func:`train_from_spec` for models it builds (recipe ``init="he"``).

    Examples
    --------
    >>> from invert.nn.zoo import create_model
    >>> net = he_init(create_model("convpool_c", width=0.25))
    >>> w = net.conv2.conv.weight.detach()  # after a ReLU: std sqrt(2 / fan_in)
    >>> round(float(w.std() * w[0].numel() ** 0.5), 1)
    1.4
    """
    from invert.nn.activations import AVR, CReLU

    gain = 1.0  # the first layer sees the normalised input
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.normal_(0.0, gain / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.zero_()
        elif isinstance(module, (nn.ReLU, CReLU)):
            gain = math.sqrt(2.0)
        elif isinstance(module, AVR):
            gain = 1.0
    return model


# --- MODEL@DATA ----------------------------------------------------------------------------


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split ``MODEL@DATA`` on the first ``@``; checks the model name.

    Examples
    --------
    >>> parse_model_spec("vgg@cifar10:/data/x@y")
    ('vgg', 'cifar10:/data/x@y')
    """
    from invert.nn.zoo import list_models

    if not isinstance(spec, str):
        raise TypeError(f"expected a MODEL@DATA string; got {type(spec).__name__}")
    model, sep, data = spec.partition("@")
    model, data = model.strip(), data.strip()
    if not sep or not model or not data:
        raise ValueError(
            f"expected MODEL@DATA such as convpool_c_crelu@textures or vgg@cifar10:PATH; "
            f"got {spec!r}"
        )
    if model not in list_models():
        raise ValueError(f"unknown model {model!r}; valid names: {', '.join(list_models())}")
    return model, data


def recipe_datasets(model: str, data: str, recipe: Recipe, *, seed: int = 0):
    """The train and test sets of a MODEL@DATA run (image size from the model)."""
    from invert.data import DataSpec, load_dataset
    from invert.nn.zoo import model_info

    spec = DataSpec.parse(data)
    image_size = spec.image_size(model_info(model)["input_size"])
    options = spec.options(recipe.data.options)
    train_set = load_dataset(data, split="train", image_size=image_size, seed=seed, **options)
    test_set = load_dataset(data, split="test", image_size=image_size, seed=seed, **options)
    return train_set, test_set


def build_model(
    name: str, dataset, recipe: str | Recipe = "fast", *, seed: int | None = None
) -> nn.Module:
    """The zoo model ``name`` for ``dataset``'s classes and channels, as MODEL@DATA runs build it.

    Width and dropout come from the recipe, and its ``init`` (He by default) is
    applied; the weights are drawn from the global torch RNG, seeded by ``seed`` when
    given (just before He's draws, which go layer by layer: two variants built with one
    seed start from the same weights up to the first layer whose shape differs, e.g. the
    conv1 of a ReLU model and of its CReLU variant -- the matched runs of
    ``crelu figures``).

    Examples
    --------
    >>> import torch
    >>> from invert.data import ImageDataset
    >>> data = ImageDataset(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), [0, 1], ["a", "b"])
    >>> net = build_model("convpool_c", data, "tiny")
    >>> net.config["num_classes"], net.config["in_channels"], net.config["width"]
    (2, 1, 0.125)
    """
    from invert.nn.zoo import create_model

    recipe = get_recipe(recipe, arch=name)
    image, _ = dataset[0]
    model = create_model(
        name,
        num_classes=len(dataset.classes),
        in_channels=int(torch.as_tensor(image).shape[0]),
        width=recipe.model.width,
        dropout=recipe.model.dropout,
    )
    if seed is not None:  # after the layers' own (discarded) draws, which differ by variant
        torch.manual_seed(derived_seed(seed, 0, INIT))
    if recipe.model.init == "he":
        he_init(model)
    return model


def train_from_spec(
    spec: str,
    *,
    recipe: str | Recipe = "fast",
    out: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    seed: int = 0,
) -> nn.Module:
    """Build ``MODEL`` for ``DATA``, train it with ``recipe``; the model with ``.metadata``.

    The model gets one class per class of the data set, the recipe's width and
    dropout, and is returned in eval mode; ``model.metadata`` is the checkpoint
    metadata (data, classes, recipe, history ...).
    """
    from invert.version import __version__

    name, data = parse_model_spec(spec)
    recipe = get_recipe(recipe, arch=name)
    from .distributed import current_context

    context = current_context()
    if out is not None and (context is None or context.rank == 0):  # before any work
        _check_out_folder(out)
    train_set, test_set = recipe_datasets(name, data, recipe, seed=seed)
    check_classes(train_set)  # before the model: a one-class head would fail to build
    torch.manual_seed(derived_seed(seed, 0, INIT))  # the initial weights depend on seed only
    model = build_model(name, train_set, recipe, seed=seed)
    trainer = make_trainer(
        model,
        train_set,
        test_set=test_set,
        recipe=recipe,
        out=out,
        device=device,
        progress=progress,
        seed=seed,
    )
    trainer.fit(resume=resume)
    mean, std = model.normalize.statistics()
    model.metadata = {
        "arch": name,
        "config": dict(model.config),
        "normalization": {"mean": mean, "std": std},
        "toolkit_version": __version__,
        **trainer.checkpoint_metadata(),
    }
    return model
