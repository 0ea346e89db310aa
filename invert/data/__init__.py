"""Image classification data from local files or the embedded default; never downloads.

=====================  ==========================================================
module                 what
=====================  ==========================================================
:mod:`.spec`           :class:`DataSpec` (the one parser of spec strings) and
                       :func:`load_dataset`
:mod:`.dataset`        :class:`ImageDataset`, the in-memory labelled data set
:mod:`.textures`       the embedded default (scikit-image's photographs)
:mod:`.cifar`          CIFAR-10/100, binary or pickles (restricted unpickler)
:mod:`.folder`         ImageNet-style folders
:mod:`.images`         single images: reading, fitting to a model's input
:mod:`.natural_images` the one default source of natural images for analyses
:mod:`.statistics`     per-channel mean and standard deviation
:mod:`.transforms`     training augmentation
=====================  ==========================================================
"""

from .dataset import ImageDataset
from .natural_images import dataset_images, natural_images
from .spec import DataSpec, load_dataset
from .statistics import channel_statistics
from .textures import TEXTURE_NAMES, texture_sources
from .transforms import augment

__all__ = [
    "TEXTURE_NAMES",
    "DataSpec",
    "ImageDataset",
    "augment",
    "channel_statistics",
    "dataset_images",
    "load_dataset",
    "natural_images",
    "texture_sources",
]
