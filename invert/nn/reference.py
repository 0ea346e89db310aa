"""Reference architectures in torchvision's exact layout, written here (no torchvision).

AlexNet, VGG-11/16 (with and without BatchNorm) and ResNet-18/50 with torchvision's
module names, ``state_dict`` keys, tensor shapes, initialisation and forward code:
``nn.ReLU(inplace=True)`` everywhere, ``torch.flatten(x, 1)`` in ``forward``, ResNet
blocks that call one ``self.relu`` twice and add the shortcut in place
(``out += identity``), ``downsample = Sequential(conv1x1, BatchNorm2d)`` and the
stride on the 3x3 conv of a Bottleneck (ResNet v1.5). A torchvision state dict
therefore loads unchanged, and the toolkit meets these networks as researchers
write them.

One addition: every model's first child is ``normalize``, a
:class:`~invert.nn.net.Normalize` holding ImageNet's mean and std and called first in
``forward``. Its buffers are not in the ``state_dict``, so the toolkit's images stay in
[0, 1] pixel space while torchvision's weights see the inputs they were trained on.

Every builder takes keyword-only ``num_classes`` (default 1000), ``width`` (a channel
multiplier for small CPU runs; each layer keeps at least one channel), ``in_channels``
and ``dropout`` (``None`` keeps torchvision's 0.5; ResNets have none). The model carries
``arch``, ``config`` (the arguments that rebuild it) and ``input_size = 224``.
:data:`REFERENCE` maps each name to ``(builder, summary, input_size)``; the zoo's
registry (:func:`~invert.nn.zoo.create_model`) serves them.
"""

from __future__ import annotations

import torch
from torch import nn

from invert.errors import UserError
from invert.validation import check_positive, check_positive_int

from .net import Normalize

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REFERENCE",
    "AlexNet",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "VGG",
    "alexnet",
    "imagenet_normalize",
    "resnet18",
    "resnet50",
    "vgg11",
    "vgg11_bn",
    "vgg16",
    "vgg16_bn",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224

# torchvision's cfgs: numbers are 3x3 conv widths, "M" a 2x2 max-pool
VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
}  # fmt: skip
RESNET_BLOCKS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}


def _scaled(width: float):
    def scale(n: int) -> int:
        return max(1, round(n * width))

    return scale


def imagenet_normalize(in_channels: int) -> Normalize:
    """The first layer of every reference model: ImageNet's mean and std for RGB input.

    Examples
    --------
    >>> imagenet_normalize(3).statistics()[0]  # doctest: +ELLIPSIS
    [0.48500001430511475, 0.4560000002384186, 0.4059999883174896]
    """
    norm = Normalize(in_channels)
    if in_channels == 3:  # ImageNet's statistics; other channel counts stay the identity
        # copy_, not set_statistics: its checks call .item(), which fails on the meta device
        norm.mean.copy_(torch.tensor(IMAGENET_MEAN))
        norm.std.copy_(torch.tensor(IMAGENET_STD))
    return norm


