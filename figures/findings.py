"""The paper's findings as testable criteria, each a pure function of the scripts' numbers.

Every criterion is written here, with its thresholds, before any result is seen, and
copied verbatim into the report. A finding that does not hold on the data used is
reported as ``"does not hold"``; nothing is tuned to make it pass. Verdicts:

``holds`` / ``does not hold``
    The criterion was evaluated on the numbers.
``inconclusive``
    Trained with several seeds, a comparison the verdict rests on lies within the seed
    spread (see below): neither holding nor failing is shown.
``not testable``
    The numbers needed are missing (e.g. a model without a test set): said, not hidden.

Uncertainty from seeds (fixed before any multi-seed run). F1, F3 and F4 compare
quantities of trained models. With ``N >= 2`` seeds per variant each quantity is the
mean over its seeds, with standard error ``SE = s / sqrt(N)`` (``s``: the sample standard
deviation over the seeds); the uncertainty of a difference ``D = a - b`` of two
independently trained quantities is ``SE_D = sqrt(SE_a^2 + SE_b^2)`` (a fixed threshold
has none). The sign of ``D`` counts as shown only when ``|D| > 2 SE_D``
(:func:`decide`); with one seed ``SE_D = 0`` and the comparisons are those of the
single-run criteria (ties as written there). F2, F5 and F6 are properties of one trained
model, not comparisons between models: they are judged on the models of the first seed,
the ones the figures show.

The findings (numbering ours):

* **F1** (Sections 2.1 and 4.3, Figs. 1-3): ReLU conv1 filters pair up more than
  random filters, CReLU conv1 filters do not.
* **F2** (Proposition 2.1, Fig. 5): reconstruction is exact through CReLU layers
  without pooling, and its quality (PSNR) falls layer by layer.
* **F3** (Section 4.2, Fig. 4): CReLU invariance scores >= ReLU's on most layers.
* **F4** (Section 3.1, Table 1): CReLU-half reaches an error <= the baseline's with
  about half its parameters.
* **F5** (Section 4.3, Table 6): the outgoing weights of a filter's positive and
  negative phases are far from negations of each other.
* **F6** (ours, beyond the paper; Fig. 5): joint inversion recovers the input from
  every layer up to the first max-pooling, for the CReLU and for the ReLU model.
"""

from __future__ import annotations

import math

from invert.display import PSNR_CAP, cell_text, psnr_text

__all__ = ["CRITERIA", "decide", "f1_pairing", "f2_reconstruction", "f3_invariance",
           "f4_errors", "f5_correlations", "f6_joint", "evaluate_findings"]  # fmt: skip

#: Pairing: the learned mean must lie this many random standard deviations below the
#: random mean to count as "pairing up" (F1).
PAIRING_MARGIN = 1.0
#: Relative reconstruction error that counts as exact in float64 (F2).
EXACT_ERROR = 1e-6
#: Mean |cos| of the pair outgoing weights below which they are "far below 1" (F5).
CORRELATION_LIMIT = 0.5
#: CReLU-half's parameters must be at most this fraction of the baseline's (F4).
HALF_PARAMS = 0.55
#: A difference counts as shown beyond this many of its standard errors (seeds).
SEED_SIGMAS = 2.0
#: PSNR (dB) from which joint inversion counts as recovering the input (F6): the cap.
RECOVERED_PSNR = PSNR_CAP

