"""invert: CReLU networks, their data and training, and exact reconstruction.

The public API is re-exported here; each concept lives in one module
(``invert.reconstruct`` is the function, :mod:`invert.reconstruction` its module). The
trainer's entry point stays in its module, so that ``invert.train`` remains the module:
``from invert.train import train``.
"""

from .activations import AVR, CReLU, avr, crelu, crelu_inverse
from .checkpoints import load_checkpoint, load_state_dict_into, save_checkpoint
from .data import ImageDataset, load_dataset
from .loader import load_model
from .metrics import reconstruction_metrics
from .nets import Net, Normalize, conv_layers, layer_names, layer_outputs
from .operators import ConvOperator
from .reconstruction import Features, Reconstruction, features, reconstruct
from .solvers import (
    ConvergenceError,
    ConvergenceWarning,
    SolveInfo,
    bounded_least_squares,
    fft_least_squares,
    least_squares,
)
from .train import RECIPES, Recipe, Trainer
from .zoo import create_model, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = [
    "AVR",
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
    "reconstruction_metrics",
    "register_model",
    "save_checkpoint",
]
