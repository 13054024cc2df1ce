"""Metrics: hand-computed cases, scikit-learn cross-checks, bootstrap and McNemar behaviour."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest, rankdata
from sklearn import calibration as skcal
from sklearn import metrics as sk

from storage.records import ClassMetrics, Evaluation
from trainer import metrics

# The scikit-learn documentation's roc_curve example: AUC 0.75.
LABELS = [0, 0, 1, 1]
PROBS = [0.1, 0.4, 0.35, 0.8]


def random_case(seed: int, n: int = 2000, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-rng.normal(-1 + 2 * y, 1.5)))
    p = np.clip(p, 0.01, 0.99)  # away from the clipping of either log loss
    return y, (p.round(decimals) if decimals is not None else p)


# --- hand-computable cases -------------------------------------------------------------------


def test_confusion_and_per_class_match_hand_counts() -> None:
    assert metrics.confusion_at(LABELS, PROBS, 0.5) == ((2, 0), (1, 1))
    per_class = metrics.per_class_at(LABELS, PROBS, 0.5)
    assert per_class["positive"] == ClassMetrics(precision=1.0, recall=0.5, f1=2 / 3, support=2)
    neg = per_class["negative"]
    assert (neg.precision, neg.recall, neg.support) == (2 / 3, 1.0, 2)
    assert neg.f1 == pytest.approx(0.8)


def test_threshold_is_inclusive() -> None:
    assert metrics.confusion_at([0, 1], [0.5, 0.5], 0.5) == ((0, 1), (0, 1))
    assert metrics.confusion_at([0, 1], [0.5, 0.5], 0.51) == ((1, 0), (1, 0))


def test_undefined_precision_is_zero_like_sklearn_zero_division() -> None:
    per_class = metrics.per_class_at([0, 1, 1], [0.1, 0.2, 0.3], 0.9)  # nothing predicted positive
    assert per_class["positive"] == ClassMetrics(0.0, 0.0, 0.0, 2)
    assert per_class["negative"] == ClassMetrics(1 / 3, 1.0, 0.5, 1)


def test_scalars_of_the_hand_case() -> None:
    ev = metrics.evaluate(LABELS, PROBS, calibration_bins=2, n_bootstrap=50)
    s = ev.scalars
    assert ev.n == 4
    assert s["accuracy"] == 0.75
    assert s["roc_auc"] == 0.75
    assert s["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, rel=1e-12)
    expected_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert s["loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert s["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4, rel=1e-12)
    # bins [0, .5) and [.5, 1]: (mean .85/3, 1/3 positive, 3 reviews) and (.8, 1.0, 1)
    assert s["ece"] == pytest.approx(0.75 * abs(1 / 3 - 0.85 / 3) + 0.25 * 0.2, rel=1e-12)
    assert s["threshold"] == 0.5
    assert ev.confusion == ((2, 0), (1, 1))


def test_roc_auc_counts_ties_as_half() -> None:
    # pos .5 ties neg .5 (1/2), beats neg .2 (1); pos .9 beats both: 3.5 / 4
    assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875


def test_average_precision_steps_once_per_tied_score() -> None:
    # by descending score: .9 (1 pos): precision 1; .5 (1 pos, 1 neg): 2/3; .2 (1 pos, 1 neg):
    # 3/5; each step adds recall 1/3, so AP = (1 + 2/3 + 3/5) / 3 = 34/45
    labels, probs = [0, 1, 0, 1, 1], [0.5, 0.5, 0.2, 0.9, 0.2]
    assert metrics.average_precision(labels, probs) == pytest.approx(34 / 45, rel=1e-12)
    assert metrics.average_precision(labels, probs) == sk.average_precision_score(labels, probs)


def test_roc_and_pr_points_of_the_hand_case() -> None:
    roc = metrics.roc_curve(LABELS, PROBS)
    assert roc.x == (0.0, 0.0, 0.5, 0.5, 1.0)
    assert roc.y == (0.0, 0.5, 0.5, 1.0, 1.0)
    assert roc.w == (1.0, 0.8, 0.4, 0.35, 0.1)
    pr = metrics.pr_curve(LABELS, PROBS)
    assert pr.x == (0.0, 0.5, 0.5, 1.0, 1.0)
    assert pr.y == (1.0, 1.0, 0.5, 2 / 3, 0.5)
    assert pr.w == (1.0, 0.8, 0.4, 0.35, 0.1)


def test_calibration_curve_drops_empty_bins() -> None:
    curve, ece, brier = metrics.calibration([0, 1, 1, 0, 1], [0.05, 0.15, 0.95, 0.05, 0.85], 10)
    assert curve.x == pytest.approx((0.05, 0.15, 0.85, 0.95))
    assert curve.y == (0.0, 1.0, 1.0, 1.0)
    assert curve.w == (2.0, 1.0, 1.0, 1.0)
    assert ece == pytest.approx((2 * 0.05 + 0.85 + 0.15 + 0.05) / 5)
    assert brier == pytest.approx((0.0025 * 2 + 0.7225 + 0.0025 + 0.0225) / 5)


def test_mcnemar_matches_exact_binomial_hand_case() -> None:
    labels = [1] * 10
    a = [0.9] * 8 + [0.1] * 2  # right on reviews 0-7
    b = [0.1] * 6 + [0.9] * 4  # right on reviews 6-9
    result = metrics.mcnemar(labels, a, b)
    assert (result.b, result.c) == (6, 2)
    assert result.p_value == pytest.approx(74 / 256, rel=1e-12)  # 2 * P(X <= 2), X ~ B(8, 1/2)
    assert result.p_value == pytest.approx(binomtest(6, 8, 0.5).pvalue)
    swapped = metrics.mcnemar(labels, b, a)
    assert (swapped.b, swapped.c, swapped.p_value) == (2, 6, result.p_value)


def test_mcnemar_without_disagreements_has_p_value_one() -> None:
    assert metrics.mcnemar([0, 1], [0.2, 0.7], [0.3, 0.9]) == metrics.McNemar(0, 0, 1.0)


# --- scikit-learn cross-checks ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 2])  # 2 decimals: many tied scores
def test_scalars_agree_with_sklearn(seed: int, decimals: int | None) -> None:
    y, p = random_case(seed, decimals=decimals)
    threshold = 0.4 + 0.1 * seed
    ev = metrics.evaluate(y, p, threshold=threshold, n_bootstrap=20)
    pred = (p >= threshold).astype(int)
    assert ev.scalars["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
    assert ev.scalars["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert ev.scalars["average_precision"] == sk.average_precision_score(y, p)
    assert ev.scalars["loss"] == pytest.approx(sk.log_loss(y, p), rel=1e-9)
    assert ev.scalars["brier"] == pytest.approx(sk.brier_score_loss(y, p), rel=1e-9)
    assert np.array_equal(np.array(ev.confusion), sk.confusion_matrix(y, pred))
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, pred, zero_division=0)
    for k, name in enumerate(("negative", "positive")):
        got = ev.per_class[name]
        assert (got.precision, got.recall, got.f1) == pytest.approx(
            (precision[k], recall[k], f1[k]), abs=1e-12
        )
        assert got.support == support[k]


@pytest.mark.parametrize("decimals", [None, 2])
def test_full_roc_curve_equals_sklearn(decimals: int | None) -> None:
    y, p = random_case(3, n=500, decimals=decimals)
    fpr, tpr, thresholds = sk.roc_curve(y, p)
    roc = metrics.roc_curve(y, p, max_points=10_000)
    assert np.allclose(roc.x, fpr, atol=1e-12) and np.allclose(roc.y, tpr, atol=1e-12)
    assert roc.w[0] == 1.0 and np.isinf(thresholds[0])  # JSON cannot hold inf
    assert np.array_equal(roc.w[1:], thresholds[1:])


def test_roc_curve_end_points_agree_with_sklearn_after_downsampling() -> None:
    y, p = random_case(4, n=5000)
    fpr, tpr, thresholds = sk.roc_curve(y, p)
    roc = metrics.evaluate(y, p, n_bootstrap=0, curve_points=50).curves["roc"]
    assert len(fpr) > 50 >= len(roc.x)
    assert (roc.x[0], roc.y[0], roc.x[-1], roc.y[-1]) == (fpr[0], tpr[0], fpr[-1], tpr[-1])
    assert roc.w[-1] == thresholds[-1] == p.min()
    full = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert all(point in full for point in zip(roc.x, roc.y, strict=True))
    assert all(np.diff(roc.x) >= 0) and all(np.diff(roc.y) >= 0)


@pytest.mark.parametrize("decimals", [None, 2])
def test_full_pr_curve_equals_sklearn(decimals: int | None) -> None:
    y, p = random_case(5, n=500, decimals=decimals)
    precision, recall, thresholds = sk.precision_recall_curve(y, p)
    pr = metrics.pr_curve(y, p, max_points=10_000)
    assert np.allclose(pr.x, recall[::-1], atol=1e-12)
    assert np.allclose(pr.y, precision[::-1], atol=1e-12)
    assert pr.w[0] == 1.0 and np.array_equal(pr.w[1:], thresholds[::-1])


def test_downsampled_pr_curve_keeps_ends_and_sklearn_points() -> None:
    y, p = random_case(5, n=3000)
    precision, recall, _ = sk.precision_recall_curve(y, p)
    pr = metrics.pr_curve(y, p, max_points=40)
    assert len(recall) > 40 >= len(pr.x)
    assert (pr.x[0], pr.y[0]) == (recall[-1], precision[-1]) == (0.0, 1.0)
    assert (pr.x[-1], pr.y[-1]) == pytest.approx((recall[0], precision[0]), abs=1e-12)
    full = {(round(r, 12), round(q, 12)) for r, q in zip(recall, precision, strict=True)}
    assert all((round(r, 12), round(q, 12)) in full for r, q in zip(pr.x, pr.y, strict=True))


def test_calibration_agrees_with_sklearn_calibration_curve() -> None:
    y, p = random_case(6, decimals=1)  # values on bin edges test the edge rule too
    curve, _, _ = metrics.calibration(y, p, 10)
    prob_true, prob_pred = skcal.calibration_curve(y, p, n_bins=10)
    assert np.allclose(curve.y, prob_true) and np.allclose(curve.x, prob_pred)
    assert sum(curve.w) == len(y)


@pytest.mark.parametrize("decimals", [None, 2])
def test_weighted_resample_auc_and_ap_equal_sklearn_sample_weight(decimals: int | None) -> None:
    y, p = random_case(7, n=300, decimals=decimals)
    counts = np.random.default_rng(0).multinomial(300, np.full(300, 1 / 300), size=5)
    order, _, starts = metrics._ranked(p)
    pos, neg, tied = metrics._resampled_groups(
        counts[:, order].astype(float), y[order].astype(float), starts)
    assert tied == (decimals is not None)
    want_auc = [sk.roc_auc_score(y, p, sample_weight=c) for c in counts]
    assert np.allclose(metrics._auc(pos, neg, tied), want_auc, atol=1e-12)
    want_ap = [sk.average_precision_score(y, p, sample_weight=c) for c in counts]
    assert np.allclose(metrics._average_precision(pos, neg), want_ap, atol=1e-12)


def test_resampled_average_precision_is_nan_without_both_classes() -> None:
    pos, neg = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), np.array([[0.0] * 3, [1.0, 2.0, 0.0]])
    assert np.isnan(metrics._average_precision(pos, neg)).all()


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_contains_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (200, 5000):
        y, p = random_case(8, n=n)
        for statistic, estimate in (
            ("accuracy", sk.accuracy_score(y, p >= 0.5)),
            ("roc_auc", sk.roc_auc_score(y, p)),
            ("average_precision", sk.average_precision_score(y, p)),
        ):
            low, high = metrics.bootstrap_ci(y, p, statistic, seed=1, n_bootstrap=500)
            assert low < estimate < high
            widths.append((statistic, n, high - low))
    width = {(s, n): w for s, n, w in widths}
    assert width[("accuracy", 5000)] < width[("accuracy", 200)] / 3
    assert width[("roc_auc", 5000)] < width[("roc_auc", 200)] / 3
    assert width[("average_precision", 5000)] < width[("average_precision", 200)] / 3


def test_bootstrap_is_seeded_and_shared_with_evaluate() -> None:
    y, p = random_case(9, n=1000)
    first = metrics.bootstrap_ci(y, p, "roc_auc", seed=3, n_bootstrap=300)
    assert metrics.bootstrap_ci(y, p, "roc_auc", seed=3, n_bootstrap=300) == first
    assert metrics.bootstrap_ci(y, p, "roc_auc", seed=4, n_bootstrap=300) != first
    ev = metrics.evaluate(y, p, seed=3, n_bootstrap=300)
    assert (ev.scalars["roc_auc_ci_low"], ev.scalars["roc_auc_ci_high"]) == first
    acc = metrics.bootstrap_ci(y, p, "accuracy", seed=3, n_bootstrap=300)
    assert (ev.scalars["accuracy_ci_low"], ev.scalars["accuracy_ci_high"]) == acc
    ap = metrics.bootstrap_ci(y, p, "average_precision", seed=3, n_bootstrap=300)
    assert (ev.scalars["average_precision_ci_low"], ev.scalars["average_precision_ci_high"]) == ap


def test_bootstrap_agrees_with_a_naive_resampling_loop() -> None:
    y, p = random_case(10, n=400)
    rng = np.random.default_rng(0)
    naive_auc, naive_ap, naive_loss = [], [], []
    for _ in range(1000):  # resample reviews; AUC by the rank-sum formula (scipy's rankdata)
        i = rng.integers(0, len(y), len(y))
        yi, pi = y[i], p[i]
        n_pos = yi.sum()
        rank_sum = rankdata(pi)[yi == 1].sum()
        naive_auc.append((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (len(yi) - n_pos)))
        naive_ap.append(sk.average_precision_score(yi, pi))
        naive_loss.append(-np.mean(yi * np.log(pi) + (1 - yi) * np.log(1 - pi)))
    for statistic, naive in (("roc_auc", naive_auc), ("average_precision", naive_ap),
                             ("loss", naive_loss)):
        low, high = metrics.bootstrap_ci(y, p, statistic, seed=5, n_bootstrap=1000)
        want_low, want_high = np.percentile(naive, [2.5, 97.5])
        assert low == pytest.approx(want_low, abs=0.25 * (want_high - want_low))
        assert high == pytest.approx(want_high, abs=0.25 * (want_high - want_low))


def test_bootstrap_rejects_unknown_statistic() -> None:
    with pytest.raises(ValueError, match="statistic must be one of"):
        metrics.bootstrap_ci(LABELS, PROBS, "f1", seed=0, n_bootstrap=10)


# --- shapes, edge cases and validation -------------------------------------------------------


def test_evaluate_fills_the_evaluation_contract() -> None:
    y, p = random_case(11, n=3000)
    ev = metrics.evaluate(y, p, n_bootstrap=100, curve_points=30)
    assert isinstance(ev, Evaluation)
    assert set(ev.scalars) == {
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "loss",
        "roc_auc",
        "roc_auc_ci_low",
        "roc_auc_ci_high",
        "average_precision",
        "average_precision_ci_low",
        "average_precision_ci_high",
        "ece",
        "brier",
        "threshold",
    }
    assert set(ev.per_class) == {"negative", "positive"}
    assert set(ev.curves) == {"roc", "pr", "calibration"}
    assert all(len(c.x) == len(c.y) == len(c.w) for c in ev.curves.values())
    assert all(len(c.x) <= 30 for c in ev.curves.values())
    assert all(type(v) is float for v in ev.scalars.values())
    assert all(type(v) is int for row in ev.confusion for v in row)
    # Everything must survive strict JSON: no inf, no NaN, plain Python numbers.
    json.dumps({k: [c.x, c.y, c.w] for k, c in ev.curves.items()}, allow_nan=False)
    json.dumps(ev.scalars, allow_nan=False)


def test_single_review_and_single_class_do_not_crash() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one class present is expected, not worth a warning
        one = metrics.evaluate([1], [0.7], n_bootstrap=50)
        negatives = metrics.evaluate([0, 0, 0], [0.2, 0.6, 0.1], n_bootstrap=50)
    assert one.n == 1 and one.scalars["accuracy"] == 1.0
    assert (one.scalars["accuracy_ci_low"], one.scalars["accuracy_ci_high"]) == (1.0, 1.0)
    assert math.isnan(one.scalars["roc_auc"]) and math.isnan(one.scalars["roc_auc_ci_low"])
    for ev in (one, negatives):  # sklearn would say 1.0 or 0.0 (warning); undefined like AUC
        assert all(math.isnan(ev.scalars[f"average_precision{end}"])
                   for end in ("", "_ci_low", "_ci_high"))
    assert math.isnan(negatives.scalars["roc_auc"])
    assert negatives.curves["roc"].x == () and negatives.curves["pr"].x == ()
    assert negatives.per_class["positive"] == ClassMetrics(0.0, 0.0, 0.0, 0)
    assert math.isnan(metrics.roc_auc([1, 1], [0.3, 0.4]))
    assert math.isnan(metrics.average_precision([1, 1], [0.3, 0.4]))


@pytest.mark.parametrize(
    ("labels", "probs", "words"),
    [
        ([0, 1, 1], [0.2, 0.3], "equally long"),
        ([0, 2], [0.2, 0.3], "labels must be 0 or 1, found [2]"),
        (["neg", "pos"], [0.2, 0.3], "labels must be 0 or 1"),
        ([0, 1], [0.2, 1.5], "within [0, 1], found 1.5 at 1"),
        ([0, 1], [float("nan"), 0.3], "finite"),
        ([0, 1], [0.2, float("inf")], "finite"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(labels, probs, words) -> None:
    with pytest.raises(ValueError) as info:
        metrics.evaluate(labels, probs)
    assert words in str(info.value)
