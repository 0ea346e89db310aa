"""Table 1: test error and parameter count of the five ConvPool-CNN-C variants.

Baseline (ReLU), double (ReLU, twice the filters), AVR (|x|, same filters), CReLU
(same filters: twice the parameters of the next layers) and CReLU-half (half the
filters: about half the baseline's parameters), each trained once with the recipe on
the data used (one run, not the paper's 10-fold averages). Test error is on the held-out
split after the last epoch, with its binomial standard error sqrt(p (1 - p) / n); train
error is the running error of the last epoch (with augmentation). The paper's CIFAR-10
single-model numbers are given for reference.

    python -m figures.table1_errors --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import math
import sys

from .common import MODELS, Result, Session, run_standalone, script

STEM = "table1_errors"
LABELS = {
    "relu": "Baseline (ReLU)",
    "double": "+ double",
    "avr": "AVR",
    "crelu": "CReLU",
    "crelu_half": "CReLU + half",
}
#: The paper's Table 1, CIFAR-10 "Single" test error (%) and parameters (millions).
PAPER_CIFAR10 = {
    "relu": (9.17, 1.4),
    "double": (8.65, 5.6),
    "avr": (8.32, 1.4),
    "crelu": (8.43, 2.8),
    "crelu_half": (8.37, 0.7),
}
COLUMNS = ["model", "name", "params", "params_vs_baseline", "train_error", "test_error",
           "test_error_se", "paper_test_error", "paper_params_M"]  # fmt: skip


def make(session: Session, out) -> Result:
    """Collect Table 1 (errors in %, parameter counts) for the data and recipe used."""
    n_test = len(session.test_set())
    rows = []
    for role, name in MODELS.items():
        model = session.model(role)
        meta = getattr(model, "metadata", {}) or {}
        history = meta.get("history") or [{}]
        accuracy = meta.get("test_accuracy", history[-1].get("test_accuracy"))
        train_accuracy = history[-1].get("train_accuracy")
        params = sum(p.numel() for p in model.parameters())
        test_error = None if accuracy is None else 100 * (1 - accuracy)
        se = None
        if accuracy is not None and n_test:
            se = 100 * math.sqrt(accuracy * (1 - accuracy) / n_test)
        paper_error, paper_params = PAPER_CIFAR10[role]
        rows.append({
            "role": role,
            "model": LABELS[role],
            "name": name,
            "params": params,
            "train_error": None if train_accuracy is None else 100 * (1 - train_accuracy),
            "test_error": test_error,
            "test_error_se": se,
            "epochs": len(meta.get("history") or []),
            "paper_test_error": paper_error,
            "paper_params_M": paper_params,
        })  # fmt: skip
    base = rows[0]["params"]
    for row in rows:
        row["params_vs_baseline"] = row["params"] / base
    return Result(
        id="table1",
        title="Table 1: test error (%) and parameters of baseline, double, AVR, CReLU, CReLU-half",
        rows=rows,
        columns=COLUMNS,
        details={"test_items": n_test},
    )


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
