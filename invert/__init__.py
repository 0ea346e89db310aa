"""invert: CReLU networks, their data and training, and exact reconstruction.

The public API is re-exported here; each concept lives in one module.
"""

from .activations import AVR, CReLU, avr, crelu, crelu_inverse
from .nets import Net, Normalize, conv_layers, layer_names, layer_outputs
from .zoo import create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = [
    "AVR",
    "CReLU",
    "Net",
    "Normalize",
    "avr",
    "conv_layers",
    "create_model",
    "crelu",
    "crelu_inverse",
    "layer_names",
    "layer_outputs",
    "list_models",
    "model_info",
]
