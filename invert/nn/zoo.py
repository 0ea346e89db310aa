"""The model zoo: the paper's architectures as data, and a small registry.

Each family is a list of layer specs; each registered variant says which conv
layers use CReLU or AVR instead of ReLU and which have their filter count halved.
:func:`create_model` turns a registry name into a :class:`~invert.nn.net.Net` whose
layers are named ``conv1``, ``pool1``, ``drop1`` ... in execution order.

Families (the paper's Section F is unavailable; where it is silent we follow the
cited original architectures):

* **ConvPool-CNN-C** (Springenberg et al. 2014, Table 1 and 2, for 32x32 inputs):
  three 3x3 conv layers of 96 filters, 3x3 max-pool stride 2, three 3x3 conv layers
  of 192, 3x3 max-pool stride 2, a 3x3 conv of 192 without padding, a 1x1 conv of
  192, each followed by ReLU, a 1x1 conv with one filter per class, and global
  average pooling. Dropout 20% on the input and 50% after each pooling layer.
  Our choices: max-pooling pads by 1 (32 -> 16 -> 8); the class layer is linear in
  every variant. Springenberg's table puts a ReLU on the class scores too; we drop
  it (a deviation) because it kills training: a class unit that is negative all over
  the images of its class scores 0 on them, gets no gradient from them and never
  wins. In our runs CReLU lost 5 of 13 classes that way, and all 13 without
  gradient clipping (see :mod:`invert.train`). A softmax needs no rectified scores,
  and CReLU there would double the class count.
* **VGG** for CIFAR (Zagoruyko 2015): thirteen 3x3 conv + BatchNorm + ReLU layers
  (64, 64, 128, 128, 256 x3, 512 x6) with dropout 0.3/0.4 after the first conv of
  each stage and 2x2 max-pools, then dropout 0.5, linear 512, BatchNorm, ReLU,
  dropout 0.5, linear to the classes.
* **All-CNN-B** (Springenberg et al. 2014, Table 6, for 224x224 inputs): 11x11/4
  conv 96, 1x1 96, 3x3/2 96, 5x5 256, 1x1 256, 3x3/2 256, 3x3 384, 1x1 384, 3x3/2 384,
  dropout 50%, 3x3 1024, 1x1 1024, 1x1 to the classes, global average pooling.
  Our choice: conv1 pads by 2 and the stride-2 layers by 0, giving AlexNet's maps
  55 -> 27 -> 13 -> 6; the class layer is linear, as in ConvPool-CNN-C.
  ``allcnn_b_crelu_all`` puts CReLU with halved filters on *every* layer, the class
  layer's included (500 filters -> 1000 class scores), which is what reproduces the
  4.7M parameters of the paper's Table 5.
* **AlexNet layout at 64 px** (ours, issue 16; the network of the paper's Figs. 1-3):
  AlexNet's conv1 unchanged (96 filters of 11x11x3, stride 4, pad 2), 3x3/2 max-pool,
  a 5x5 conv of 64, 3x3/2 max-pool, 3x3 convs of 96, 96 and 64, 3x3/2 max-pool, a 1x1
  class layer and global average pooling (no fully connected head): 64 -> 15 -> 7 -> 3
  -> 1 pixels. ``alexnet64`` (ReLU) and ``alexnet64_crelu`` (CReLU on conv1-conv5, same
  filters); the ``fast`` recipe trains them at width 1 on two CPU cores.

Reference architectures (:mod:`invert.nn.reference`; no weights; torchvision's exact
layout, so a torchvision state dict loads): ``alexnet``, ``vgg11``, ``vgg11_bn``,
``vgg16``, ``vgg16_bn``, ``resnet18``, ``resnet50``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from torch import nn

from invert.errors import UserError
from invert.validation import check_positive, check_positive_int

from .activations import AVR, CReLU
from .net import Net, Normalize
from .reference import REFERENCE

__all__ = ["create_model", "list_models", "register_model", "model_info"]


# --- architectures as data -------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    filters: int | None  # None: one filter per class
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class MaxPool:
    kernel: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False


@dataclass(frozen=True)
class Dropout:
    rate: float


@dataclass(frozen=True)
class Classifier:
    """Flatten, then dropout / linear / BatchNorm / ReLU blocks (VGG's head)."""

    hidden: tuple[int, ...]
    dropout: float


CONVPOOL_C = (
    Dropout(0.2),
    Conv(96, 3, padding=1), Conv(96, 3, padding=1), Conv(96, 3, padding=1),
    MaxPool(3, 2, padding=1), Dropout(0.5),
    Conv(192, 3, padding=1), Conv(192, 3, padding=1), Conv(192, 3, padding=1),
    MaxPool(3, 2, padding=1), Dropout(0.5),
    Conv(192, 3), Conv(192, 1), Conv(None, 1),
)  # fmt: skip

VGG_CIFAR = (
    Conv(64, 3, padding=1), Dropout(0.3), Conv(64, 3, padding=1),
    MaxPool(2, 2, ceil_mode=True),
    Conv(128, 3, padding=1), Dropout(0.4), Conv(128, 3, padding=1),
    MaxPool(2, 2, ceil_mode=True),
    Conv(256, 3, padding=1), Dropout(0.4), Conv(256, 3, padding=1), Dropout(0.4),
    Conv(256, 3, padding=1),
    MaxPool(2, 2, ceil_mode=True),
    Conv(512, 3, padding=1), Dropout(0.4), Conv(512, 3, padding=1), Dropout(0.4),
    Conv(512, 3, padding=1),
    MaxPool(2, 2, ceil_mode=True),
    Conv(512, 3, padding=1), Dropout(0.4), Conv(512, 3, padding=1), Dropout(0.4),
    Conv(512, 3, padding=1),
    MaxPool(2, 2, ceil_mode=True),
    Classifier(hidden=(512,), dropout=0.5),
)  # fmt: skip

ALLCNN_B = (
    Conv(96, 11, stride=4, padding=2), Conv(96, 1), Conv(96, 3, stride=2),
    Conv(256, 5, padding=2), Conv(256, 1), Conv(256, 3, stride=2),
    Conv(384, 3, padding=1), Conv(384, 1), Conv(384, 3, stride=2),
    Dropout(0.5),
    Conv(1024, 3, padding=1), Conv(1024, 1), Conv(None, 1),
)  # fmt: skip


#: AlexNet's layout at 64x64 px (ours, issue 16): AlexNet's conv1 as it is (96 filters of
#: 11x11x3, stride 4), the later convs of its shape at a CPU-sized width, its three
#: max-pools, and a 1x1 class layer with global average pooling instead of the fully
#: connected head. Maps: 64 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1.
ALEXNET64 = (
    Conv(96, 11, stride=4, padding=2), MaxPool(3, 2),
    Conv(64, 5, padding=2), MaxPool(3, 2),
    Conv(96, 3, padding=1), Conv(96, 3, padding=1), Conv(64, 3, padding=1),
    MaxPool(3, 2),
    Conv(None, 1),
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """How a registered model departs from its family's ReLU baseline."""

    family: str
    layers: tuple
    summary: str
    input_size: int
    activation: dict[int, str] = field(default_factory=dict)  # conv index -> crelu/avr
    halved: frozenset[int] = frozenset()  # conv indices with half the filters
    filter_scale: float = 1.0
    batch_norm: bool = False


def _spread(indices, name):
    return {i: name for i in indices}


_VARIANTS: dict[str, Variant] = {}


def register_model(name: str, variant: Variant) -> None:
    """Add a variant to the registry (used by the zoo itself and by extensions)."""
    if name in _VARIANTS or name in _REFERENCE:
        raise UserError(f"model {name!r} is already registered")
    _VARIANTS[name] = variant


def _register_convpool() -> None:
    """ConvPool-CNN-C, the five variants of the paper's Table 1 (counts: the paper's)."""
    cp = dict(family="ConvPool-CNN-C", layers=CONVPOOL_C, input_size=32)
    nine = range(1, 9)  # every conv but the class layer
    register_model("convpool_c", Variant(summary="ReLU baseline (paper: 1.4M parameters)", **cp))
    register_model(
        "convpool_c_double",
        Variant(summary="ReLU, twice the filters (paper: 5.6M parameters)", filter_scale=2, **cp),
    )
    register_model(
        "convpool_c_avr",
        Variant(
            summary="AVR, same filters (paper: 1.4M parameters)",
            activation=_spread(nine, "avr"),
            **cp,
        ),
    )
    register_model(
        "convpool_c_crelu",
        Variant(
            summary="CReLU, same filters (paper: 2.8M parameters)",
            activation=_spread(nine, "crelu"),
            **cp,
        ),
    )
    register_model(
        "convpool_c_crelu_half",
        Variant(
            summary="CReLU, half the filters (paper: 0.7M parameters)",
            activation=_spread(nine, "crelu"),
            halved=frozenset(nine),
            **cp,
        ),
    )


def _register_vgg() -> None:
    """VGG on CIFAR (Zagoruyko), with CReLU after the first layers, halved filters."""
    vgg = dict(family="VGG (Zagoruyko)", layers=VGG_CIFAR, input_size=32, batch_norm=True)
    register_model("vgg", Variant(summary="ReLU baseline", **vgg))
    for tag, convs in (("1", (1,)), ("13", (1, 3)), ("135", (1, 3, 5))):
        register_model(
            f"vgg_crelu{tag}",
            Variant(
                summary=f"CReLU after conv{','.join(map(str, convs))}, halved filters",
                activation=_spread(convs, "crelu"),
                halved=frozenset(convs),
                **vgg,
            ),
        )


def _register_allcnn() -> None:
    """All-CNN-B of the paper's ImageNet experiments (counts: the paper's)."""
    ab = dict(family="All-CNN-B", layers=ALLCNN_B, input_size=224)
    register_model("allcnn_b", Variant(summary="ReLU baseline (paper: 9.4M parameters)", **ab))
    for act in ("crelu", "avr"):
        for last in (4, 7, 9):
            register_model(
                f"allcnn_b_{act}1_{last}",
                Variant(
                    summary=f"{'AVR' if act == 'avr' else 'CReLU'} at conv1-{last}, same filters",
                    activation=_spread(range(1, last + 1), act),
                    **ab,
                ),
            )
    every = range(1, 13)
    register_model(
        "allcnn_b_crelu_all",
        Variant(
            summary="CReLU at every layer, halved filters (paper: 4.7M parameters)",
            activation=_spread(every, "crelu"),
            halved=frozenset(every),
            **ab,
        ),
    )
    register_model(
        "allcnn_b_crelu147",
        Variant(
            summary="CReLU at conv1,4,7, halved filters (paper: 8.6M parameters)",
            activation=_spread((1, 4, 7), "crelu"),
            halved=frozenset((1, 4, 7)),
            **ab,
        ),
    )


def _register_alexnet64() -> None:
    """The AlexNet-layout family of Figs. 1-3 (issue 16): ReLU and CReLU, same filters."""
    ax = dict(family="AlexNet layout (64 px)", layers=ALEXNET64, input_size=64)
    register_model(
        "alexnet64",
        Variant(summary="ReLU, AlexNet's conv1 at 64 px", **ax),
    )
    register_model(
        "alexnet64_crelu",
        Variant(
            summary="CReLU on conv1-conv5, same filters",
            activation=_spread(range(1, 6), "crelu"),
            **ax,
        ),
    )


# --- building ---------------------------------------------------------------------

_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=False),
    "crelu": CReLU,
    "avr": AVR,
    "linear": nn.Identity,  # the class layer (one filter per class), unless a variant says
}


