"""invert: CReLU networks, their data and training, and exact reconstruction.

The public API is re-exported here; each concept lives in one module
(``invert.reconstruct`` is the function, :mod:`invert.reconstruction` its module). The
trainer's entry point stays in its module, so that ``invert.train`` remains the module:
``from invert.train import train``.
"""

from .data import ImageDataset, load_dataset
from .linalg import (
    ConvergenceError,
    ConvergenceWarning,
    ConvOperator,
    SolveInfo,
    bounded_least_squares,
    fft_least_squares,
    least_squares,
)
from .nn import (
    AVR,
    CReLU,
    Net,
    Normalize,
    avr,
    conv_layers,
    create_model,
    crelu,
    crelu_inverse,
    layer_names,
    layer_outputs,
    list_models,
    model_info,
    register_model,
)
from .reconstruction import (
    Certificate,
    Features,
    Reconstruction,
    features,
    reconstruct,
    reconstruct_joint,
    reconstruct_layerwise,
    reconstruction_metrics,
)
from .train import (
    RECIPES,
    Recipe,
    Trainer,
    load_checkpoint,
    load_model,
    load_state_dict_into,
    save_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "AVR",
    "Certificate",
    "RECIPES",
    "ConvOperator",
    "ConvergenceError",
    "ConvergenceWarning",
    "CReLU",
    "Features",
    "ImageDataset",
    "Net",
    "Normalize",
    "Recipe",
    "Reconstruction",
    "SolveInfo",
    "Trainer",
    "avr",
    "bounded_least_squares",
    "conv_layers",
    "create_model",
    "crelu",
    "crelu_inverse",
    "features",
    "fft_least_squares",
    "layer_names",
    "layer_outputs",
    "least_squares",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "load_state_dict_into",
    "model_info",
    "reconstruct",
    "reconstruct_joint",
    "reconstruct_layerwise",
    "reconstruction_metrics",
    "register_model",
    "save_checkpoint",
]
