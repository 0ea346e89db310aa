"""Reconstruction of a model's input from the features of any layer, with no learning.

:func:`reconstruct` is the entry point (:mod:`.strategies`): layer-wise (the paper's
Algorithm 1, :func:`reconstruct_layerwise`), joint (:func:`reconstruct_joint`, every layer
at once) or ``"auto"``; every result carries a :class:`Certificate`.
"""

from .certificate import Certificate, CertificateRow
from .features import Features, Step, features
from .joint import reconstruct_joint
from .layerwise import LayerReport, Reconstruction, reconstruct_layerwise
from .metrics import reconstruction_metrics, recoverable_part
from .strategies import reconstruct

__all__ = [
    "Certificate",
    "CertificateRow",
    "Features",
    "LayerReport",
    "Reconstruction",
    "Step",
    "features",
    "reconstruct",
    "reconstruct_joint",
    "reconstruct_layerwise",
    "reconstruction_metrics",
    "recoverable_part",
]