def _filters(base: int, index: int, variant: Variant, width: float) -> int:
    count = base * variant.filter_scale
    if index in variant.halved:
        count /= 2
    return max(1, round(count * width))


def _build(name: str, variant: Variant, config: dict) -> Net:
    num_classes, in_channels = config["num_classes"], config["in_channels"]
    width, dropout = config["width"], config["dropout"]
    layers: list[tuple[str, nn.Module]] = [("normalize", Normalize(in_channels))]
    channels, conv_index, pool_index = in_channels, 0, 0
    for spec in variant.layers:
        if isinstance(spec, Conv):
            conv_index += 1
            act = variant.activation.get(conv_index, "relu" if spec.filters else "linear")
            if spec.filters is None:
                filters = num_classes
                if act == "crelu":
                    if num_classes % 2:
                        raise UserError(
                            f"{name} applies CReLU to the class layer and needs an even "
                            f"number of classes; got num_classes={num_classes}"
                        )
                    filters = num_classes // 2
            else:
                filters = _filters(spec.filters, conv_index, variant, width)
            block = [("conv", nn.Conv2d(channels, filters, spec.kernel, spec.stride, spec.padding))]
            if variant.batch_norm:
                block.append(("bn", nn.BatchNorm2d(filters, eps=1e-3)))
            block.append(("act", _ACTIVATIONS[act]()))
            layers.append((f"conv{conv_index}", nn.Sequential(OrderedDict(block))))
            channels = 2 * filters if act == "crelu" else filters
        elif isinstance(spec, MaxPool):
            pool_index += 1
            pool = nn.MaxPool2d(spec.kernel, spec.stride, spec.padding, ceil_mode=spec.ceil_mode)
            layers.append((f"pool{pool_index}", pool))
        elif isinstance(spec, Dropout):
            rate = spec.rate if dropout is None else dropout
            # named after the conv layer it follows: drop0 acts on the input
            layers.append((f"drop{conv_index}", nn.Dropout(rate)))
        elif isinstance(spec, Classifier):
            layers.append(("flatten", nn.Flatten()))
            for i, hidden in enumerate(spec.hidden, start=1):
                width_hidden = max(1, round(hidden * width))
                rate = spec.dropout if dropout is None else dropout
                block = [
                    ("drop", nn.Dropout(rate)),
                    ("linear", nn.Linear(channels, width_hidden)),
                    ("bn", nn.BatchNorm1d(width_hidden, eps=1e-3)),
                    ("act", nn.ReLU()),
                ]
                layers.append((f"fc{i}", nn.Sequential(OrderedDict(block))))
                channels = width_hidden
            rate = spec.dropout if dropout is None else dropout
            head = [("drop", nn.Dropout(rate)), ("linear", nn.Linear(channels, num_classes))]
            layers.append((f"fc{len(spec.hidden) + 1}", nn.Sequential(OrderedDict(head))))
    if not any(isinstance(s, Classifier) for s in variant.layers):
        layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    return Net(layers, arch=name, config=config, input_size=variant.input_size)


