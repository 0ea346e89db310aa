"""Optimisation: one SGD step, the unit-wise gradient clip, the optimiser and its schedule.

The trainer (:class:`~invert.train.loop.Trainer`) calls :func:`train_step` once per batch;
:func:`sgd` and :func:`learning_rate_schedule` build what it steps, from the recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .recipe import Recipe, learning_rate_factor

__all__ = ["clip_unit_gradients_", "learning_rate_schedule", "sgd", "train_step"]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    unit_clip: float | None = None,
    clip_first_conv: bool = True,
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
        clip_unit_gradients_(model, unit_clip, skip_first_conv=not clip_first_conv)
    optimizer.step()
    with torch.no_grad():
        correct = (logits.argmax(1) == labels).sum()
    return loss.detach() * len(labels), correct


@torch.no_grad()
def clip_unit_gradients_(
    model: nn.Module, max_ratio: float, *, eps: float = 1e-3, skip_first_conv: bool = False
) -> torch.Tensor | None:
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets), in place.

    A unit is one output row of a module's ``weight`` together with the matching
    entry of its ``bias``: a conv filter, a linear neuron, a BatchNorm channel. Each
    unit's gradient ``g_i`` is rescaled to at most ``max_ratio * max(|w_i|, eps)``
    (L2 norms), so no step changes a unit by more than a fixed fraction of its size.
    The bound involves neither the number of units nor their fan-in: a wider copy
    of a model is clipped the same way, unit for unit (a global-norm clip is not:
    the global norm grows with the parameter count). Parameters of modules without
    a ``weight`` are left alone, and so is the first ``Conv2d`` with ``skip_first_conv``
    (the layer that reads the image). Returns the fraction of units that were clipped, a
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
    convs = (m for m in model.modules() if isinstance(m, nn.Conv2d))
    first = next(convs, None) if skip_first_conv else None  # no walk on the usual path
    for module in model.modules():
        if module is first:
            continue
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


def sgd(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD over the model's parameters with the recipe's peak rate, momentum and decay.

    Examples
    --------
    >>> from invert.train.recipe import Recipe
    >>> sgd(nn.Linear(2, 2), Recipe(lr=0.1)).param_groups[0]["lr"]
    0.1
    """
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )


def learning_rate_schedule(optimizer, recipe: Recipe, steps_per_epoch: int):
    """The recipe's learning-rate schedule, stepped once per optimisation step.

    Examples
    --------
    >>> from invert.train.recipe import Recipe
    >>> recipe = Recipe(epochs=2, lr=0.1, schedule="cosine")
    >>> optimizer = sgd(nn.Linear(2, 2), recipe)
    >>> schedule = learning_rate_schedule(optimizer, recipe, steps_per_epoch=10)
    >>> for _ in range(10):
    ...     optimizer.step(); schedule.step()
    >>> round(optimizer.param_groups[0]["lr"], 6)  # half-way down the cosine
    0.05
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(recipe, step, steps_per_epoch)
    )
