"""invert: CReLU networks, their data and training, and exact reconstruction.

The public API is re-exported here; each concept lives in one module
(``invert.reconstruct`` is the function, :mod:`invert.reconstruction` its module). The
trainer's entry point stays in its module, so that ``invert.train`` remains the module:
``from invert.train import train``.

The names are imported on first use (PEP 562), so ``import invert`` does not import
torch: ``crelu --help`` answers at once.
"""

from ._lazy import attach
from .version import __version__

_EXPORTS = {
    ".data": ["ImageDataset", "load_dataset"],
    ".linalg": [
        "ConvergenceError", "ConvergenceWarning", "ConvOperator", "SolveInfo",
        "bounded_least_squares", "fft_least_squares", "least_squares",
    ],
    ".nn": [
        "AVR", "CReLU", "Net", "Normalize", "avr", "conv_layers", "create_model", "crelu",
        "crelu_inverse", "layer_names", "layer_outputs", "list_models", "model_info",
        "register_model",
    ],
    ".reconstruction": [
        "Certificate", "Features", "JointSettings", "LayerwiseSettings", "Reconstruction",
        "features", "reconstruct",
        "reconstruct_joint", "reconstruct_layerwise", "reconstruction_metrics",
    ],
    ".train": [
        "RECIPES", "Recipe", "Trainer", "load_checkpoint", "load_model", "load_state_dict_into",
        "save_checkpoint",
    ],
}  # fmt: skip

__getattr__, __dir__, _names = attach(__name__, globals(), _EXPORTS)
__all__ = ["__version__", *_names]
