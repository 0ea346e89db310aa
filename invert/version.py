"""The toolkit version (checkpoints and the model cache record it)."""

__version__ = "0.1.0"
