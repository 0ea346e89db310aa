"""The settings of one training run, as one value passed from the entry points down.

Every way of training -- :func:`~invert.train.train`, :func:`~invert.train.train_from_spec`,
the protocols, the model cache -- needs the same six things: the recipe, where to write,
whether to resume, the device, whether to show progress and the seed. They travel as one
:class:`RunSettings`; a protocol that trains several models changes ``out`` per model with
:meth:`RunSettings.replace`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from invert.errors import UserError, UserTypeError

from .recipe import Recipe

if TYPE_CHECKING:
    import torch

__all__ = ["RunSettings"]


@dataclass(frozen=True)
class RunSettings:
    """What a training run does besides the model and the data.

    Parameters
    ----------
    recipe : {"tiny", "fast", "paper"} or Recipe
        How to optimise (see :mod:`invert.train.recipe`); a name is resolved for the
        model's architecture when the run starts.
    out : path, optional
        The checkpoint file written after every epoch (the training state goes next to
        it); for a protocol, the folder of its models' checkpoints.
    resume : bool
        Continue from ``out``'s training state when there is one.
    device : str or torch.device, optional
        Default ``cuda`` when available, else ``cpu``.
    progress : bool
        Show progress bars and one line per epoch on stderr.
    seed : int
        Seeds the initial weights (MODEL@DATA runs), item order, augmentation and dropout.

    Examples
    --------
    >>> run = RunSettings(recipe="tiny", device="cpu", progress=False)
    >>> run.replace(out="runs/a.safetensors").out.name, run.seed
    ('a.safetensors', 0)
    >>> RunSettings(seed=-1)
    Traceback (most recent call last):
    ...
    invert.errors.UserError: seed must be a non-negative integer; got -1
    """

    recipe: str | Recipe = "fast"
    out: Path | None = None
    resume: bool = True
    device: str | torch.device | None = None
    progress: bool = True
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.recipe, (str, Recipe)):
            raise UserTypeError(
                f"recipe must be a recipe name or a Recipe; got {type(self.recipe).__name__}"
            )
        if not isinstance(self.progress, bool):  # one convention: no callbacks
            raise UserTypeError(f"progress must be True or False; got {self.progress!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be a non-negative integer; got {self.seed!r}")
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))

    def replace(self, **changes) -> RunSettings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)