CRITERIA = {
    "F1": (
        "ReLU conv1 filters pair up more than random filters while CReLU conv1 filters do not",
        f"pairing gap g = (mean mu_r - mean mu_w) / std mu_r on conv1 (mu_r: Gaussian "
        f"filters of the same shape). Holds iff g_ReLU > {PAIRING_MARGIN:g} (learned "
        f"filters clearly more opposite than random ones) and g_CReLU <= "
        f"{PAIRING_MARGIN:g}. With seeds: g is the mean over seeds and each comparison with "
        f"the margin must clear {SEED_SIGMAS:g} standard errors (else inconclusive).",
    ),
    "F2": (
        "Reconstruction is exact through CReLU layers without pooling, and PSNR falls "
        "layer by layer",
        f"CReLU model, conv1-conv4 reconstructions in float64. (a) every layer reached "
        f"without max-pooling whose convs on the way are all frames (lower frame bound "
        f"A > tol, circular boundary) has relative error <= {EXACT_ERROR:g}, and there is "
        f"at least one such layer; (b) PSNR, capped at {PSNR_CAP:g} dB, does not increase "
        f"from conv1 to conv4. Holds iff (a) and (b). Layers that are not frames are "
        f"reported but not judged by (a): Proposition 2.1 promises only the projection "
        f"onto the filters' span there.",
    ),
    "F3": (
        "CReLU invariance >= ReLU invariance on most layers",
        f"layer invariance scores (mean of the top 20% unit scores) on every conv layer but "
        f"the class layer. Holds iff score_CReLU >= score_ReLU on more than half of the "
        f"layers. With seeds: a layer counts for CReLU (against it) only when the mean "
        f"difference is above (below) {SEED_SIGMAS:g} standard errors; holds iff the layers "
        f"counted for CReLU are more than half, does not hold iff those not counted against "
        f"it are at most half, else inconclusive.",
    ),
    "F4": (
        "CReLU-half error <= baseline error at half the parameters",
        f"test error (%) after training with the recipe, one run each. Holds iff "
        f"error(CReLU-half) <= error(baseline) and params(CReLU-half) <= "
        f"{HALF_PARAMS:g} x params(baseline). The binomial standard errors are reported "
        f"as context, not used in the verdict. With seeds: mean errors over seeds, and the "
        f"difference must clear {SEED_SIGMAS:g} standard errors of the seed spread (else "
        f"inconclusive).",
    ),
    "F5": (
        "Outgoing pair correlations far below 1",
        f"CReLU model, every CReLU layer followed by a conv: mean |cos| between the next "
        f"layer's weights on the positive and negative phase of the same filter. Holds "
        f"iff it is < {CORRELATION_LIMIT:g} on every layer (negated weights would give 1).",
    ),
    "F6": (
        "Joint inversion recovers the input from every layer up to the first max-pool, for "
        "CReLU and for ReLU models",
        f"Fig. 5's joint rows (Gauss-Newton through all layers at once, float64): for the "
        f"CReLU and the ReLU model, every conv layer reached before the first max-pooling. "
        f"Holds iff PSNR >= {RECOVERED_PSNR:g} dB on each of them (on every Fig. 5 image).",
    ),
}


def _finding(key: str, verdict: str, numbers: dict, summary: str) -> dict:
    claim, criterion = CRITERIA[key]
    return {
        "id": key,
        "claim": claim,
        "criterion": criterion,
        "verdict": verdict,
        "numbers": numbers,
        "summary": summary,
    }


def _verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def seed_stats(values) -> tuple[float, float, int]:
    """``(mean, standard error, N)`` of per-seed values (SE 0 for a single value).

    Examples
    --------
    >>> seed_stats([1.0, 3.0])
    (2.0, 1.0, 2)
    >>> seed_stats(5.0)
    (5.0, 0.0, 1)
    """
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0, n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n), n


def decide(difference: float, se: float) -> bool | None:
    """Whether ``difference >= 0`` is shown: True or False when ``|difference| > 2 se``
    (or ``se == 0``, where ``0`` counts as >= 0), None within the seed spread.

    Examples
    --------
    >>> decide(0.5, 0.1), decide(-0.5, 0.1), decide(0.1, 0.1), decide(0.0, 0.0)
    (True, False, None, True)
    """
    if math.isnan(difference):
        return False
    if se == 0:
        return difference >= 0
    if abs(difference) > SEED_SIGMAS * se:
        return difference > 0
    return None


def _three_way(*decisions) -> str:
    """``holds`` if every decision is True, ``does not hold`` if one is False, else
    ``inconclusive``."""
    if any(d is False for d in decisions):
        return "does not hold"
    return "holds" if all(d is True for d in decisions) else "inconclusive"


def pairing_gap(mean_w: float, mean_r: float, std_r: float) -> float:
    """``(mean_r - mean_w) / std_r``: how far left of random the learned mu lie.

    Examples
    --------
    >>> pairing_gap(-0.8, -0.4, 0.1)
    4.0
    """
    return (mean_r - mean_w) / std_r if std_r > 0 else math.copysign(math.inf, mean_r - mean_w)


