"""``MODEL@DATA`` runs: a zoo model built for a data set, He-initialised, trained by a recipe.

:func:`train_from_spec` is the entry point (keywords), :func:`fit_spec` the same with one
:class:`~invert.train.settings.RunSettings`; :func:`build_model` and :func:`recipe_datasets`
are the two halves of what it prepares.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from invert.errors import UserError, UserTypeError
from invert.progress import say

from .batches import INIT, derived_seed
from .distributed import current_context, make_trainer
from .loop import check_classes, check_out_folder
from .metadata import model_metadata
from .recipe import Recipe, get_recipe
from .settings import RunSettings

__all__ = [
    "build_model",
    "fit_spec",
    "he_init",
    "parse_model_spec",
    "recipe_datasets",
    "train_from_spec",
]


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


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split ``MODEL@DATA`` on the first ``@``; checks the model name.

    Examples
    --------
    >>> parse_model_spec("vgg@cifar10:/data/x@y")
    ('vgg', 'cifar10:/data/x@y')
    """
    from invert.nn.zoo import list_models

    if not isinstance(spec, str):
        raise UserTypeError(f"expected a MODEL@DATA string; got {type(spec).__name__}")
    model, sep, data = spec.partition("@")
    model, data = model.strip(), data.strip()
    if not sep or not model or not data:
        raise UserError(
            f"expected MODEL@DATA such as convpool_c_crelu@textures or vgg@cifar10:PATH; "
            f"got {spec!r}"
        )
    if model not in list_models():
        raise UserError(f"unknown model {model!r}; valid names: {', '.join(list_models())}")
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
    given (before the layers' own draws, and again just before He's, which go layer by
    layer: two variants built with one seed start from the same weights up to the first
    layer whose shape differs, e.g. the conv1 of a ReLU model and of its CReLU variant --
    the matched runs of ``crelu figures``). :func:`fit_spec` builds its model this way, so
    the same call rebuilds a run's initial weights.

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
    if seed is not None:  # the layers' own draws: the weights with init "default"
        torch.manual_seed(derived_seed(seed, 0, INIT))
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
    metadata (data, classes, recipe, history ...). The keywords are those of
    :class:`~invert.train.settings.RunSettings`.
    """
    run = RunSettings(recipe=recipe, out=out, resume=resume, device=device, progress=progress,
                      seed=seed)  # fmt: skip
    return fit_spec(spec, run)


def fit_spec(spec: str, settings: RunSettings) -> nn.Module:
    """:func:`train_from_spec` with the run's settings as one value.

    The initial weights depend on ``settings.seed`` only (:func:`build_model`).

    Examples
    --------
    >>> from invert.train import get_recipe
    >>> tiny = get_recipe("tiny").replace(epochs=1, options={"train_per_class": 4,
    ...                                                      "test_per_class": 2})
    >>> net = fit_spec("convpool_c@textures", RunSettings(recipe=tiny, device="cpu",
    ...                                                     progress=False))
    >>> net.metadata["arch"], net.metadata["epochs"], net.training
    ('convpool_c', 1, False)
    """
    name, data = parse_model_spec(spec)
    recipe = get_recipe(settings.recipe, arch=name)
    settings = settings.replace(recipe=recipe)
    context = current_context()
    main = context is None or context.rank == 0
    if settings.out is not None and main:  # before any work
        check_out_folder(settings.out)
    train_set, test_set = recipe_datasets(name, data, recipe, seed=settings.seed)
    check_classes(train_set)  # before the model: a one-class head would fail to build
    say(settings.progress and main, f"training {name} on {data} (recipe {recipe.name}, "
                                    f"{recipe.epochs} epochs, seed {settings.seed})")  # fmt: skip
    model = build_model(name, train_set, recipe, seed=settings.seed)
    trainer = make_trainer(model, train_set, test_set=test_set, settings=settings)
    trainer.fit()
    model.metadata = model_metadata(model, arch=name, **trainer.checkpoint_metadata())
    return model
