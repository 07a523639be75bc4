import itertools

import numpy as np
import pytest
import torch

from mirroralign.analysis.metrics import all_metrics, cka, cknna, hsic_biased, hsic_unbiased, mutual_knn, unbiased_cka
from mirroralign.stats import (
    holm,
    mann_whitney,
    mean_ci,
    paired_t,
    proportion_ci,
    seeds_for_half_width,
    within_group_difference,
)


def test_identical_inputs_score_one():
    x = torch.randn(60, 16, generator=torch.Generator().manual_seed(0))
    for name, value in all_metrics(x, x, k=5).items():  # 1 up to the reference code's 1e-6 epsilon
        assert value == pytest.approx(1.0, abs=1e-4), name


def test_rotated_and_rescaled_copy_keeps_cka_at_one():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 12, generator=g)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    y = 3.0 * x @ q  # rows are normalised first, and an orthogonal map keeps every inner product
    assert cka(x, y) == pytest.approx(1.0, abs=1e-4)
    assert unbiased_cka(x, y) == pytest.approx(1.0, abs=1e-4)
    assert mutual_knn(x, y, 5) == pytest.approx(1.0)


def test_independent_noise_scores_near_zero():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(400, 64, generator=g), torch.randn(400, 32, generator=g)
    assert mutual_knn(a, b, 10) < 0.08  # chance is 10/399
    assert abs(unbiased_cka(a, b)) < 0.05
    assert abs(cknna(a, b, 10)) < 0.1
    assert cka(a, b) < 0.3  # the biased estimate keeps a positive floor at finite N
    assert cka(a, b) < cka(a, a[:, :32] + 0.1 * b)  # and sees a shared part


def test_mutual_knn_by_hand():
    # 1-D points on a line: neighbours are obvious
    a = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-0.14, 0.99]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.14], [-0.14, 0.99]])
    # k=1: a pairs (0,1),(2,3); b pairs (0,2),(1,3): no neighbour in common
    assert mutual_knn(a, b, 1) == 0.0
    assert mutual_knn(a, a, 1) == 1.0


def test_hsic_estimators_against_their_definitions():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 3, generator=g).double(), torch.randn(7, 4, generator=g).double()
    K, L = x @ x.T, y @ y.T
    n = 7
    Kc = K - K.mean(0) - K.mean(1, keepdim=True) + K.mean()
    assert hsic_biased(K, L).item() == pytest.approx((Kc * L).sum().item(), rel=1e-9)
    # the U-statistic of Song et al. (2012) over ordered tuples of distinct indices
    total = sum(K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
                for i, j, q, r in itertools.permutations(range(n), 4))
    assert hsic_unbiased(K, L).item() == pytest.approx(total.item() / (n * (n - 1) * (n - 2) * (n - 3)), rel=1e-9)


def test_cknna_uses_only_mutual_neighbour_pairs():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(80, 8, generator=g)
    b = a + 0.05 * torch.randn(80, 8, generator=g)
    assert cknna(a, b, 10) > 0.8
    with pytest.raises(ValueError):
        cknna(a, b, 1)


def test_bootstrap_ci_against_the_exact_bootstrap_distribution():
    # 5 values have 5^5 equally likely resamples: their means' 2.5 / 97.5 percentiles are the exact percentile
    # interval, which 10,000 random resamples must approximate
    x = np.array([0.61, 0.72, 0.55, 0.80, 0.67])
    means = np.array([x[list(idx)].mean() for idx in itertools.product(range(5), repeat=5)])
    exact_low, exact_high = np.percentile(means, [2.5, 97.5])
    ci = mean_ci(x, seed=0)
    assert ci["mean"] == pytest.approx(x.mean()) and ci["n"] == 5
    assert ci["low"] == pytest.approx(exact_low, abs=0.005) and ci["high"] == pytest.approx(exact_high, abs=0.005)
    assert mean_ci([0.4, 0.4, 0.4]) == {"mean": pytest.approx(0.4), "low": pytest.approx(0.4),
                                         "high": pytest.approx(0.4), "n": 3}


def test_mann_whitney_against_the_exact_permutation_distribution():
    a, b = [0.9, 0.8, 0.85, 0.7], [0.1, 0.3, 0.2, 0.75, 0.4]
    mw = mann_whitney(a, b)
    assert mw["u"] == 19  # pairs with a above b: 5 + 5 + 5 + 4 (0.7 < 0.75)
    assert mw["rank_biserial"] == pytest.approx(0.9)  # (19 - 1) / 20
    # no ties and small samples: the exact two-sided p is the share of the C(9, 4) = 126 ways to split the pooled
    # values whose U is at least as far from its mean (10) as the observed one
    pooled = a + b
    us = [sum(x > y for x in (pooled[i] for i in chosen) for y in (pooled[j] for j in range(9) if j not in chosen))
          for chosen in itertools.combinations(range(9), 4)]
    assert len(us) == 126
    assert mw["p_value"] == pytest.approx(sum(abs(u - 10) >= 9 for u in us) / 126)  # 4 / 126
    assert mann_whitney([], b)["p_value"] is None


