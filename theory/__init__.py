"""theory: analyses of filters and checkpoints.

Frame bounds (of conv layers, and of whole networks at an input), max-pooling
reconstruction metrics, filter pairing, invariance scores and outgoing-weight
correlations, each in a module of its own.
``theory.pairing`` is the function, :mod:`theory.filter_pairing` its module.
The names are imported on first use (PEP 562): ``import theory`` does not import torch.
"""

from invert._lazy import attach

_EXPORTS = {
    ".correlations": ["OutgoingCorrelation", "outgoing_correlations"],
    ".filter_pairing": [
        "LayerPairing", "PairingResult", "layer_pairing", "pair_image", "pairing",
        "random_pairing",
    ],
    ".frames": [
        "FrameBounds", "FrameBoundsWarning", "LayerFrameBounds", "checkpoint_frame_bounds",
        "frame_bounds", "frame_spectrum",
    ],
    ".invariance": [
        "InvarianceResult", "InvarianceScore", "Transformations", "invariance_scores",
    ],
    ".network_frames": ["NetworkFrameBounds", "network_frame_bounds"],
    ".pooling": ["LayerSwitchMetrics", "SwitchMetrics", "pooling_metrics", "switch_metrics"],
}  # fmt: skip

__getattr__, __dir__, __all__ = attach(__name__, globals(), _EXPORTS)
