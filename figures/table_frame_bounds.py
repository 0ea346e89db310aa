"""Frame-bounds table: lower and upper frame bounds of every conv layer, learned vs random.

For each conv layer of the ReLU and CReLU models at its input size for a 32 x 32
image, A and B are the extreme eigenvalues of T^T T (T: the layer's convolution,
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

from .common import SEED, Result, Session, run_standalone, script

STEM = "table_frame_bounds"
COLUMNS = ["model", "layer", "shape", "input", "A", "B", "ratio", "A_random", "B_random",
           "ratio_random"]  # fmt: skip


def make(session: Session, out) -> Result:
    """Collect the frame-bounds table for the ReLU and CReLU models."""
    from theory.frames import checkpoint_frame_bounds

    rows = []
    for role, label in (("relu", "ReLU"), ("crelu", "CReLU")):
        table = checkpoint_frame_bounds(
            session.model(role), 32, padding="circular", seed=SEED, device=session.device
        )
        rows += [{"model": label, **row} for row in table]
    return Result(
        id="frame_bounds",
        title="Frame bounds per conv layer (circular boundary), learned vs random filters",
        rows=rows,
        columns=COLUMNS,
        details={"command": session.reproduce(STEM)},
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