def f1_pairing(relu, crelu) -> dict:
    """F1 from the conv1 pairing rows (``mu_w_mean``, ``mu_r_mean``, ``mu_r_std``): one
    dict per model, or a list of them, one per seed.

    Examples
    --------
    >>> relu = {"mu_w_mean": -0.8, "mu_r_mean": -0.4, "mu_r_std": 0.1}
    >>> crelu = {"mu_w_mean": -0.42, "mu_r_mean": -0.4, "mu_r_std": 0.1}
    >>> f1_pairing(relu, crelu)["verdict"]
    'holds'
    >>> f1_pairing(crelu, crelu)["verdict"]
    'does not hold'
    """
    relu = relu if isinstance(relu, list) else [relu]
    crelu = crelu if isinstance(crelu, list) else [crelu]

    def gaps(rows):
        return [pairing_gap(r["mu_w_mean"], r["mu_r_mean"], r["mu_r_std"]) for r in rows]

    g_relu, se_relu, n = seed_stats(gaps(relu))
    g_crelu, se_crelu, _ = seed_stats(gaps(crelu))
    first_r, first_c = relu[0], crelu[0]
    numbers = {
        "seeds": n,
        "relu_mu_w_mean": first_r["mu_w_mean"],
        "relu_mu_r_mean": first_r["mu_r_mean"],
        "relu_mu_r_std": first_r["mu_r_std"],
        "relu_gap": g_relu,
        "relu_gap_se": se_relu,
        "crelu_mu_w_mean": first_c["mu_w_mean"],
        "crelu_mu_r_mean": first_c["mu_r_mean"],
        "crelu_mu_r_std": first_c["mu_r_std"],
        "crelu_gap": g_crelu,
        "crelu_gap_se": se_crelu,
    }
    relu_pairs = g_relu > PAIRING_MARGIN if se_relu == 0 else decide(
        g_relu - PAIRING_MARGIN, se_relu
    )  # fmt: skip
    crelu_does_not = decide(PAIRING_MARGIN - g_crelu, se_crelu)
    if n == 1:
        summary = (
            f"conv1 gap ReLU {g_relu:.2f} (mu_w {first_r['mu_w_mean']:.3f} vs mu_r "
            f"{first_r['mu_r_mean']:.3f}), CReLU {g_crelu:.2f} (mu_w "
            f"{first_c['mu_w_mean']:.3f} vs mu_r {first_c['mu_r_mean']:.3f})"
        )
    else:
        summary = (
            f"conv1 gap over {n} seeds: ReLU {g_relu:.2f} +/- {se_relu:.2f}, CReLU "
            f"{g_crelu:.2f} +/- {se_crelu:.2f} (margin {PAIRING_MARGIN:g})"
        )
    return _finding("F1", _three_way(relu_pairs, crelu_does_not), numbers, summary)


def _capped(psnr: float) -> float:
    return psnr if math.isnan(psnr) else min(psnr, PSNR_CAP)


def f2_reconstruction(rows: list[dict]) -> dict:
    """F2 from the CReLU model's Fig. 5 rows, in layer order.

    Each row has ``layer``, ``pooling_before``, ``frame_path``, ``A_layer``,
    ``rel_error`` and ``psnr``.

    Examples
    --------
    >>> rows = [
    ...     dict(layer="conv1", pooling_before=False, frame_path=True, A_layer=1.0,
    ...          rel_error=1e-12, psnr=float("inf")),
    ...     dict(layer="conv2", pooling_before=False, frame_path=False, A_layer=0.0,
    ...          rel_error=0.5, psnr=20.0),
    ...     dict(layer="conv4", pooling_before=True, frame_path=False, A_layer=0.0,
    ...          rel_error=0.9, psnr=12.0),
    ... ]
    >>> f2_reconstruction(rows)["verdict"]
    'holds'
    >>> rows[2]["psnr"] = 25.0
    >>> f2_reconstruction(rows)["verdict"]
    'does not hold'
    """
    judged = [r for r in rows if not r["pooling_before"] and r["frame_path"]]
    exact = bool(judged) and all(r["rel_error"] <= EXACT_ERROR for r in judged)
    capped = [_capped(r["psnr"]) for r in rows]
    falling = all(b <= a for a, b in zip(capped, capped[1:]))
    numbers = {
        "layers": [r["layer"] for r in rows],
        "rel_error": [r["rel_error"] for r in rows],
        "psnr": [r["psnr"] for r in rows],
        "A_layer": [r["A_layer"] for r in rows],
        "frame_path": [r["frame_path"] for r in rows],
        "pooling_before": [r["pooling_before"] for r in rows],
        "judged_exact_layers": [r["layer"] for r in judged],
        "exact": exact,
        "psnr_non_increasing": falling,
    }
    parts = []
    for r in rows:
        parts.append(
            f"{r['layer']} err {r['rel_error']:.2g} / {psnr_text(r['psnr'])} / A "
            f"{cell_text(r['A_layer'])}"
        )
    summary = "; ".join(parts)
    if not judged:
        summary += " (no layer is reached through frames only: (a) cannot be met)"
    return _finding("F2", _verdict(exact and falling), numbers, summary)


