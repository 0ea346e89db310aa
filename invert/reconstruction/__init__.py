"""Reconstruction of a model's input from the features of any layer, with no learning."""

from .features import Features, Step, features
from .layerwise import LayerReport, Reconstruction, reconstruct
from .metrics import reconstruction_metrics, recoverable_part

__all__ = [
    "Features",
    "LayerReport",
    "Reconstruction",
    "Step",
    "features",
    "reconstruct",
    "reconstruction_metrics",
    "recoverable_part",
]
