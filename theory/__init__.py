"""theory: analyses of filters and checkpoints.

Frame bounds, max-pooling reconstruction metrics, filter pairing, invariance
scores and outgoing-weight correlations, each in a module of its own.
``theory.pairing`` is the function, :mod:`theory.filter_pairing` its module.
The names are imported on first use (PEP 562): ``import theory`` does not import torch.
"""

from typing import TYPE_CHECKING

from invert._lazy import attach

_EXPORTS = {
    ".correlations": ["OutgoingCorrelation", "outgoing_correlations"],
    ".filter_pairing": [
        "LayerPairing", "PairingResult", "layer_pairing", "pair_image", "pairing",
        "random_pairing",
    ],
    ".frames": ["FrameBounds", "FrameBoundsWarning", "checkpoint_frame_bounds", "frame_bounds"],
    ".invariance": ["InvarianceResult", "Transformations", "invariance_scores"],
    ".pooling": ["SwitchMetrics", "pooling_metrics", "switch_metrics"],
}  # fmt: skip

__getattr__, __dir__, __all__ = attach(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:  # the same names, for type checkers and readers
    from .correlations import OutgoingCorrelation, outgoing_correlations  # noqa: F401
    from .filter_pairing import (  # noqa: F401
        LayerPairing,
        PairingResult,
        layer_pairing,
        pair_image,
        pairing,
        random_pairing,
    )
    from .frames import FrameBounds, FrameBoundsWarning, checkpoint_frame_bounds, frame_bounds  # noqa: F401
    from .invariance import InvarianceResult, Transformations, invariance_scores  # noqa: F401
    from .pooling import SwitchMetrics, pooling_metrics, switch_metrics  # noqa: F401