def f3_invariance(rows: list[dict]) -> dict:
    """F3 from the Fig. 4 rows (``layer``, ``relu``, ``crelu`` scores; each score a number,
    or a list with one per seed).

    Examples
    --------
    >>> rows = [dict(layer=f"conv{i}", relu=1.0, crelu=1.0 + (i % 3 > 0)) for i in range(1, 7)]
    >>> f3_invariance(rows)["numbers"]["layers_crelu_ge_relu"]
    6
    """
    decisions, relu, crelu = [], [], []
    for r in rows:
        (m_r, se_r, n), (m_c, se_c, _) = seed_stats(r["relu"]), seed_stats(r["crelu"])
        decisions.append(decide(m_c - m_r, math.hypot(se_r, se_c)))
        relu.append(m_r)
        crelu.append(m_c)
    wins = [r["layer"] for r, d in zip(rows, decisions) if d is True]
    losses = [r["layer"] for r, d in zip(rows, decisions) if d is False]
    if len(wins) > len(rows) / 2:
        verdict = "holds"
    elif len(rows) - len(losses) <= len(rows) / 2:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    numbers = {
        "layers": len(rows),
        "seeds": n if rows else 0,
        "layers_crelu_ge_relu": len(wins),
        "layers_crelu_lt_relu": len(losses),
        "which": wins,
        "relu": relu,
        "crelu": crelu,
    }
    summary = f"CReLU >= ReLU on {len(wins)} of {len(rows)} layers" + (
        f" ({', '.join(wins)})" if wins else ""
    )
    if rows and n > 1:
        summary += f", below on {len(losses)}, within the spread of {n} seeds on the rest"
    return _finding("F3", verdict, numbers, summary)


def f4_errors(rows: list[dict]) -> dict:
    """F4 from the Table 1 rows (``role``, ``test_error``, ``test_error_se``, ``params``;
    with seeds also ``test_errors``, one per seed).

    Examples
    --------
    >>> rows = [dict(role="relu", test_error=20.0, test_error_se=1.0, params=100),
    ...         dict(role="crelu_half", test_error=19.0, test_error_se=1.0, params=50)]
    >>> f4_errors(rows)["verdict"]
    'holds'
    """
    by_role = {r["role"]: r for r in rows}
    base, half = by_role["relu"], by_role["crelu_half"]
    ratio = half["params"] / base["params"]
    numbers = {
        "baseline_error": base["test_error"],
        "baseline_error_se": base["test_error_se"],
        "half_error": half["test_error"],
        "half_error_se": half["test_error_se"],
        "baseline_params": base["params"],
        "half_params": half["params"],
        "params_ratio": ratio,
    }
    if base["test_error"] is None or half["test_error"] is None:
        return _finding("F4", "not testable", numbers, "no test error was recorded")
    m_base, se_base, n = seed_stats(base.get("test_errors") or base["test_error"])
    m_half, se_half, _ = seed_stats(half.get("test_errors") or half["test_error"])
    numbers.update(seeds=n, baseline_seed_se=se_base, half_seed_se=se_half)
    verdict = _three_way(decide(m_base - m_half, math.hypot(se_base, se_half)),
                         ratio <= HALF_PARAMS)  # fmt: skip
    if n == 1:
        summary = (
            f"CReLU-half {m_half:.2f}% (+/- {half['test_error_se']:.2f}) vs baseline "
            f"{m_base:.2f}% (+/- {base['test_error_se']:.2f}) with {ratio:.2f}x the "
            f"parameters ({half['params']} vs {base['params']})"
        )
    else:
        summary = (
            f"CReLU-half {m_half:.2f}% +/- {se_half:.2f} vs baseline {m_base:.2f}% +/- "
            f"{se_base:.2f} (mean +/- s.e. over {n} seeds) with {ratio:.2f}x the parameters "
            f"({half['params']} vs {base['params']})"
        )
    return _finding("F4", verdict, numbers, summary)


