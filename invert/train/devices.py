"""Device and precision setup of a run: bf16 autocast and channels-last on CUDA, plain
float32 on the CPU, and the model placed and checked before the first step."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from invert.errors import UserError

__all__ = ["autocast", "autocast_dtype", "check_input_size", "eval_mode", "place_model"]


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bfloat16 when ``amp`` is asked for on CUDA; None (plain float32) otherwise.

    Examples
    --------
    >>> autocast_dtype(torch.device("cpu"), True) is None
    True
    """
    return torch.bfloat16 if (amp and device.type == "cuda") else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; does nothing for ``dtype=None``.

    Examples
    --------
    >>> with autocast(torch.device("cpu"), None):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.float32
    """
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """The block runs ``model`` in eval mode; its train/eval mode is restored after.

    Examples
    --------
    >>> net = nn.Dropout()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def place_model(model: nn.Module, train_set, device: torch.device, channels_last: bool) -> None:
    """Normalization from ``train_set``, the model on ``device`` (channels-last if asked).

    A constant channel of the training set is only centred (dividing by 0 would give NaN).

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> from invert.nn.zoo import create_model
    >>> data = ImageDataset(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8), [0, 1], ["a", "b"])
    >>> net = create_model("convpool_c", num_classes=2, width=0.125)
    >>> place_model(net, data, torch.device("cpu"), channels_last=False)
    >>> net.normalize.statistics()  # constant channels: centred, not scaled
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    """
    from invert.data import channel_statistics

    normalize = getattr(model, "normalize", None)
    if normalize is not None and hasattr(normalize, "set_statistics"):
        mean, std = channel_statistics(train_set)
        normalize.set_statistics(mean, [s if s > 0 else 1.0 for s in std])
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def check_input_size(model: nn.Module, train_set, device: torch.device) -> None:
    """A :class:`~invert.errors.UserError` before training when the images do not fit.

    Examples
    --------
    >>> from invert.data import ImageDataset
    >>> data = ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0, 1], ["a", "b"])
    >>> check_input_size(nn.Conv2d(3, 2, 3), data, torch.device("cpu"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    invert.errors.UserError: images of (1, 4, 4) do not fit Conv2d (too small, or the wrong ...
    """
    image, _ = train_set[0]
    x = torch.as_tensor(image).unsqueeze(0).to(device).float()
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    except RuntimeError as error:
        name = getattr(model, "arch", type(model).__name__)
        raise UserError(
            f"images of {tuple(x.shape[1:])} do not fit {name} (too small, or the wrong "
            f"number of channels): {str(error).splitlines()[0]}"
        ) from error
