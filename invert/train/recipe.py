"""How to train: the recipe (optimiser, schedule, augmentation), and apart from it how a
``MODEL@DATA`` run builds the model, which data it loads and on what hardware it runs.

A :class:`Recipe` holds the optimisation: SGD settings, the learning-rate schedule, the
augmentation and the stabiliser. Three small settings types sit beside it and travel in
it, because a named recipe (``tiny``, ``fast``, ``paper``) fixes all of them at once:

* :class:`ModelSettings`: width, dropout and initialisation of models built from specs;
* :class:`DataSettings`: options of :func:`~invert.data.load_dataset` (texture counts);
* :class:`Hardware`: evaluation batch size, loader processes, bf16 autocast and
  channels-last on CUDA -- how fast, never what is learned on the CPU.

``recipe.replace(epochs=3, width=0.5, eval_batch_size=64)`` routes each change to the
part that holds it.

Recipes (:data:`RECIPES`, or any :class:`Recipe`):

``tiny``
    Seconds, for tests: width 0.125, 16 + 8 texture crops per class, 2 epochs.
``fast``
    Minutes on two CPU cores: width 0.25 (the ``alexnet64*`` family: 1), 200 + 100
    texture crops per class, 10 epochs of SGD with one warm-up epoch, cosine decay and the
    unit-wise gradient clip (:data:`UNIT_CLIP`).
``paper``
    The paper's CIFAR setup at full width, for a GPU: Springenberg et al.'s schedule
    for ConvPool-CNN-C (and All-CNN-B), Zagoruyko's for VGG (with random shifts), plus
    our unit-wise clip where there is no BatchNorm.

Why the recipes and the zoo's class layer are as they are (dead class scores, the clip,
He initialisation, what ``fast`` reaches): the training study in ``docs/training/``
(``docs/index.md`` lists its pages).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from invert.errors import UserError, UserTypeError

__all__ = [
    "RECIPES",
    "UNIT_CLIP",
    "DataSettings",
    "Hardware",
    "ModelSettings",
    "Recipe",
    "get_recipe",
    "learning_rate_factor",
]

_SCHEDULES = ("cosine", "step", "constant")


def _check_number(owner: str, name: str, value, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{owner} {name} must be a finite number; got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise UserError(f"{owner} {name} must be {bound}; got {value!r}")


def _check_count(owner: str, name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{owner} {name} must be an integer >= {minimum}; got {value!r}")


@dataclass(frozen=True)
class ModelSettings:
    """How ``MODEL@DATA`` runs build the model.

    Parameters
    ----------
    width : float
        Filter-count multiplier (:func:`~invert.nn.create_model`).
    dropout : float or None
        Replaces every dropout rate; None keeps the architecture's rates.
    init : {"he", "default"}
        :func:`~invert.train.spec.he_init`, or PyTorch's own initialisation.
    """

    width: float = 1.0
    dropout: float | None = None
    init: str = "he"

    def __post_init__(self):
        _check_number("recipe", "width", self.width, positive=True)
        if self.dropout is not None and not (
            isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1
        ):
            raise UserError(f"recipe dropout must be None or in [0, 1); got {self.dropout!r}")
        if self.init not in ("he", "default"):
            raise UserError(f"recipe init must be 'he' or 'default'; got {self.init!r}")


@dataclass(frozen=True)
class DataSettings:
    """Options of :func:`~invert.data.load_dataset` for sources that take them (textures:
    ``train_per_class``, ``test_per_class``, ``context``, ``test_fraction``)."""

    options: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "options", dict(self.options))


@dataclass(frozen=True)
class Hardware:
    """How fast, not what: evaluation batch size, loader processes, CUDA precision/layout.

    Parameters
    ----------
    eval_batch_size : int
        Items per step when evaluating.
    num_workers : int
        Loader processes for data sets read from disk (folders).
    amp, channels_last : bool
        bfloat16 autocast and channels-last memory on CUDA (ignored on the CPU).
    cpu_threads : int or None
        Intra-op threads while training on the CPU (restored after); None keeps torch's
        setting. The summation order of a gradient depends on the thread count, so a
        fixed count makes a run give the same weights whatever else runs beside it.
    """

    eval_batch_size: int = 256
    num_workers: int = 2
    amp: bool = True
    channels_last: bool = True
    cpu_threads: int | None = None

    def __post_init__(self):
        _check_count("recipe", "eval_batch_size", self.eval_batch_size)
        _check_count("recipe", "num_workers", self.num_workers, minimum=0)
        if self.cpu_threads is not None:
            _check_count("recipe", "cpu_threads", self.cpu_threads)


_PARTS = {"model": ModelSettings, "data": DataSettings, "hardware": Hardware}


@dataclass(frozen=True)
class Recipe:
    """How to optimise: SGD, the learning-rate schedule, augmentation, the stabiliser.

    Parameters
    ----------
    name : str
        A label, recorded in checkpoints.
    epochs, batch_size : int
        Length of training and items per SGD step (the global batch: a distributed
        run splits it evenly across its processes).
    lr, momentum, weight_decay, nesterov
        SGD settings; ``lr`` is the peak learning rate.
    schedule : {"cosine", "step", "constant"}
        ``cosine``: half-cosine decay from ``lr`` to 0 over all steps; ``step``:
        multiply by ``gamma`` at each epoch in ``milestones``; ``constant``.
    milestones : tuple of int
        Epochs (counted from 0) at which a ``step`` schedule decays.
    gamma : float
        Decay factor of the ``step`` schedule.
    warmup_epochs : float
        Linear warm-up from ``lr / steps`` to ``lr`` over this many epochs.
    grad_clip : float or None
        Rescale the gradient to at most this global L2 norm before each step. Not
        used by the built-in recipes: the global norm grows with the parameter count,
        so one threshold throttles a wider model more (``docs/training/unit-wise-clip.md``).
    unit_clip : float or None
        Unit-wise adaptive gradient clipping
        (:func:`~invert.train.optimisation.clip_unit_gradients_`): before each step, rescale
        the gradient of every unit (a filter with its bias, or a BatchNorm channel) to
        at most ``unit_clip`` times the unit's weight norm. The bound is relative and
        per unit, so it acts the same on a model and on a wider copy of it.
    clip_first_conv : bool
        Whether ``unit_clip`` also bounds the first conv layer, the one that reads the
        image. ``False`` for the AlexNet-layout family under ``fast``: clipped, its conv1
        kept a cosine of 0.985 with its initial weights after 10 epochs (it hardly
        learned, and its pairing, Figs. 1-3, was that of random filters); unclipped 0.94,
        at the same test accuracy (``docs/training/first-layer-clip.md``).
    flip : bool
        Random horizontal flips.
    max_shift : int or None
        Random shifts of up to this many pixels; None: 4 for the VGG family (the
        paper's VGG recipe), 0 otherwise.
    model, data, hardware : ModelSettings, DataSettings, Hardware
        The settings of ``MODEL@DATA`` runs that travel with the recipe.

    Examples
    --------
    >>> r = Recipe(epochs=3).replace(lr=0.1, width=0.5, eval_batch_size=32)
    >>> r.lr, r.model.width, r.hardware.eval_batch_size
    (0.1, 0.5, 32)
    """

    name: str = "custom"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    unit_clip: float | None = None
    clip_first_conv: bool = True
    flip: bool = True
    max_shift: int | None = None
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    hardware: Hardware = field(default_factory=Hardware)

    def __post_init__(self):
        _check_count("recipe", "epochs", self.epochs)
        _check_count("recipe", "batch_size", self.batch_size)
        _check_number("recipe", "lr", self.lr, positive=True)
        for name in ("momentum", "weight_decay", "gamma", "warmup_epochs"):
            _check_number("recipe", name, getattr(self, name))
        for name in ("grad_clip", "unit_clip"):
            if getattr(self, name) is not None:
                _check_number("recipe", name, getattr(self, name), positive=True)
        if self.schedule not in _SCHEDULES:
            raise UserError(f"recipe schedule must be one of {_SCHEDULES}; got {self.schedule!r}")
        if self.max_shift is not None:
            _check_count("recipe", "max_shift", self.max_shift, minimum=0)
        for part, kind in _PARTS.items():
            if not isinstance(getattr(self, part), kind):
                raise UserTypeError(f"recipe {part} must be a {kind.__name__}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (stored in checkpoints and in the model cache's key)."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed, a field of ``model``/``data``/``hardware`` by
        its own name (``width=0.5``, ``options={...}``); ``None`` values are ignored."""
        changes = {k: v for k, v in changes.items() if v is not None}
        own = {f.name for f in dataclasses.fields(self)}
        parts = {}
        for part, kind in _PARTS.items():
            names = {f.name for f in dataclasses.fields(kind)}
            moved = {k: changes.pop(k) for k in list(changes) if k in names and k not in own}
            if moved:
                parts[part] = dataclasses.replace(getattr(self, part), **moved)
        unknown = set(changes) - own
        if unknown:
            raise UserTypeError(f"unknown recipe field(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes, **parts)

    def learning_rate_factor(self, step: int, steps_per_epoch: int) -> float:
        """The schedule's multiplier of ``lr`` at optimisation step ``step`` (from 0).

        Examples
        --------
        >>> Recipe(epochs=2, schedule="cosine").learning_rate_factor(10, 10)
        0.5
        """
        total = self.epochs * steps_per_epoch
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return (step + 1) / warmup
        if self.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if self.schedule == "step":
            epoch = step // steps_per_epoch
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        return 1.0


def learning_rate_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """:meth:`Recipe.learning_rate_factor` as a function (``LambdaLR`` takes this form)."""
    return recipe.learning_rate_factor(step, steps_per_epoch)


#: The unit-wise gradient clip of the recipes (:attr:`Recipe.unit_clip`): each unit's
#: gradient is at most 5% of the unit's weight norm; chosen on the fast recipe from
#: {0.05, 0.2, 0.5} (``docs/training/unit-wise-clip.md``).
UNIT_CLIP = 0.05


def _paper_recipe(arch: str | None) -> Recipe:
    if arch is not None and arch.startswith("vgg"):
        # Zagoruyko's cifar.torch: SGD momentum 0.9, weight decay 5e-4, batch 128, 300
        # epochs, learning rate halved every 25 epochs. His Torch7 run starts at lr 1;
        # ours starts at 0.1, the value PyTorch ports of the recipe use.
        return Recipe(
            name="paper", epochs=300, batch_size=128, lr=0.1, weight_decay=5e-4,
            schedule="step", milestones=tuple(range(25, 300, 25)), gamma=0.5, max_shift=4,
        )  # fmt: skip
    # Springenberg et al. (2014) for ConvPool-CNN-C on CIFAR: SGD momentum 0.9, weight
    # decay 1e-3, 350 epochs, learning rate x0.1 after epochs 200, 250, 300; they pick
    # the rate from {0.25, 0.1, 0.05, 0.01} on validation data, we fix 0.05. Ours: the
    # unit-wise gradient clip of the fast recipe (the same bound for every variant; see
    # docs/training/unit-wise-clip.md) -- He-initialised ConvPool-CNN-C has no BatchNorm,
    # and plain SGD diverged in our CPU runs at half this rate. The same recipe serves
    # All-CNN-B.
    return Recipe(
        name="paper", epochs=350, batch_size=128, lr=0.05, weight_decay=1e-3,
        schedule="step", milestones=(200, 250, 300), gamma=0.1, unit_clip=UNIT_CLIP,
    )  # fmt: skip


def _is_alexnet64(arch: str | None) -> bool:
    return arch is not None and arch.startswith("alexnet64")


def _fast_width(arch: str | None) -> float:
    # the AlexNet-layout family is CPU-sized already: its conv1 keeps AlexNet's 96
    # filters of 11x11x3, which the pairing statistic of Figs. 1-3 is about
    return 1.0 if _is_alexnet64(arch) else 0.25


RECIPES = {
    # seconds on a CPU: for tests and smoke runs only
    "tiny": lambda arch: Recipe(
        name="tiny", epochs=2, batch_size=32, lr=0.02, schedule="constant", unit_clip=UNIT_CLIP,
        model=ModelSettings(width=0.125, dropout=0.0),
        hardware=Hardware(num_workers=0, cpu_threads=1),
        data=DataSettings({"train_per_class": 16, "test_per_class": 8}),
    ),
    # minutes on two CPU cores: a quarter-width model on 2600 texture crops reaches
    # about 83-87% test accuracy on the 13 texture classes (chance: 7.7%)
    "fast": lambda arch: Recipe(
        name="fast", epochs=10, batch_size=64, lr=0.02, weight_decay=5e-4,
        schedule="cosine", warmup_epochs=1.0, unit_clip=UNIT_CLIP,
        clip_first_conv=not _is_alexnet64(arch),
        model=ModelSettings(width=_fast_width(arch), dropout=0.0),
        hardware=Hardware(cpu_threads=1),
        data=DataSettings({"train_per_class": 200, "test_per_class": 100}),
    ),
    # the paper's CIFAR setup, full width: meant for a GPU
    "paper": _paper_recipe,
}  # fmt: skip


def get_recipe(recipe: str | Recipe = "fast", *, arch: str | None = None) -> Recipe:
    """The named recipe (``tiny``, ``fast``, ``paper``) for a model, or ``recipe`` itself.

    ``paper`` depends on the family: VGG gets Zagoruyko's schedule and random shifts,
    the others Springenberg's.

    Examples
    --------
    >>> get_recipe("tiny").epochs
    2
    >>> get_recipe("paper", arch="vgg").max_shift
    4
    """
    if isinstance(recipe, Recipe):
        return recipe
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(RECIPES)}")
    return RECIPES[recipe](arch)