# --- torchvision-layout reference architectures (no weights): invert.nn.reference ---

_REFERENCE = REFERENCE  # name -> (builder, summary, input size)


# --- registry API -----------------------------------------------------------------


def list_models() -> list[str]:
    """Registered model names.

    Examples
    --------
    >>> "convpool_c_crelu" in list_models()
    True
    """
    return list(_VARIANTS) + list(_REFERENCE)


def model_info(name: str) -> dict:
    """Family, one-line summary and native input size of a registered model.

    Examples
    --------
    >>> model_info("allcnn_b")["input_size"]
    224
    """
    _check_name(name)
    if name in _REFERENCE:
        _, summary, size = _REFERENCE[name]
        return {"name": name, "family": "reference", "summary": summary, "input_size": size}
    v = _VARIANTS[name]
    return {"name": name, "family": v.family, "summary": v.summary, "input_size": v.input_size}


def _check_name(name: str) -> None:
    if name not in _VARIANTS and name not in _REFERENCE:
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1.0,
    dropout: float | None = None,
) -> Net:
    """Build a registered network with freshly initialised weights.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    num_classes : int, optional
        Number of class scores the network outputs.
    in_channels : int, optional
        Channels of the input images.
    width : float, optional
        Multiplies every filter count (not the class layer), for small CPU runs.
    dropout : float, optional
        ``None`` keeps the architecture's dropout rates; a number replaces every
        dropout rate (0 disables dropout).

    Returns
    -------
    Net
        The model, in training mode, its layers named ``conv1``, ``pool1``, ... (a
        reference architecture is its torchvision-layout module instead, see
        :mod:`invert.nn.reference`).

    Examples
    --------
    >>> import torch
    >>> net = create_model("convpool_c_crelu_half", width=0.5).eval()
    >>> net(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    _check_name(name)
    check_positive_int(num_classes, name="num_classes")
    check_positive_int(in_channels, name="in_channels")
    check_positive(width, name="width")
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"dropout must be None or a number in [0, 1); got {dropout!r}")
    config = dict(
        num_classes=num_classes, in_channels=in_channels, width=float(width), dropout=dropout
    )
    if name in _REFERENCE:
        build = _REFERENCE[name][0]
        return build(num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout)
    return _build(name, _VARIANTS[name], config)


for _register in (_register_convpool, _register_vgg, _register_allcnn, _register_alexnet64):
    _register()