def test_within_group_difference_by_hand_and_blind_to_differences_between_groups():
    scores = [0.9, 0.7, 0.5, 0.2, 0.4, 0.6, 0.8]
    outcomes = [True, True, False, True, False, False, True]
    groups = ["a", "a", "a", "b", "b", "b", "c"]  # c has no failure: left out
    w = within_group_difference(scores, outcomes, groups)
    assert w["groups"] == 2 and w["positive"] == 1
    assert w["per_group"] == pytest.approx({"a": 0.8 - 0.5, "b": 0.2 - 0.5})
    assert w["mean_difference"] == pytest.approx(0.0)
    # an easy group (succeeds, scores high) and a hard one (fails, scores low): pooled, successes look far better
    # aligned; within each group they are not
    scores, outcomes = [0.75] * 4 + [0.25] * 4, [True, True, True, False, True, False, False, False]
    groups = ["easy"] * 4 + ["hard"] * 4
    assert mann_whitney([s for s, o in zip(scores, outcomes) if o],
                        [s for s, o in zip(scores, outcomes) if not o])["rank_biserial"] == pytest.approx(0.5)
    w = within_group_difference(scores, outcomes, groups)
    assert w["mean_difference"] == 0 and w["positive"] == 0 and w["p_value"] is None
    # exact Wilcoxon signed-rank, 5 positive differences: two-sided p = 2 / 2^5
    w = within_group_difference([1, 0] * 5, [True, False] * 5, [g for g in "abcde" for _ in range(2)])
    assert w["groups"] == 5 and w["p_value"] == pytest.approx(2 / 32)


def test_wilson_interval_by_hand_and_wide_at_the_bounds():
    # Wilson: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.95996
    z, n = 1.959963984540054, 10
    for k in (0, 3, 10):
        p = k / n
        centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        ci = proportion_ci([True] * k + [False] * (n - k))
        assert ci["mean"] == pytest.approx(p) and ci["n"] == n
        assert (ci["low"], ci["high"]) == pytest.approx(((centre - half) / (1 + z * z / n),
                                                        (centre + half) / (1 + z * z / n)))
    assert proportion_ci([True] * 10)["low"] < 0.75  # a bootstrap would say [1, 1]
    with pytest.raises(ValueError):
        proportion_ci([])


def test_paired_t_by_hand():
    d = [0.01, 0.03, -0.01, 0.05]  # mean 0.02, sd sqrt(0.00066667) = 0.025820, t(3, .975) = 3.182446
    r = paired_t(d)
    half = 3.182446 * 0.025820 / 2
    assert r["mean"] == pytest.approx(0.02) and r["sd"] == pytest.approx(0.025820, rel=1e-4)
    assert r["half_width"] == pytest.approx(half, rel=1e-4) and r["low"] == pytest.approx(0.02 - half, rel=1e-4)
    # t = 0.02 / (0.02582 / 2) = 1.5492; df 3 has a closed-form CDF: 1/2 + (a / (1 + a^2) + atan(a)) / pi, a = t/sqrt3
    a = 1.5492 / np.sqrt(3)
    assert r["p_value"] == pytest.approx(2 * (0.5 - (a / (1 + a * a) + np.arctan(a)) / np.pi), abs=1e-4)
    assert paired_t([0.1, 0.1])["low"] is None  # no spread: no interval claiming certainty


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (kept monotone); untested stays None
    adjusted = holm({"a": 0.04, "b": 0.01, "c": 0.02, "d": None})
    assert adjusted["d"] is None
    assert [adjusted[k] for k in "bca"] == pytest.approx([0.03, 0.04, 0.04])
    assert holm({"a": 0.6, "b": 0.5})["a"] == 1.0  # capped at 1


def test_seeds_for_half_width_is_the_smallest_that_reaches_it():
    n = seeds_for_half_width(2.45, 2.0)
    assert n == 9  # t(8) 2.306 * 2.45 / 3 = 1.88; with 8: t(7) 2.365 * 2.45 / 2.83 = 2.05
    assert seeds_for_half_width(1.0, 10.0) == 2
