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

from .common import SEED, run_standalone, table_script

TITLE = "Max-pooling reconstruction metrics (switches), CReLU model, learned vs random"
STEM = "table_pooling"
COLUMNS = ["layer", "filters", "pool", "input", "images", "input_dim", "equations", "rank",
           "rel_error", "rel_error_max", "A", "A_nonzero"]  # fmt: skip


def rows(session) -> list[dict]:
    """Collect the pooling-metrics table for the CReLU model."""
    from invert.display import pooling_rows
    from theory.pooling import pooling_metrics

    sizes = session.sizes
    return pooling_rows(pooling_metrics(
        session.model("crelu"), n_images=sizes.pooling_images, max_dim=sizes.pooling_max_dim,
        seed=SEED, device=session.device,
    ))  # fmt: skip


main = table_script(rows, stem=STEM, id="pooling", title=TITLE, columns=COLUMNS)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
