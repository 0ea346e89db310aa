"""Table 1: test error and parameter count of the five ConvPool-CNN-C variants.

Baseline (ReLU), double (ReLU, twice the filters), AVR (|x|, same filters), CReLU
(same filters: twice the parameters of the next layers) and CReLU-half (half the
filters: about half the baseline's parameters), each trained with the recipe on the
data used, once per seed (``crelu figures --seeds N``; double and AVR, which no finding
compares, with the first seed only; not the paper's 10-fold averages). Test error is on
the held-out split after the last epoch, the mean over the seeds, with the binomial
standard error sqrt(p (1 - p) / n) of that mean and the standard deviation over the
seeds; train error is the running error of the last epoch (with augmentation). The
paper's CIFAR-10 single-model numbers are given for reference.

    python -m figures.table1_errors --out DIR [--data textures] [--recipe fast]
"""

from __future__ import annotations

import math
import statistics
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
COLUMNS = ["model", "name", "seeds", "params", "params_vs_baseline", "train_error", "test_error",
           "test_error_se", "test_error_seed_std", "paper_test_error",
           "paper_params_M"]  # fmt: skip


def make(session: Session, out) -> Result:
    """Collect Table 1 (errors in %, parameter counts) for the data and recipe used."""
    n_test = len(session.test_set())
    rows = []
    for role, name in MODELS.items():
        if role not in LABELS:  # the AlexNet-layout models of Figs. 1-3
            continue
        runs = [_errors(session.model(role, seed)) for seed in session.seed_list(role)]
        tests = [r["test_error"] for r in runs if r["test_error"] is not None]
        test_error = sum(tests) / len(tests) if tests else None
        se = None
        if test_error is not None and n_test:  # binomial, of the mean error
            p = test_error / 100
            se = 100 * math.sqrt(p * (1 - p) / n_test)
        trains = [r["train_error"] for r in runs if r["train_error"] is not None]
        paper_error, paper_params = PAPER_CIFAR10[role]
        row = {
            "role": role,
            "model": LABELS[role],
            "name": name,
            "params": runs[0]["params"],
            "train_error": sum(trains) / len(trains) if trains else None,
            "test_error": test_error,
            "test_error_se": se,
            "epochs": runs[0]["epochs"],
            "paper_test_error": paper_error,
            "paper_params_M": paper_params,
        }
        if len(tests) > 1:
            row["test_errors"] = tests
            row["test_error_seed_std"] = statistics.stdev(tests)
        row["seeds"] = len(runs)
        rows.append(row)
    base = rows[0]["params"]
    for row in rows:
        row["params_vs_baseline"] = row["params"] / base
    return Result(
        id="table1",
        title="Table 1: test error (%) and parameters of baseline, double, AVR, CReLU, CReLU-half",
        rows=rows,
        columns=COLUMNS,
        details={"test_items": n_test, "command": session.reproduce(STEM)},
    )


def _errors(model) -> dict:
    """Train and test error (%), parameters and epochs of one trained model."""
    meta = getattr(model, "metadata", {}) or {}
    history = meta.get("history") or [{}]
    accuracy = meta.get("test_accuracy", history[-1].get("test_accuracy"))
    train_accuracy = history[-1].get("train_accuracy")
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(meta.get("history") or []),
        "test_error": None if accuracy is None else 100 * (1 - accuracy),
        "train_error": None if train_accuracy is None else 100 * (1 - train_accuracy),
    }


main = script(make)

if __name__ == "__main__":
    sys.exit(run_standalone(main, __doc__, STEM))
