"""Frame-bounds table: lower and upper frame bounds of every conv layer, learned vs random.

For each conv layer of the ReLU and CReLU models at its input size for a 32 x 32
image, frame_A and frame_B are the extreme eigenvalues of T^T T (T: the layer's convolution,
circular boundary -- exact by FFT; the models pad with zeros, which only changes the
border rows), and B / A the condition number of reconstructing the layer's input
(:func:`theory.frames.checkpoint_frame_bounds`). The random baseline replaces each
filter by a Gaussian one of the same shape and norm. A = 0 means the layer is not a
frame: some input is invisible to it, as for every layer with fewer output channels
than input channels (e.g. a CReLU model's K filters reading 2K channels).

    python -m figures.table_frame_bounds --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

from .common import SEED, run_standalone, table_script

TITLE = "Frame bounds per conv layer (circular boundary), learned vs random filters"
STEM = "table_frame_bounds"
COLUMNS = ["model", "layer", "shape", "input", "frame_A", "frame_B", "frame_ratio", "random_A",
           "random_B", "random_ratio"]  # fmt: skip


def rows(session) -> list[dict]:
    """Collect the frame-bounds table for the ReLU and CReLU models."""
    from invert.display import frame_bounds_rows
    from theory.frames import checkpoint_frame_bounds

    out = []
    for role, label in (("relu", "ReLU"), ("crelu", "CReLU")):
        layers = checkpoint_frame_bounds(session.model(role), 32, padding="circular", seed=SEED,
                                         device=session.device)  # fmt: skip
        out += [{"model": label, **row} for row in frame_bounds_rows(layers)]
    return out


main = table_script(rows, stem=STEM, id="frame_bounds", title=TITLE, columns=COLUMNS)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
