"""Statistics for reporting: confidence intervals (Wilson for a rate of 0/1 outcomes, bootstrap for any other
mean), the Mann-Whitney U test, a within-group comparison of successes and failures, and the paired-seed t
interval, Holm's correction and the seed count it needs (SciPy)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci(values, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean and percentile-bootstrap CI of the mean. With fewer than 2 values the CI is the value itself."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values")
    if len(x) < 2 or np.all(x == x[0]):
        return {"mean": float(x.mean()), "low": float(x.mean()), "high": float(x.mean()), "n": len(x)}
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return {"mean": float(x.mean()), "low": float(res.confidence_interval.low),
            "high": float(res.confidence_interval.high), "n": len(x)}


def proportion_ci(outcomes, confidence: float = 0.95) -> dict:
    """Rate of 0/1 outcomes with its Wilson score interval: unlike a bootstrap it stays wide at 0 % and 100 %
    (a bootstrap of 10 successes out of 10 gives [1, 1]) and covers well for small n."""
    x = np.asarray(outcomes, dtype=bool)
    if len(x) == 0:
        raise ValueError("no outcomes")
    ci = stats.binomtest(int(x.sum()), len(x)).proportion_ci(confidence_level=confidence, method="wilson")
    return {"mean": float(x.mean()), "low": float(ci.low), "high": float(ci.high), "n": len(x)}


def mann_whitney(a, b) -> dict:
    """Two-sided Mann-Whitney U of a vs b, with the rank-biserial correlation as effect size
    (+1: every a above every b; 0: no difference)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return {"u": None, "p_value": None, "rank_biserial": None, "n_a": len(a), "n_b": len(b)}
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    return {"u": float(res.statistic), "p_value": float(res.pvalue),
            "rank_biserial": float(2 * res.statistic / (len(a) * len(b)) - 1), "n_a": len(a), "n_b": len(b)}


def within_group_difference(scores, outcomes, groups) -> dict:
    """Mean score of successes minus that of failures inside each group holding both, then over those groups
    (two-sided Wilcoxon signed-rank p). Pooling groups can show a difference that is only between groups (easy
    tasks succeeding and scoring high); this cannot."""
    by_group: dict = {}
    for score, ok, group in zip(scores, outcomes, groups):
        by_group.setdefault(group, ([], []))[0 if ok else 1].append(float(score))
    diffs = {g: float(np.mean(ok) - np.mean(bad)) for g, (ok, bad) in sorted(by_group.items()) if ok and bad}
    values = np.array(list(diffs.values()))
    p = float(stats.wilcoxon(values).pvalue) if len(values) and np.any(values != 0) else None
    return {"groups": len(values), "mean_difference": float(values.mean()) if len(values) else None,
            "positive": int((values > 0).sum()), "p_value": p, "per_group": {str(g): d for g, d in diffs.items()}}


def paired_t(differences, confidence: float = 0.95) -> dict:
    """Mean of per-seed paired differences with its Student-t CI and two-sided p (H0: mean 0). The seed is the unit
    of replication: a bootstrap over a handful of seeds is far too narrow."""
    x = np.asarray(differences, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return {"mean": float(x.mean()) if len(x) else None, "low": None, "high": None, "half_width": None,
                "p_value": None, "sd": float(x.std(ddof=1)) if len(x) > 1 else None, "n": len(x)}
    sem = stats.sem(x)
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * sem)
    return {"mean": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half),
            "half_width": half, "p_value": float(stats.ttest_1samp(x, 0.0).pvalue), "sd": float(x.std(ddof=1)),
            "n": len(x)}


def holm(p_values: dict) -> dict:
    """Holm's step-down adjustment of a family of p-values (None: not tested, left None). Controls the
    family-wise error rate at any level without assuming independence."""
    tested = sorted((p, k) for k, p in p_values.items() if p is not None)
    adjusted, running = {k: None for k in p_values}, 0.0
    for rank, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))  # adjusted p-values never decrease
        adjusted[k] = running
    return adjusted


def seeds_for_half_width(sd: float, half_width: float, confidence: float = 0.95, most: int = 200) -> int:
    """Smallest number of seeds n >= 2 for which the t CI of a mean of n paired differences with standard deviation
    `sd` has at most `half_width`: t(n-1) * sd / sqrt(n) <= half_width."""
    for n in range(2, most + 1):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n) <= half_width:
            return n
    raise ValueError(f"more than {most} seeds for sd {sd} and half-width {half_width}")
