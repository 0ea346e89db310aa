"""Networks: activations, the named-layer :class:`Net`, the model zoo, the model as a graph, and
running a model to any place in it.

``invert.nn`` is the bottom layer of the toolkit: everything else (reconstruction,
training, the analyses in :mod:`theory`) reads models through these names.
"""

from .activations import AVR, CReLU, avr, crelu, crelu_inverse
from .graph import ModelGraph, Place, TracingFallbackWarning, model_graph
from .net import (
    Net,
    Normalize,
    activation_layers,
    conv_layers,
    eval_mode,
    get_layer,
    layer_names,
    model_input_size,
    select_layers,
)
from .probe import conv_input_sizes, execution_order, forward_to, layer_inputs, layer_outputs
from .zoo import create_model, list_models, model_info, register_model

__all__ = [
    "AVR",
    "CReLU",
    "ModelGraph",
    "Place",
    "TracingFallbackWarning",
    "Net",
    "Normalize",
    "activation_layers",
    "avr",
    "conv_input_sizes",
    "conv_layers",
    "create_model",
    "crelu",
    "crelu_inverse",
    "eval_mode",
    "execution_order",
    "forward_to",
    "get_layer",
    "layer_inputs",
    "layer_names",
    "layer_outputs",
    "list_models",
    "model_info",
    "model_input_size",
    "model_graph",
    "register_model",
    "select_layers",
]