def _on_meta(module: nn.Module) -> bool:
    """Whether ``module``'s weight lives on the meta device, where initialising it is a
    no-op that still takes torch's slow reference path (about 1 s for VGG-16)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.is_meta


class _Reference(nn.Module):
    """What every reference model carries for the toolkit: name, config, input size."""

    input_size = INPUT_SIZE

    def _describe(self, arch: str, config: dict) -> None:
        self.arch = arch
        self.config = dict(config)


# --- AlexNet ----------------------------------------------------------------------


class AlexNet(_Reference):
    """AlexNet as torchvision writes it (torchvision leaves PyTorch's default init)."""

    def __init__(self, *, num_classes=1000, width=1.0, in_channels=3, dropout=0.5):
        super().__init__()
        w = _scaled(width)
        self.normalize = imagenet_normalize(in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w(64), kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(w(64), w(192), kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(w(192), w(384), kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w(384), w(256), kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w(256), w(256), kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(w(256) * 6 * 6, w(4096)),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(w(4096), w(4096)),
            nn.ReLU(inplace=True),
            nn.Linear(w(4096), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# --- VGG --------------------------------------------------------------------------


def _vgg_features(cfg, *, batch_norm: bool, in_channels: int, width: float) -> nn.Sequential:
    w = _scaled(width)
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(channels, w(v), kernel_size=3, padding=1)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(w(v)), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            channels = w(v)
    return nn.Sequential(*layers)


class VGG(_Reference):
    """VGG as torchvision writes it, with torchvision's initialisation."""

    def __init__(self, features: nn.Sequential, *, num_classes=1000, width=1.0, dropout=0.5):
        super().__init__()
        w = _scaled(width)
        in_channels = next(m for m in features if isinstance(m, nn.Conv2d)).in_channels
        self.normalize = imagenet_normalize(in_channels)
        self.features = features
        last = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(last * 7 * 7, w(4096)),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(w(4096), w(4096)),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(w(4096), num_classes),
        )
        for m in self.modules():
            if _on_meta(m):
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# --- ResNet -----------------------------------------------------------------------


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (torchvision's helper)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (torchvision's helper)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34's block: one ``relu`` module called twice, ``out += identity``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class Bottleneck(nn.Module):
    """ResNet-50's block, v1.5: the stride sits on the 3x3 conv (``conv2``)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        width = planes  # torchvision: int(planes * base_width / 64) * groups, 64 and 1 here
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class ResNet(_Reference):
    """ResNet as torchvision writes it, with torchvision's initialisation."""

    def __init__(self, block, layers, *, num_classes=1000, width=1.0, in_channels=3):
        super().__init__()
        w = _scaled(width)
        self.inplanes = w(64)
        self.normalize = imagenet_normalize(in_channels)
        self.conv1 = nn.Conv2d(
            in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w(64), layers[0])
        self.layer2 = self._make_layer(block, w(128), layers[1], stride=2)
        self.layer3 = self._make_layer(block, w(256), layers[2], stride=2)
        self.layer4 = self._make_layer(block, w(512), layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w(512) * block.expansion, num_classes)

        for m in self.modules():
            if _on_meta(m):
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x


# --- builders ---------------------------------------------------------------------


def _check(name, num_classes, width, in_channels, dropout) -> None:
    check_positive_int(num_classes, name="num_classes")
    check_positive(width, name="width")
    check_positive_int(in_channels, name="in_channels")
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"dropout must be None or a number in [0, 1); got {dropout!r}")
    if dropout is not None and name.startswith("resnet"):
        raise UserError(f"{name} has no dropout; leave dropout=None")


def _config(num_classes, width, in_channels, dropout) -> dict:
    return dict(num_classes=num_classes, in_channels=in_channels, width=float(width),
                dropout=dropout)  # fmt: skip


def alexnet(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012) in torchvision's layout, random weights.

    Examples
    --------
    >>> import torch
    >>> net = alexnet(width=0.0625, num_classes=5).eval()
    >>> net(torch.rand(1, 3, 224, 224)).shape
    torch.Size([1, 5])
    """
    _check("alexnet", num_classes, width, in_channels, dropout)
    model = AlexNet(
        num_classes=num_classes,
        width=width,
        in_channels=in_channels,
        dropout=0.5 if dropout is None else dropout,
    )
    model._describe("alexnet", _config(num_classes, width, in_channels, dropout))
    return model


def _vgg(name, *, batch_norm, num_classes, width, in_channels, dropout) -> VGG:
    _check(name, num_classes, width, in_channels, dropout)
    features = _vgg_features(
        VGG_CFGS[name.removesuffix("_bn")],
        batch_norm=batch_norm,
        in_channels=in_channels,
        width=width,
    )
    model = VGG(
        features, num_classes=num_classes, width=width, dropout=0.5 if dropout is None else dropout
    )
    model._describe(name, _config(num_classes, width, in_channels, dropout))
    return model


def vgg11(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> VGG:
    """VGG-11 (configuration A, Simonyan & Zisserman 2015) in torchvision's layout.

    Examples
    --------
    >>> import torch
    >>> vgg11(width=0.0625)(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1, 1000])
    """
    return _vgg("vgg11", batch_norm=False, num_classes=num_classes, width=width,
                in_channels=in_channels, dropout=dropout)  # fmt: skip


def vgg11_bn(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> VGG:
    """VGG-11 with BatchNorm after every conv, in torchvision's layout.

    Examples
    --------
    >>> vgg11_bn(width=0.0625).features[1]
    BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    """
    return _vgg("vgg11_bn", batch_norm=True, num_classes=num_classes, width=width,
                in_channels=in_channels, dropout=dropout)  # fmt: skip


def vgg16(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> VGG:
    """VGG-16 (configuration D, Simonyan & Zisserman 2015) in torchvision's layout.

    Examples
    --------
    >>> vgg16(width=0.0625).features[1]
    ReLU(inplace=True)
    """
    return _vgg("vgg16", batch_norm=False, num_classes=num_classes, width=width,
                in_channels=in_channels, dropout=dropout)  # fmt: skip


def vgg16_bn(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> VGG:
    """VGG-16 with BatchNorm after every conv, in torchvision's layout.

    Examples
    --------
    >>> len(vgg16_bn(width=0.0625).features)
    44
    """
    return _vgg("vgg16_bn", batch_norm=True, num_classes=num_classes, width=width,
                in_channels=in_channels, dropout=dropout)  # fmt: skip


def _resnet(name, *, num_classes, width, in_channels, dropout) -> ResNet:
    _check(name, num_classes, width, in_channels, dropout)
    kind, blocks = RESNET_BLOCKS[name]
    block = BasicBlock if kind == "basic" else Bottleneck
    model = ResNet(block, blocks, num_classes=num_classes, width=width, in_channels=in_channels)
    model._describe(name, _config(num_classes, width, in_channels, dropout))
    return model


def resnet18(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> ResNet:
    """ResNet-18 (He et al. 2016) in torchvision's layout, random weights.

    Examples
    --------
    >>> import torch
    >>> net = resnet18(width=0.125, num_classes=10).eval()
    >>> net(torch.rand(1, 3, 64, 64)).shape, net.layer1[0].relu
    (torch.Size([1, 10]), ReLU(inplace=True))
    """
    return _resnet("resnet18", num_classes=num_classes, width=width, in_channels=in_channels,
                   dropout=dropout)  # fmt: skip


def resnet50(*, num_classes=1000, width=1.0, in_channels=3, dropout=None) -> ResNet:
    """ResNet-50 v1.5 (stride on the 3x3 conv) in torchvision's layout, random weights.

    Examples
    --------
    >>> resnet50(width=0.125).layer2[0].conv2.stride
    (2, 2)
    """
    return _resnet("resnet50", num_classes=num_classes, width=width, in_channels=in_channels,
                   dropout=dropout)  # fmt: skip


#: name -> (builder, one-line summary, input size)
REFERENCE = {
    "alexnet": (alexnet, "AlexNet (Krizhevsky et al.), torchvision layout", INPUT_SIZE),
    "vgg11": (vgg11, "VGG-11 (Simonyan & Zisserman), torchvision layout", INPUT_SIZE),
    "vgg11_bn": (vgg11_bn, "VGG-11 with BatchNorm, torchvision layout", INPUT_SIZE),
    "vgg16": (vgg16, "VGG-16 (Simonyan & Zisserman), torchvision layout", INPUT_SIZE),
    "vgg16_bn": (vgg16_bn, "VGG-16 with BatchNorm, torchvision layout", INPUT_SIZE),
    "resnet18": (resnet18, "ResNet-18 (He et al.), torchvision layout", INPUT_SIZE),
    "resnet50": (resnet50, "ResNet-50 v1.5 (He et al.), torchvision layout", INPUT_SIZE),
}
