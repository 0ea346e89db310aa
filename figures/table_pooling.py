"""Pooling-metrics table: what max-pooling switches keep of a conv + CReLU block.

Our definition (the paper's supplement C is unavailable; :mod:`theory.pooling`): for
each conv layer of the CReLU model that a max-pooling follows, the pooled CReLU values
with their switches are linear equations on the pre-activation; the table gives, over a
few crops of natural images small enough for dense linear algebra, the relative error
of the least-squares reconstruction of the layer's input from those equations, the
number of equations, their rank against the input dimension, and the lower frame bound
of the selected rows (0 when some input is invisible), for the learned filters and for
Gaussian filters of the same shapes and norms.

    python -m figures.table_pooling --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

from .common import SEED, Result, Session, run_standalone, script

STEM = "table_pooling"
COLUMNS = ["layer", "filters", "pool", "input", "images", "input_dim", "equations", "rank",
           "rel_error", "rel_error_max", "A", "A_nonzero"]  # fmt: skip


def make(session: Session, out) -> Result:
    """Collect the pooling-metrics table for the CReLU model."""
    from theory.pooling import pooling_metrics

    sizes = session.sizes
    rows = pooling_metrics(
        session.model("crelu"), n_images=sizes.pooling_images, max_dim=sizes.pooling_max_dim,
        seed=SEED, device=session.device,
    )  # fmt: skip
    return Result(
        id="pooling",
        title="Max-pooling reconstruction metrics (switches), CReLU model, learned vs random",
        rows=rows,
        columns=COLUMNS,
        details={"command": session.reproduce(STEM)},
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
