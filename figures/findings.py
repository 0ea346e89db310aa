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

Uncertainty from seeds: the paired rule (fixed before the first matched run, issue 16).
F1, F3 and F4 compare quantities of trained models. ``crelu figures --seeds N`` trains
every variant once per seed, and runs of one seed are matched: the same item order,
flips and dropout draws in every epoch (:mod:`invert.train.batches`) and the same
initial weights wherever two variants' layers have the same shape. A comparison is
therefore judged on the ``N`` per-seed differences ``d_k = a_k - b_k``
(:func:`paired_rule`): with mean ``D``, sample standard deviation ``s`` and
``SE = s / sqrt(N)``, the sign of ``D`` counts as shown when
``|D| > t(1 - ALPHA / 2, N - 1) * SE`` (Student's t, two-sided level ``ALPHA = 0.05``),
and a shown sign with ``SE = 0`` counts too; otherwise the comparison is
"inconclusive". Each comparison also reports the smallest ``|D|`` the run could
detect, ``(t(1 - ALPHA / 2, N - 1) + t(POWER, N - 1)) * SE`` (power ``POWER = 0.8``
at the observed spread), and the number of seeds the observed ``|D|`` would need for
that power. With one seed there is no spread: the comparisons are those of the
single-run criteria (ties as written there). F2, F5 and F6 are properties of one
trained model, not comparisons between models: they are judged on the models of the
first seed, the ones the figures show; F2 and F6 on every photograph of Fig. 5.

The findings (numbering ours):

* **F1** (Sections 2.1 and 4.3, Figs. 1-3): ReLU conv1 filters pair up more than
  random filters, CReLU conv1 filters do not. Judged where the paper made the claim,
  on AlexNet's conv1 (96 filters of 11x11x3: the ``alexnet64`` family, issue 16); the
  ConvPool-CNN-C conv1 (3x3x3 filters, where random ones already pair at about -0.36)
  is reported beside it, outside the claim.
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
from functools import lru_cache

from invert.display import PSNR_CAP, cell_text, psnr_text

__all__ = ["CRITERIA", "decide", "paired_rule", "f1_pairing", "f2_reconstruction", "f3_invariance",
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
#: A difference counts as shown beyond this many of its standard errors (one seed per
#: side only: the older independent-seed rule of :func:`decide`).
SEED_SIGMAS = 2.0
#: Two-sided level of the paired rule, and the power at which it states the smallest
#: detectable difference (fixed before the first matched run).
ALPHA = 0.05
POWER = 0.8
#: PSNR (dB) from which joint inversion counts as recovering the input (F6): the cap.
RECOVERED_PSNR = PSNR_CAP

CRITERIA = {
    "F1": (
        "ReLU conv1 filters pair up more than random filters while CReLU conv1 filters do not",
        f"on the AlexNet-layout conv1 (alexnet64 and alexnet64_crelu: 96 filters of "
        f"11x11x3, as in the paper's Figs. 1-3), pairing gap g = (mean mu_r - mean mu_w) "
        f"/ std mu_r (mu_r: unit Gaussian filters of the same shape and count). Holds iff "
        f"g_ReLU > {PAIRING_MARGIN:g} (learned filters clearly more opposite than random "
        f"ones) and g_CReLU <= {PAIRING_MARGIN:g}. With seeds: each comparison with the "
        f"margin by the paired rule on the per-seed values g - {PAIRING_MARGIN:g} "
        f"(Student t, two-sided {ALPHA:g}; else inconclusive). The ConvPool-CNN-C conv1 "
        f"(27-dim filters) is reported, not judged.",
    ),
    "F2": (
        "Reconstruction is exact through CReLU layers without pooling, and PSNR falls "
        "layer by layer",
        f"CReLU model, conv1-conv4 reconstructions in float64, on every photograph of "
        f"Fig. 5 (one outside the training sources). (a) every layer reached "
        f"without max-pooling whose convs on the way are all frames (lower frame bound "
        f"A > tol, circular boundary) has relative error <= {EXACT_ERROR:g}, and there is "
        f"at least one such layer; (b) PSNR, capped at {PSNR_CAP:g} dB, does not increase "
        f"from conv1 to conv4. Holds iff (a) and (b) on every photograph. Layers that are "
        f"not frames are reported but not judged by (a): Proposition 2.1 promises only "
        f"the projection onto the filters' span there.",
    ),
    "F3": (
        "CReLU invariance >= ReLU invariance on most layers",
        f"layer invariance scores (mean of the top 20% unit scores) on every conv layer but "
        f"the class layer (ConvPool-CNN-C, the paper's CIFAR setting). Holds iff "
        f"score_CReLU >= score_ReLU on more than half of the layers. With seeds: a layer "
        f"counts for CReLU (against it) only when the paired rule shows the per-seed "
        f"differences CReLU - ReLU above (below) zero (Student t, two-sided {ALPHA:g}); "
        f"holds iff the layers counted for CReLU are more than half, does not hold iff "
        f"those not counted against it are at most half, else inconclusive.",
    ),
    "F4": (
        "CReLU-half error <= baseline error at half the parameters",
        f"test error (%) after training with the recipe, one run each. Holds iff "
        f"error(CReLU-half) <= error(baseline) and params(CReLU-half) <= "
        f"{HALF_PARAMS:g} x params(baseline). The binomial standard errors are reported "
        f"as context, not used in the verdict. With seeds: the paired rule on the per-seed "
        f"differences error(baseline) - error(CReLU-half) of matched runs (Student t, "
        f"two-sided {ALPHA:g}): holds iff shown >= 0 (and the parameter condition), does not "
        f"hold iff shown < 0 (or the parameters exceed the bound), else inconclusive.",
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


@lru_cache(maxsize=256)
def _t_quantile(q: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, dof))


def _detectable(se: float, n: int) -> float:
    """Smallest |mean difference| found with power :data:`POWER` at standard error ``se``."""
    return (_t_quantile(1 - ALPHA / 2, n - 1) + _t_quantile(POWER, n - 1)) * se


def seeds_needed(mean: float, sd: float, *, limit: int = 1000) -> int | None:
    """Seeds a paired comparison needs to detect a difference ``mean`` at spread ``sd``
    with power :data:`POWER` (None: more than ``limit``, or no difference at all; 1 when
    the seeds do not spread).

    Examples
    --------
    >>> seeds_needed(1.0, 1.0)  # (t(0.975, n-1) + t(0.8, n-1)) / sqrt(n) < 1 from n = 10
    10
    >>> seeds_needed(0.0, 1.0) is None
    True
    """
    if mean == 0 or not math.isfinite(mean) or not math.isfinite(sd):
        return None
    if sd == 0:
        return 1
    for n in range(2, limit + 1):
        if _detectable(sd / math.sqrt(n), n) < abs(mean):
            return n
    return None


def paired_rule(differences) -> dict:
    """The paired rule on per-seed differences ``d_k = a_k - b_k`` of matched runs.

    Returns ``mean``, ``sd``, ``se`` (``sd / sqrt(n)``), ``n``, ``t`` (the critical value
    ``t(1 - ALPHA / 2, n - 1)``, None for one seed), ``decision`` (True: ``mean >= 0``
    shown, False: ``mean < 0`` shown, None: within the spread), ``detectable`` (the
    smallest ``|mean|`` the run detects with power :data:`POWER`) and ``seeds_needed``
    (for the observed mean at the observed spread). One seed: the sign decides (0
    counts as >= 0) and nothing is detectable from a spread (None).

    Examples
    --------
    >>> paired_rule([1.0, 1.2, 0.9, 1.1])["decision"]  # a clear win
    True
    >>> paired_rule([-1.0, -1.2, -0.9, -1.1])["decision"]  # a clear loss
    False
    >>> rule = paired_rule([1.0, -1.0, 0.5, -0.4])  # noise
    >>> rule["decision"] is None, round(rule["detectable"], 2)
    (True, 1.86)
    """
    d = [float(v) for v in (differences if isinstance(differences, (list, tuple))
                            else [differences])]  # fmt: skip
    n = len(d)
    if n == 0:
        raise ValueError("the paired rule needs at least one per-seed difference")
    mean = sum(d) / n
    out = {"n": n, "mean": mean, "sd": None, "se": None, "t": None, "detectable": None,
           "seeds_needed": None}  # fmt: skip
    if any(math.isnan(v) for v in d):
        return {**out, "decision": False}
    if n == 1:
        return {**out, "decision": mean >= 0}
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    se = sd / math.sqrt(n)
    t = _t_quantile(1 - ALPHA / 2, n - 1)
    if se == 0:
        decision = mean >= 0
    elif abs(mean) > t * se:
        decision = mean > 0
    else:
        decision = None
    return {**out, "sd": sd, "se": se, "t": t, "decision": decision,
            "detectable": _detectable(se, n), "seeds_needed": seeds_needed(mean, sd)}  # fmt: skip


def _direction(rule: dict, above: str, below: str) -> str:
    """What a paired rule shows, in words: ``above``, ``below`` or ``undecided``."""
    if rule["decision"] is None:
        return "undecided"
    return above if rule["decision"] else below


def _power_text(rule: dict, unit: str = "") -> str:
    """``detectable >= X; the observed difference would need N seeds`` (seeds only)."""
    if rule["n"] < 2 or rule["detectable"] is None:
        return ""
    need = rule["seeds_needed"]
    need_text = "more than 1000 seeds" if need is None else f"{need} seeds"
    return (f"smallest detectable |D| {rule['detectable']:.3g}{unit} with {rule['n']} seeds; "
            f"|D| = {abs(rule['mean']):.3g}{unit} would need {need_text}")  # fmt: skip


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
    dict per model, or a list of them, one per seed (matched: the same seeds, in order).

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
    if len(relu) != len(crelu):
        raise ValueError(f"F1 pairs seeds: {len(relu)} ReLU rows but {len(crelu)} CReLU rows")

    def gaps(rows):
        return [pairing_gap(r["mu_w_mean"], r["mu_r_mean"], r["mu_r_std"]) for r in rows]

    g_relu, g_crelu = gaps(relu), gaps(crelu)
    n = len(g_relu)
    relu_rule = paired_rule([g - PAIRING_MARGIN for g in g_relu])
    crelu_rule = paired_rule([PAIRING_MARGIN - g for g in g_crelu])
    # every direction measured, beyond the two the verdict needs
    relu_vs_random = paired_rule(g_relu)
    crelu_vs_random = paired_rule(g_crelu)
    relu_vs_crelu = paired_rule([a - b for a, b in zip(g_relu, g_crelu)])
    if n == 1:  # the single-run criterion: strictly beyond the margin
        relu_rule["decision"] = g_relu[0] > PAIRING_MARGIN
    first_r, first_c = relu[0], crelu[0]
    numbers = {
        "seeds": n,
        "relu_mu_w_mean": first_r["mu_w_mean"],
        "relu_mu_r_mean": first_r["mu_r_mean"],
        "relu_mu_r_std": first_r["mu_r_std"],
        "relu_gap": relu_vs_random["mean"],
        "relu_gap_se": relu_vs_random["se"] or 0.0,
        "relu_gaps": g_relu,
        "crelu_mu_w_mean": first_c["mu_w_mean"],
        "crelu_mu_r_mean": first_c["mu_r_mean"],
        "crelu_mu_r_std": first_c["mu_r_std"],
        "crelu_gap": crelu_vs_random["mean"],
        "crelu_gap_se": crelu_vs_random["se"] or 0.0,
        "crelu_gaps": g_crelu,
        "relu_beyond_margin": relu_rule,
        "crelu_within_margin": crelu_rule,
        "relu_vs_random": relu_vs_random,
        "crelu_vs_random": crelu_vs_random,
        "relu_minus_crelu_gap": relu_vs_crelu,
        # how far conv1 learned: mean cosine of its filters with their initial values
        "relu_cos_initial": _mean_of(relu, "cos_initial"),
        "crelu_cos_initial": _mean_of(crelu, "cos_initial"),
    }

    summary = _f1_summary(numbers)
    verdict = _three_way(relu_rule["decision"], crelu_rule["decision"])
    return _finding("F1", verdict, numbers, summary)


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _f1_summary(numbers: dict) -> str:
    """F1's one-line summary from its numbers (:func:`f1_pairing`)."""
    n = numbers["seeds"]
    relu_vs_random, crelu_vs_random = numbers["relu_vs_random"], numbers["crelu_vs_random"]

    def gap_text(gaps, rule):
        if n == 1:
            return f"{gaps[0]:.2f}"
        return f"{rule['mean']:.2f} +/- {rule['se']:.2f}"

    directions = (
        f"directions: ReLU mu_w vs random "
        f"{_direction(relu_vs_random, 'below (pairs more)', 'above')}, CReLU mu_w vs random "
        f"{_direction(crelu_vs_random, 'below (pairs more)', 'above')}, ReLU gap vs CReLU gap "
        f"{_direction(numbers['relu_minus_crelu_gap'], 'larger', 'smaller')}"
    )
    summary = (
        f"AlexNet-layout conv1 gap{'' if n == 1 else f' over {n} seeds'}: ReLU "
        f"{gap_text(numbers['relu_gaps'], relu_vs_random)} (mu_w "
        f"{numbers['relu_mu_w_mean']:.3f} vs mu_r {numbers['relu_mu_r_mean']:.3f}), CReLU "
        f"{gap_text(numbers['crelu_gaps'], crelu_vs_random)} (mu_w "
        f"{numbers['crelu_mu_w_mean']:.3f} vs mu_r {numbers['crelu_mu_r_mean']:.3f}), margin "
        f"{PAIRING_MARGIN:g}; {directions}"
    )
    if numbers["relu_cos_initial"] is not None and numbers["crelu_cos_initial"] is not None:
        summary += (f"; conv1 learned this far: mean cosine of its filters with their initial "
                    f"values ReLU {numbers['relu_cos_initial']:.3f}, CReLU "
                    f"{numbers['crelu_cos_initial']:.3f} (1: unchanged)")  # fmt: skip
    rules = (("ReLU > margin", numbers["relu_beyond_margin"]),
             ("CReLU <= margin", numbers["crelu_within_margin"]))  # fmt: skip
    for name, rule in rules:
        if rule["decision"] is None:
            summary += f"; {name}: {_power_text(rule)}"
    return summary


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
    images = list(dict.fromkeys(r.get("image") for r in rows))
    if len(images) > 1:  # judged on every photograph
        parts = [f2_reconstruction([r for r in rows if r.get("image") == im]) for im in images]
        numbers = {
            "images": images,
            "holds_per_image": [p["verdict"] == "holds" for p in parts],
            "per_image": [p["numbers"] for p in parts],
        }
        summary = "; ".join(f"{im}: {p['verdict']}: {p['summary']}" for im, p in zip(images, parts))
        return _finding("F2", _verdict(all(numbers["holds_per_image"])), numbers, summary)
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
    or a list with one per seed, matched by position).

    Examples
    --------
    >>> rows = [dict(layer=f"conv{i}", relu=1.0, crelu=1.0 + (i % 3 > 0)) for i in range(1, 7)]
    >>> f3_invariance(rows)["numbers"]["layers_crelu_ge_relu"]
    6
    """
    rules, relu, crelu, n = [], [], [], 0
    for r in rows:
        a = r["crelu"] if isinstance(r["crelu"], (list, tuple)) else [r["crelu"]]
        b = r["relu"] if isinstance(r["relu"], (list, tuple)) else [r["relu"]]
        if len(a) != len(b):
            raise ValueError(f"F3 pairs seeds: {r['layer']} has {len(b)} ReLU and {len(a)} "
                             f"CReLU scores")  # fmt: skip
        rules.append(paired_rule([x - y for x, y in zip(a, b)]))
        relu.append(sum(b) / len(b))
        crelu.append(sum(a) / len(a))
        n = len(a)
    wins = [r["layer"] for r, rule in zip(rows, rules) if rule["decision"] is True]
    losses = [r["layer"] for r, rule in zip(rows, rules) if rule["decision"] is False]
    if len(wins) > len(rows) / 2:
        verdict = "holds"
    elif len(rows) - len(losses) <= len(rows) / 2:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    numbers = {
        "layers": len(rows),
        "seeds": n,
        "layers_crelu_ge_relu": len(wins),
        "layers_crelu_lt_relu": len(losses),
        "which": wins,
        "which_below": losses,
        "relu": relu,
        "crelu": crelu,
        "difference": [rule["mean"] for rule in rules],
        "difference_se": [rule["se"] for rule in rules],
        "detectable": [rule["detectable"] for rule in rules],
        "seeds_needed": [rule["seeds_needed"] for rule in rules],
    }
    summary = f"CReLU >= ReLU on {len(wins)} of {len(rows)} layers" + (
        f" ({', '.join(wins)})" if wins else ""
    )
    if rows and n > 1:
        summary += f", below on {len(losses)}" + (f" ({', '.join(losses)})" if losses else "")
        summary += f", undecided on {len(rows) - len(wins) - len(losses)} (paired, {n} seeds)"
        above = sum(d > 0 for d in numbers["difference"])
        summary += f"; mean difference above zero on {above} of {len(rows)}"
        open_ = [rule for rule in rules if rule["decision"] is None]
        if open_:
            detect = sorted(rule["detectable"] for rule in open_)
            need = [rule["seeds_needed"] for rule in open_]
            need_known = sorted(x for x in need if x is not None)
            summary += (
                f"; undecided layers: smallest detectable |D| {detect[0]:.3g}-{detect[-1]:.3g} "
                f"against observed |D| "
                f"{min(abs(rule['mean']) for rule in open_):.3g}-"
                f"{max(abs(rule['mean']) for rule in open_):.3g}, seeds needed "
                + (f"{need_known[0]}-{need_known[-1]}" if need_known else "more than 1000")
                + (" (some more than 1000)" if need_known and len(need_known) < len(need) else "")
            )  # fmt: skip
    return _finding("F3", verdict, numbers, summary)


def f4_errors(rows: list[dict]) -> dict:
    """F4 from the Table 1 rows (``role``, ``test_error``, ``test_error_se``, ``params``;
    with seeds also ``test_errors``, one per seed, matched by position).

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
    errors_base = base.get("test_errors") or [base["test_error"]]
    errors_half = half.get("test_errors") or [half["test_error"]]
    if len(errors_base) != len(errors_half):
        raise ValueError(f"F4 pairs seeds: {len(errors_base)} baseline and "
                         f"{len(errors_half)} CReLU-half errors")  # fmt: skip
    rule = paired_rule([b - h for b, h in zip(errors_base, errors_half)])
    m_base, se_base, n = seed_stats(errors_base)
    m_half, se_half, _ = seed_stats(errors_half)
    numbers.update(seeds=n, baseline_seed_se=se_base, half_seed_se=se_half,
                   baseline_minus_half=rule)  # fmt: skip
    verdict = _three_way(rule["decision"], ratio <= HALF_PARAMS)
    params = f"with {ratio:.2f}x the parameters ({half['params']} vs {base['params']})"
    if n == 1:
        summary = (
            f"CReLU-half {m_half:.2f}% (+/- {half['test_error_se']:.2f}) vs baseline "
            f"{m_base:.2f}% (+/- {base['test_error_se']:.2f}) {params}"
        )
    else:
        summary = (
            f"CReLU-half {m_half:.2f}% vs baseline {m_base:.2f}% (means over {n} matched "
            f"seeds) {params}; paired difference baseline - half {rule['mean']:+.2f} +/- "
            f"{rule['se']:.2f} points: CReLU-half "
            f"{_direction(rule, 'better or equal', 'worse')} by the paired rule"
        )
        if rule["decision"] is None:
            summary += f"; {_power_text(rule, ' points')}"
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
    images = list(dict.fromkeys(r.get("image") for r in judged))
    numbers = {
        "images": images,
        "layers": [
            " ".join(str(x) for x in (r.get("image"), r["model"], r["layer"]) if x) for r in judged
        ],  # fmt: skip
        "psnr": [r["psnr"] for r in judged],
        "recovered_psnr": RECOVERED_PSNR,
    }
    if not {"CReLU", "ReLU"} <= set(models):
        return _finding("F6", "not testable", numbers, "joint rows of both models are missing")
    ok = all(r["psnr"] >= RECOVERED_PSNR for r in judged)
    parts = []
    for model in models:
        values = [r for r in judged if r["model"] == model]
        layers = list(dict.fromkeys(r["layer"] for r in values))
        worst = {lay: min(r["psnr"] for r in values if r["layer"] == lay) for lay in layers}
        shown = ", ".join(f"{lay} {psnr_text(worst[lay])}" for lay in layers)
        parts.append(f"{model}: {shown}")
    summary = "; ".join(parts)
    if len(images) > 1:
        summary += f" (the lowest over {len(images)} photographs: {', '.join(map(str, images))})"
    return _finding("F6", _verdict(ok), numbers, summary)


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
