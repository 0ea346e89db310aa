"""Figure 3: histograms of mu_w (learned) and mu_r (random) per conv layer, CReLU model.

The same statistic as Figure 2 for the AlexNet-layout CReLU model (``alexnet64_crelu``,
CReLU on conv1-conv5 with the same filter counts): the paper finds the
learned and random histograms aligned at every layer (CReLU does the pairing, so the
filters no longer need to).

    python -m figures.fig3_pairing_crelu --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import sys

from .common import Result, Session, run_standalone, script
from .fig2_pairing_relu import pairing_figure

STEM = "fig3_pairing_crelu"


def make(session: Session, out) -> Result:
    """Draw Figure 3 into ``out/fig3_pairing_crelu.png``; mu statistics per layer."""
    return pairing_figure(session, out, number=3, role="alex_crelu", label="CReLU")


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