def f5_correlations(rows: list[dict]) -> dict:
    """F5 from the Table 6 rows (``layer``, ``abs_pair_mean``, ``pair_mean``, ...).

    Examples
    --------
    >>> rows = [dict(layer="conv1", abs_pair_mean=0.2, pair_mean=-0.1, abs_nonpair_mean=0.1),
    ...         dict(layer="conv2", abs_pair_mean=0.7, pair_mean=-0.7, abs_nonpair_mean=0.1)]
    >>> f5_correlations(rows)["verdict"]
    'does not hold'
    """
    values = [r["abs_pair_mean"] for r in rows]
    ok = bool(rows) and all(v < CORRELATION_LIMIT for v in values)
    numbers = {
        "layers": [r["layer"] for r in rows],
        "abs_pair_mean": values,
        "pair_mean": [r["pair_mean"] for r in rows],
        "abs_nonpair_mean": [r["abs_nonpair_mean"] for r in rows],
        "max_abs_pair_mean": max(values) if values else None,
    }
    if not rows:
        return _finding("F5", "not testable", numbers, "no CReLU layer followed by a conv")
    worst = max(rows, key=lambda r: r["abs_pair_mean"])
    summary = (
        f"mean |cos| of pair weights {min(values):.3f}-{max(values):.3f} over {len(rows)} "
        f"layers (largest at {worst['layer']}); non-pair "
        f"{min(r['abs_nonpair_mean'] for r in rows):.3f}-"
        f"{max(r['abs_nonpair_mean'] for r in rows):.3f}"
    )
    return _finding("F5", _verdict(ok), numbers, summary)


def f6_joint(rows: list[dict]) -> dict:
    """F6 from Fig. 5's joint rows (``model``, ``layer``, ``pooling_before``, ``psnr``).

    Examples
    --------
    >>> rows = [dict(model=m, layer="conv1", pooling_before=False, psnr=250.0)
    ...         for m in ("CReLU", "ReLU")]
    >>> f6_joint(rows)["verdict"]
    'holds'
    >>> rows[1]["psnr"] = 45.0
    >>> f6_joint(rows)["verdict"]
    'does not hold'
    """
    judged = [r for r in rows if not r["pooling_before"]]
    models = sorted({r["model"] for r in judged})
    numbers = {
        "layers": [f"{r['model']} {r['layer']}" for r in judged],
        "psnr": [r["psnr"] for r in judged],
        "recovered_psnr": RECOVERED_PSNR,
    }
    if not {"CReLU", "ReLU"} <= set(models):
        return _finding("F6", "not testable", numbers, "joint rows of both models are missing")
    ok = all(r["psnr"] >= RECOVERED_PSNR for r in judged)
    parts = []
    for model in models:
        values = [r for r in judged if r["model"] == model]
        shown = ", ".join(f"{r['layer']} {psnr_text(r['psnr'])}" for r in values)
        parts.append(f"{model}: {shown}")
    return _finding("F6", _verdict(ok), numbers, "; ".join(parts))


def evaluate_findings(results: dict) -> list[dict]:
    """All five findings from the scripts' :class:`~figures.common.Result` keyed by id.

    A finding whose script did not run is ``not testable``.
    """
    findings = []

    def missing(key, what):
        return _finding(key, "not testable", {}, f"{what} did not run")

    if "fig1" in results:
        fig1 = results["fig1"]
        findings.append(f1_pairing(fig1.where(model="ReLU"), fig1.where(model="CReLU")))
    else:
        findings.append(missing("F1", "Figure 1"))
    if "fig5" in results:
        fig5 = results["fig5"]
        rows = fig5.where(model="CReLU", strategy="layerwise") or fig5.where(model="CReLU")
        findings.append(f2_reconstruction(rows))
    else:
        findings.append(missing("F2", "Figure 5"))
    if "fig4" in results:
        rows = [
            dict(r, relu=r.get("relu_seeds", r["relu"]), crelu=r.get("crelu_seeds", r["crelu"]))
            for r in results["fig4"].rows
        ]
        findings.append(f3_invariance(rows))
    else:
        findings.append(missing("F3", "Figure 4"))
    if "table1" in results:
        findings.append(f4_errors(results["table1"].rows))
    else:
        findings.append(missing("F4", "Table 1"))
    if "table6" in results:
        findings.append(f5_correlations(results["table6"].rows))
    else:
        findings.append(missing("F5", "Table 6"))
    joint = results["fig5"].where(strategy="joint") if "fig5" in results else []
    findings.append(f6_joint(joint) if joint else missing("F6", "Figure 5's joint rows"))
    return findings
