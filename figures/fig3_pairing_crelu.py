"""Figure 3: histograms of mu_w (learned) and mu_r (random) per conv layer, CReLU model.

The same statistic as Figure 2 for the CReLU ConvPool-CNN-C: the paper finds the
learned and random histograms aligned at every layer (CReLU does the pairing, so the
filters no longer need to).

    python -m figures.fig3_pairing_crelu --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

from .common import Result, Session, pixel_size, run_standalone, script
from .fig2_pairing_relu import COLUMNS, DPI, FIGSIZE, pairing_histograms

STEM = "fig3_pairing_crelu"


def make(session: Session, out) -> Result:
    """Draw Figure 3 into ``out/fig3_pairing_crelu.png``; mu statistics per layer."""
    rows = pairing_histograms(
        session, "crelu", "CReLU", f"{out}/{STEM}.png",
        "Fig. 3: pairing statistic mu per conv layer, CReLU model (blue: learned, red: random)",
    )  # fmt: skip
    return Result(
        id="fig3",
        title="Figure 3: pairing histograms mu_w vs mu_r, CReLU model",
        rows=rows,
        columns=COLUMNS,
        files=[f"{STEM}.png"],
        size=pixel_size(FIGSIZE, DPI),
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
