"""Table 6: correlations of the outgoing weights of the CReLU model's paired channels.

For each CReLU layer with K filters followed by a conv layer, the next layer's weights
on channel i (positive phase) and channel K + i (negative phase), flattened, give the
"pair" cosine; channels i and K + j, j != i, the "non-pair" cosine
(:func:`theory.correlations.outgoing_correlations`). Signed cosines and their
magnitudes are both reported: the paper's numbers (0.08-0.46, with standard deviations
near the means) read like magnitudes. If the positive and negative phases were only a
linear response split in two, the pair weights would be negations (cosine -1, magnitude
1); the paper finds both far below 1 (finding F5).

    python -m figures.table6_correlations --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys
import warnings

from .common import Result, Session, run_standalone, script

STEM = "table6_correlations"
COLUMNS = ["layer", "next", "K", "pair_mean", "pair_std", "nonpair_mean", "nonpair_std",
           "abs_pair_mean", "abs_pair_std", "abs_nonpair_mean", "abs_nonpair_std"]  # fmt: skip


def make(session: Session, out) -> Result:
    """Collect Table 6 for the CReLU model (every CReLU layer followed by a conv)."""
    from theory.correlations import outgoing_correlations

    model = session.model("crelu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CReLU layers without a next conv
        signed = outgoing_correlations(model)
        magnitude = outgoing_correlations(model, absolute=True)
    rows = []
    for name, stats in signed.items():
        row = stats.row()
        absolute = magnitude[name]
        row.update(
            abs_pair_mean=absolute.pair_mean,
            abs_pair_std=absolute.pair_std,
            abs_nonpair_mean=absolute.nonpair_mean,
            abs_nonpair_std=absolute.nonpair_std,
        )
        rows.append(row)
    return Result(
        id="table6",
        title="Table 6: outgoing-weight correlations (pair vs non-pair), CReLU model",
        rows=rows,
        columns=COLUMNS,
        details={"command": session.reproduce(STEM)},
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
