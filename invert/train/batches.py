"""What each training step sees: seeded item orders, batches, and batches on the device.

Everything random in a run comes from :func:`derived_seed`, a pure function of
``(seed, epoch, stream, rank)``, so resuming after an epoch replays the next ones exactly
and the result does not depend on what else runs in the process.
"""

from __future__ import annotations

import numpy as np
import torch

from invert.errors import UserError

__all__ = [
    "AUGMENT",
    "DROPOUT",
    "INIT",
    "ORDER",
    "derived_seed",
    "epoch_order",
    "in_memory",
    "iterate_batches",
    "per_rank_batch_size",
    "split_batches",
]


#: Independent random streams of a run: item order, augmentation, dropout, initial weights.
ORDER, AUGMENT, DROPOUT, INIT = 0, 1, 2, 3


def derived_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A 63-bit seed that depends only on its arguments (numpy's SeedSequence hashing).

    Examples
    --------
    >>> derived_seed(0, 3, ORDER) == derived_seed(0, 3, ORDER) != derived_seed(0, 3, AUGMENT)
    True
    """
    state = np.random.SeedSequence([seed, epoch, stream, rank]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def epoch_order(
    num_items: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """The item indices one process visits in an epoch, a pure function of the arguments.

    All ranks draw the same permutation of ``range(num_items)``; rank ``r`` takes
    positions ``r, r + world_size, ...`` after padding the permutation with its own
    beginning to a multiple of ``world_size`` (as
    :class:`torch.utils.data.DistributedSampler` does), so every rank gets the same
    number of items.

    Examples
    --------
    >>> a = epoch_order(10, seed=0, epoch=3)
    >>> bool((a == epoch_order(10, seed=0, epoch=3)).all()), sorted(a.tolist()) == list(range(10))
    (True, True)
    >>> halves = [epoch_order(10, seed=0, epoch=3, rank=r, world_size=2) for r in (0, 1)]
    >>> sorted(torch.cat(halves).tolist()) == list(range(10))
    True
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"rank must lie in [0, world_size); got rank={rank}, world={world_size}")
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch, ORDER))
    order = torch.randperm(num_items, generator=generator)
    if world_size > 1:
        padded = -(-num_items // world_size) * world_size
        order = torch.cat([order, order[: padded - num_items]])
        order = order[rank::world_size]
    return order


def split_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches of ``batch_size``, the ragged last one dropped.

    Examples
    --------
    >>> [b.tolist() for b in split_batches(torch.arange(5), 2)]
    [[0, 1], [2, 3]]
    """
    # drop the ragged last batch (a batch of one breaks BatchNorm); a different
    # handful of items is left out each epoch since the order changes
    if len(order) <= batch_size:
        return [order] if len(order) else []
    full = len(order) // batch_size
    return list(order[: full * batch_size].split(batch_size))


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """Items per step on each of ``world_size`` processes for a global ``batch_size``.

    Examples
    --------
    >>> per_rank_batch_size(128, 4)
    32
    >>> per_rank_batch_size(100, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: the batch size 100 is not divisible by the world size 3; ...
    """
    if world_size < 1:
        raise UserError(f"the world size must be a positive integer; got {world_size}")
    if batch_size % world_size:
        raise UserError(
            f"the batch size {batch_size} is not divisible by the world size {world_size}; "
            f"choose a batch size that is a multiple of the number of processes (--batch-size)"
        )
    return batch_size // world_size


def in_memory(dataset, device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(uint8 images, int64 labels)`` of an in-memory data set, on ``device`` if given.

    On CUDA the whole uint8 set moves to the device once (CIFAR-10 is 150 MB), so a
    batch costs one gather and one conversion there.
    """
    images = getattr(dataset, "images", None)  # lazy data sets raise AttributeError: None
    labels = getattr(dataset, "labels", None)
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8) or labels is None:
        return None
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if device is not None and torch.device(device).type == "cuda":
        images, labels = images.to(device), labels.to(device)
    return images, labels


def iterate_batches(dataset, batches, device, num_workers: int = 0, memory=None):
    """Yield ``(float images in [0, 1], labels)`` on ``device``, one per index batch.

    In-memory data sets (or ``memory``, their tensors from :func:`in_memory`) are
    indexed directly, uint8 -> float per batch; others go through a DataLoader that
    reads exactly the same batches.
    """
    memory = memory if memory is not None else in_memory(dataset)
    if memory is not None:
        images, labels = memory
        for index in batches:
            index = index.to(images.device)
            x = images[index].to(device, non_blocking=True).float().div_(255)
            yield x, labels[index].to(device, non_blocking=True)
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True).float(), y.to(device, non_blocking=True)
