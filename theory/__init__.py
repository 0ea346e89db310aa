"""theory: analyses of filters and checkpoints.

Frame bounds (of conv layers, and of whole networks at an input), max-pooling
reconstruction metrics, filter pairing, invariance scores and outgoing-weight
correlations, each in a module of its own.
``theory.pairing`` is the function, :mod:`theory.filter_pairing` its module.
"""

from .correlations import OutgoingCorrelation, outgoing_correlations
from .filter_pairing import (
    LayerPairing,
    PairingResult,
    layer_pairing,
    pair_image,
    pairing,
    random_pairing,
)
from .frames import FrameBounds, FrameBoundsWarning, checkpoint_frame_bounds, frame_bounds
from .invariance import InvarianceResult, Transformations, invariance_scores
from .network_frames import NetworkFrameBounds, network_frame_bounds
from .pooling import SwitchMetrics, pooling_metrics, switch_metrics

__all__ = [
    "FrameBounds",
    "FrameBoundsWarning",
    "InvarianceResult",
    "LayerPairing",
    "NetworkFrameBounds",
    "OutgoingCorrelation",
    "PairingResult",
    "SwitchMetrics",
    "Transformations",
    "checkpoint_frame_bounds",
    "frame_bounds",
    "invariance_scores",
    "layer_pairing",
    "network_frame_bounds",
    "outgoing_correlations",
    "pair_image",
    "pairing",
    "pooling_metrics",
    "random_pairing",
    "switch_metrics",
]
