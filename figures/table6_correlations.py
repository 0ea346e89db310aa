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

from .common import run_standalone, table_script

TITLE = "Table 6: outgoing-weight correlations (pair vs non-pair), CReLU model"
STEM = "table6_correlations"
COLUMNS = ["layer", "next", "K", "pair_mean", "pair_std", "nonpair_mean", "nonpair_std",
           "abs_pair_mean", "abs_pair_std", "abs_nonpair_mean", "abs_nonpair_std"]  # fmt: skip


def rows(session) -> list[dict]:
    """Collect Table 6 for the CReLU model (every CReLU layer followed by a conv)."""
    from theory.correlations import outgoing_correlations

    model = session.model("crelu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CReLU layers without a next conv
        signed = outgoing_correlations(model)
        magnitude = outgoing_correlations(model, absolute=True)
    out = []
    for name, stats in signed.items():
        absolute = magnitude[name]
        out.append(stats.row() | {
            "abs_pair_mean": absolute.pair_mean, "abs_pair_std": absolute.pair_std,
            "abs_nonpair_mean": absolute.nonpair_mean, "abs_nonpair_std": absolute.nonpair_std,
        })  # fmt: skip
    return out


main = table_script(rows, stem=STEM, id="table6", title=TITLE, columns=COLUMNS)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
