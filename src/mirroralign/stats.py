"""Statistics for reporting: confidence intervals (Wilson for a rate of 0/1 outcomes, bootstrap for any other
mean), the Mann-Whitney U test and a within-group comparison of successes and failures (SciPy)."""

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
