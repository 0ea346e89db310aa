"""theory: analyses of filters and checkpoints.

Frame bounds, max-pooling reconstruction metrics, filter pairing, invariance
scores and outgoing-weight correlations, each in a module of its own.
"""

__all__: list[str] = []
