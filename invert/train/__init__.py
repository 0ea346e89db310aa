"""Training: recipes, the trainer, distributed runs, the paper's protocols, checkpoints, the loader.

``from invert.train import train`` is the trainer's entry point.
"""

from .checkpoints import load_checkpoint, load_state_dict_into, save_checkpoint
from .loader import load_model
from .recipe import RECIPES, DataSettings, Hardware, ModelSettings, Recipe, get_recipe
from .settings import RunSettings
from .trainer import Trainer, train, train_from_spec

__all__ = [
    "RECIPES",
    "DataSettings",
    "Hardware",
    "ModelSettings",
    "Recipe",
    "RunSettings",
    "Trainer",
    "get_recipe",
    "load_checkpoint",
    "load_model",
    "load_state_dict_into",
    "save_checkpoint",
    "train",
    "train_from_spec",
]
