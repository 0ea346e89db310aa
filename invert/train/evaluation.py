"""Evaluation: the model's logits over batches of a data set, and its loss and accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from invert.device import resolve_device
from invert.errors import UserError

from .batches import in_memory, iterate_batches
from .devices import autocast, autocast_dtype, eval_mode

__all__ = ["batch_logits", "evaluate", "evaluation_sums"]


def batch_logits(model, dataset, batches, *, device, amp=True, channels_last=False,
                 num_workers=0, transform=None):  # fmt: skip
    """``(logits, labels)`` of each batch of ``dataset`` (indices ``batches``), eval mode.

    ``transform(images)``, if given, maps a batch before the model sees it (crops); the
    model's train/eval mode is restored when the iteration ends.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> data = ImageDataset(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), [0, 1, 0, 1, 0], ["a", "b"])
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> batches = torch.arange(5).split(2)
    >>> cpu = torch.device("cpu")
    >>> [tuple(logits.shape) for logits, _ in batch_logits(net, data, batches, device=cpu)]
    [(2, 2), (2, 2), (1, 2)]
    """
    dtype = autocast_dtype(device, amp)
    memory = in_memory(dataset, device)
    with torch.no_grad(), eval_mode(model):
        for images, labels in iterate_batches(dataset, batches, device, num_workers,
                                              memory=memory):  # fmt: skip
            if transform is not None:
                images = transform(images)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(images)
            yield logits, labels


@torch.no_grad()
def evaluation_sums(model, dataset, batches, *, device, amp=True, channels_last=False):
    """Summed loss (float64), count of correct answers (int64) and item count over ``batches``.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> data = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))  # zero logits
    >>> loss, correct, count = evaluation_sums(net, data, [torch.arange(4)],
    ...                                        device=torch.device("cpu"))
    >>> round(float(loss), 4), int(correct), count  # ln 2 per item; ties go to class 0
    (2.7726, 2, 4)
    """
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for logits, labels in batch_logits(model, dataset, batches, device=device, amp=amp,
                                       channels_last=channels_last):  # fmt: skip
        total_loss += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    return total_loss, correct, count


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
    return mean_loss_and_accuracy(total_loss, correct, count)


def mean_loss_and_accuracy(total_loss, correct, count) -> dict:
    """``{"loss", "accuracy"}`` from the sums of :func:`evaluation_sums`.

    Examples
    --------
    >>> mean_loss_and_accuracy(torch.tensor(3.0), torch.tensor(3), 4)
    {'loss': 0.75, 'accuracy': 0.75}
    """
    if count == 0:
        raise UserError("cannot evaluate on an empty data set")
    return {"loss": float(total_loss) / count, "accuracy": int(correct) / int(count)}
