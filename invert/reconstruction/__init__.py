"""Reconstruction of a model's input from the features of any layer, with no learning.

:func:`reconstruct` is the entry point (:mod:`.strategies`): layer-wise (the paper's
Algorithm 1, :func:`reconstruct_layerwise`), joint (:func:`reconstruct_joint`, every layer
at once) or ``"auto"``; every result carries a :class:`Certificate`.
"""

from .features import Features, Step, features
from .layerwise import LayerReport, reconstruct_layerwise
from .metrics import reconstruction_metrics, recoverable_part
from .result import Certificate, CertificateRow, Note, Reconstruction
from .settings import JointSettings, LayerwiseSettings
from .strategies import reconstruct, reconstruct_joint

__all__ = [
    "Certificate",
    "CertificateRow",
    "Features",
    "JointSettings",
    "LayerReport",
    "LayerwiseSettings",
    "Note",
    "Reconstruction",
    "Step",
    "features",
    "reconstruct",
    "reconstruct_joint",
    "reconstruct_layerwise",
    "reconstruction_metrics",
    "recoverable_part",
]
