"""Binary classification metrics, seeded bootstrap and Wilson intervals, curves, McNemar's test."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from storage.records import CLASS_NAMES, ClassMetrics, Curve, Evaluation

EPS = 1e-7  # log loss clips probabilities to [EPS, 1 - EPS]
STATISTICS = ("accuracy", "roc_auc", "average_precision", "loss", "brier")
_RANKED = ("roc_auc", "average_precision")  # statistics of the ranking, computed per tie group
_CHUNK_CELLS = 200_000  # resample counts per chunk (k x n): small arrays stay in CPU cache


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test; b: A right and B wrong, c: A wrong and B right."""

    b: int
    c: int
    p_value: float


def evaluate(
    labels: ArrayLike,
    probs: ArrayLike,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    curve_points: int = 200,
    calibration_bins: int = 10,
    threshold: float = 0.5,
) -> Evaluation:
    """Everything measured for one model on one split.

    A review is predicted positive when its probability is at least `threshold`.

    Args:
        labels: true labels, 0 negative and 1 positive.
        probs: predicted probabilities of the positive class.
        seed: seeds the bootstrap, so the same inputs give the same intervals.
        n_bootstrap: resamples for the 95% percentile intervals; 0 leaves them NaN.
        curve_points: the most points kept per ROC/PR curve.
        calibration_bins: equal-width bins of the reliability curve.
        threshold: the decision threshold for accuracy, per-class metrics and confusion.

    Returns:
        The Evaluation; roc_auc, average_precision and their intervals are NaN when one class
        is absent.

    Raises:
        ValueError: the inputs are not equally long 0/1 labels and finite probabilities in [0, 1].
    """
    y, p = _check(labels, probs)
    with_ci = ("accuracy", "roc_auc", "average_precision")
    ci = dict.fromkeys(with_ci, (float("nan"), float("nan")))
    if n_bootstrap > 0:
        boot = _bootstrap(y, p, with_ci, seed, n_bootstrap, threshold)
        ci = {s: _interval(boot[s], 0.95) for s in with_ci}
    reliability, ece, brier = calibration(y, p, calibration_bins)
    confusion = confusion_at(y, p, threshold)
    scalars = {
        "accuracy": (confusion[0][0] + confusion[1][1]) / len(y),
        "accuracy_ci_low": ci["accuracy"][0],
        "accuracy_ci_high": ci["accuracy"][1],
        "loss": log_loss(y, p),
        "roc_auc": roc_auc(y, p),
        "roc_auc_ci_low": ci["roc_auc"][0],
        "roc_auc_ci_high": ci["roc_auc"][1],
        "average_precision": average_precision(y, p),
        "average_precision_ci_low": ci["average_precision"][0],
        "average_precision_ci_high": ci["average_precision"][1],
        "ece": ece,
        "brier": brier,
        "threshold": float(threshold),
    }
    curves = {
        "roc": roc_curve(y, p, max_points=curve_points),
        "pr": pr_curve(y, p, max_points=curve_points),
        "calibration": reliability,
    }
    per_class = per_class_at(y, p, threshold)
    return Evaluation(len(y), scalars, per_class, confusion, curves)


def confusion_at(
    labels: ArrayLike, probs: ArrayLike, threshold: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The confusion matrix at a threshold (positive when prob >= threshold).

    Returns:
        ((tn, fp), (fn, tp)): rows are true labels, columns predictions.

    Raises:
        ValueError: bad labels or probabilities (see `evaluate`).
    """
    y, p = _check(labels, probs)
    cells = np.bincount(2 * y + (p >= threshold), minlength=4)
    return (int(cells[0]), int(cells[1])), (int(cells[2]), int(cells[3]))


def per_class_at(labels: ArrayLike, probs: ArrayLike, threshold: float) -> dict[str, ClassMetrics]:
    """Precision, recall, F1 and support of each class at a threshold (0 where undefined).

    Returns:
        {"negative": ClassMetrics, "positive": ClassMetrics}, like scikit-learn's
        precision_recall_fscore_support with zero_division=0.

    Raises:
        ValueError: bad labels or probabilities (see `evaluate`).
    """
    (tn, fp), (fn, tp) = confusion_at(labels, probs, threshold)
    # For the negative class the roles swap: its "true positives" are the true negatives.
    counts = {CLASS_NAMES[0]: (tn, fn, fp), CLASS_NAMES[1]: (tp, fp, fn)}
    return {name: _class_metrics(*c) for name, c in counts.items()}


def _class_metrics(hit: int, false_alarm: int, miss: int) -> ClassMetrics:
    def ratio(num: int, den: int) -> float:
        return num / den if den else 0.0

    return ClassMetrics(
        precision=ratio(hit, hit + false_alarm),
        recall=ratio(hit, hit + miss),
        f1=ratio(2 * hit, 2 * hit + false_alarm + miss),
        support=hit + miss,
    )


def bootstrap_ci(
    labels: ArrayLike,
    probs: ArrayLike,
    statistic: str,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    threshold: float = 0.5,
) -> tuple[float, float]:
    """A seeded percentile bootstrap interval of one statistic.

    Resamples are drawn as counts per review, so each statistic is a weighted sum (ROC AUC and
    average precision cumulative sums over the ranked scores) instead of a metric call per
    resample.

    Args:
        labels: true labels, 0 or 1.
        probs: predicted probabilities of the positive class.
        statistic: one of STATISTICS.
        seed: the same seed gives the same resamples (evaluate uses them too).
        n_bootstrap: how many resamples.
        level: the interval's coverage, between 0 and 1.
        threshold: the decision threshold for accuracy.

    Returns:
        (low, high); NaN for ROC AUC and average precision when no resample holds both classes.

    Raises:
        ValueError: an unknown statistic, a bad level or count, or bad inputs.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if not 0 < level < 1 or n_bootstrap < 1:
        raise ValueError(f"need 0 < level < 1 and n_bootstrap >= 1, got {level}, {n_bootstrap}")
    y, p = _check(labels, probs)
    return _interval(
        _bootstrap(y, p, (statistic,), seed, n_bootstrap, threshold)[statistic], level
    )


def _bootstrap(
    y: np.ndarray,
    p: np.ndarray,
    statistics: tuple[str, ...],
    seed: int,
    n_bootstrap: int,
    threshold: float,
) -> dict[str, np.ndarray]:
    """Each statistic on `n_bootstrap` resamples, drawn as per-review counts in rank order."""
    n = len(y)
    order, _, starts = _ranked(p)
    ys, ps = y[order].astype(float), p[order]
    per_review = {
        "accuracy": ((ps >= threshold) == ys).astype(float),
        "loss": _review_loss(ys, ps),
        "brier": (ps - ys) ** 2,
    }
    rng = np.random.default_rng(seed)
    out = {s: np.empty(n_bootstrap) for s in statistics}
    chunk = max(1, _CHUNK_CELLS // n)
    for lo in range(0, n_bootstrap, chunk):
        k = min(chunk, n_bootstrap - lo)
        draws = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=k * n).reshape(k, n).astype(float)
        if any(s in _RANKED for s in statistics):
            pos, neg, tied = _resampled_groups(counts, ys, starts)
        for s in statistics:
            if s == "roc_auc":
                out[s][lo : lo + k] = _auc(pos, neg, tied)
            elif s == "average_precision":
                out[s][lo : lo + k] = _average_precision(pos, neg)
            else:
                out[s][lo : lo + k] = counts @ per_review[s] / n
    return out


def _resampled_groups(
    counts: np.ndarray, ys: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Resampled positives and negatives per tie group (rows: resamples), and if any tie."""
    pos = counts * ys
    neg = counts - pos
    tied = len(starts) < counts.shape[1]
    if tied:  # tied scores share one rank group
        pos, neg = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
    return pos, neg, tied


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def roc_auc(labels: ArrayLike, probs: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half), as scikit-learn's roc_auc_score.

    Returns:
        The AUC, or NaN when one class is absent.

    Raises:
        ValueError: bad labels or probabilities (see `evaluate`).
    """
    y, p = _check(labels, probs)
    pos, neg = _group_counts(y, p)[1:]
    return float(_auc(pos, neg))


def _auc(pos: np.ndarray, neg: np.ndarray, tied: bool = True) -> np.ndarray:
    """AUC from positives and negatives per tie group, groups in descending score order."""
    # Each positive beats the negatives scored below it and half of those tied with it:
    # sum(pos * (total_neg - cum_neg + neg / 2)), written as row dot products (one pass each).
    cum_neg = np.cumsum(neg, axis=-1)
    total_neg, total_pos = cum_neg[..., -1], pos.sum(axis=-1)
    wins = total_neg * total_pos - np.einsum("...i,...i->...", pos, cum_neg)
    if tied:
        wins = wins + 0.5 * np.einsum("...i,...i->...", pos, neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        return wins / (total_pos * total_neg)


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision from positives and negatives per tie group, in descending score order:
    sum(Δrecall × precision) as scikit-learn's average_precision_score; NaN without both classes.
    """
    tp = np.cumsum(pos, axis=-1, dtype=float)
    seen = np.cumsum(neg, axis=-1, dtype=float)  # false positives, then reviews so far
    both = (seen[..., -1] > 0) & (tp[..., -1] > 0)
    seen += tp
    # seen is 0 only before the first reviewed group, where tp is 0 too: precision 0, not 0 / 0.
    np.maximum(seen, np.finfo(float).tiny, out=seen)
    precision = np.divide(tp, seen, out=seen)
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.einsum("...i,...i->...", pos, precision) / tp[..., -1]
    return np.where(both, ap, np.nan)


def average_precision(labels: ArrayLike, probs: ArrayLike) -> float:
    """Average precision of the positive class (label 1): scikit-learn's average_precision_score.

    Returns:
        The average precision, or NaN when one class is absent (as for `roc_auc`).

    Raises:
        ValueError: bad labels or probabilities (see `evaluate`).
    """
    y, p = _check(labels, probs)
    if y.min() == y.max():  # sklearn would warn and answer 0 or 1; like ROC AUC it is undefined
        return float("nan")
    from sklearn.metrics import average_precision_score  # slow to import; only this needs it

    return float(average_precision_score(y, p))


def log_loss(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean negative log-likelihood, probabilities clipped to [EPS, 1 - EPS].

    Raises:
        ValueError: bad labels or probabilities (see `evaluate`).
    """
    y, p = _check(labels, probs)
    return float(_review_loss(y, p).mean())


def _review_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return -np.where(y == 1, np.log(p), np.log1p(-p))


def calibration(labels: ArrayLike, probs: ArrayLike, bins: int) -> tuple[Curve, float, float]:
    """Reliability curve over equal-width bins (scikit-learn's calibration_curve binning),
    expected calibration error and Brier score.

    Args:
        labels: true labels, 0 or 1.
        probs: predicted probabilities of the positive class.
        bins: how many equal-width bins cover [0, 1].

    Returns:
        (curve with x mean predicted probability, y fraction positive, w count, empty bins
        dropped; ECE, the count-weighted mean of |y - x|; Brier score).

    Raises:
        ValueError: bins below 1, or bad labels or probabilities.
    """
    if bins < 1:
        raise ValueError(f"calibration needs at least 1 bin, got {bins}")
    y, p = _check(labels, probs)
    ids = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p)
    count = np.bincount(ids, minlength=bins)
    full = count > 0
    mean_p = np.bincount(ids, weights=p, minlength=bins)[full] / count[full]
    positive = np.bincount(ids, weights=y, minlength=bins)[full] / count[full]
    ece = float(np.sum(count[full] * np.abs(positive - mean_p)) / len(y))
    return _curve(mean_p, positive, count[full]), ece, float(np.mean((p - y) ** 2))


def roc_curve(labels: ArrayLike, probs: ArrayLike, *, max_points: int = 200) -> Curve:
    """ROC points from (0, 0) to (1, 1): x false positive rate, y true positive rate,
    w threshold (positive when prob >= w; the first point's w is 1.0, not infinity).

    Collinear points are dropped as scikit-learn does, then the curve is downsampled.

    Returns:
        The curve; empty when one class is absent.

    Raises:
        ValueError: max_points below 2, or bad labels or probabilities.
    """
    scores, pos, neg = _group_counts(*_check(labels, probs))
    tps, fps = np.cumsum(pos), np.cumsum(neg)
    if tps[-1] == 0 or fps[-1] == 0:
        return Curve((), (), ())
    if len(tps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, scores = tps[keep], fps[keep], scores[keep]
    fpr, tpr = np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
    return _downsample(fpr, tpr, np.r_[1.0, scores], max_points)


def pr_curve(labels: ArrayLike, probs: ArrayLike, *, max_points: int = 200) -> Curve:
    """Precision-recall points as scikit-learn's precision_recall_curve, in threshold order:
    x recall, y precision, w threshold (the first point, recall 0 and precision 1, has w 1.0;
    the last is the lowest score, where every review is positive).

    Returns:
        The curve; empty when there is no positive review.

    Raises:
        ValueError: max_points below 2, or bad labels or probabilities.
    """
    scores, pos, neg = _group_counts(*_check(labels, probs))
    tps, fps = np.cumsum(pos), np.cumsum(neg)
    if tps[-1] == 0:
        return Curve((), (), ())
    recall, precision = np.r_[0.0, tps / tps[-1]], np.r_[1.0, tps / (tps + fps)]
    return _downsample(recall, precision, np.r_[1.0, scores], max_points)


def _downsample(x: np.ndarray, y: np.ndarray, w: np.ndarray, max_points: int) -> Curve:
    """At most `max_points` points spread evenly along the curve's length, ends kept."""
    if max_points < 2:
        raise ValueError(f"a curve needs at least 2 points, got max_points={max_points}")
    if len(x) > max_points:
        arc = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
        if arc[-1] > 0:
            picks = np.searchsorted(arc, np.linspace(0.0, arc[-1], max_points - 1))
        else:
            picks = np.linspace(0, len(x) - 1, max_points - 1).round().astype(int)
        idx = np.unique(np.r_[picks.clip(0, len(x) - 1), len(x) - 1])
        x, y, w = x[idx], y[idx], w[idx]
    return _curve(x, y, w)


def _curve(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Curve:
    return Curve(tuple(map(float, x)), tuple(map(float, y)), tuple(map(float, w)))


def mcnemar(
    labels: ArrayLike,
    probs_a: ArrayLike,
    probs_b: ArrayLike,
    threshold: float = 0.5,
) -> McNemar:
    """McNemar's exact test of two models scored on the same reviews.

    Returns:
        b (A right, B wrong), c (A wrong, B right) and the two-sided exact binomial p-value
        (1.0 when the models never disagree on correctness).

    Raises:
        ValueError: bad labels or probabilities, or the two models scored different counts.
    """
    y, pa = _check(labels, probs_a)
    _, pb = _check(labels, probs_b)
    right_a, right_b = (pa >= threshold) == y, (pb >= threshold) == y
    b, c = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    if b + c == 0:
        return McNemar(b, c, 1.0)
    from scipy.stats import binomtest  # scipy.stats is slow to import; only this needs it

    return McNemar(b, c, float(binomtest(b, b + c, 0.5).pvalue))


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval of a proportion (95% by default): sound near 0 and 1 and small n.

    Args:
        successes: how many of the n trials counted (failures of a test, right answers).
        n: trials.
        z: the normal quantile of the level (1.96 for 95%).

    Returns:
        (low, high) within [0, 1]; (NaN, NaN) when n is 0.

    Raises:
        ValueError: successes is not between 0 and n.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie between 0 and n={n}, got {successes}")
    if n == 0:
        return float("nan"), float("nan")
    share, z2 = successes / n, z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _ranked(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order by descending score, the distinct scores, and where each tie group starts."""
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    return order, sorted_p[starts], starts


def _group_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) with the positives and negatives holding each."""
    order, scores, starts = _ranked(p)
    pos = np.add.reduceat(y[order], starts)
    size = np.diff(np.r_[starts, len(y)])
    return scores, pos, size - pos


def _check(labels: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, ...]:
    """Labels as int64 0/1 and probabilities as float64 in [0, 1], or a ValueError."""
    y, p = np.asarray(labels), np.asarray(probs)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(
            f"labels and probs must be 1-D and equally long, got shapes {y.shape} and {p.shape}"
        )
    if len(y) == 0:
        raise ValueError("there is nothing to evaluate: labels and probs are empty")
    bad = ~np.isin(y, (0, 1)) if y.dtype.kind in "biuf" else np.ones(len(y), dtype=bool)
    if bad.any():
        raise ValueError(f"labels must be 0 or 1, found {y[bad][:5].tolist()}")
    if p.dtype.kind not in "biuf":
        raise ValueError(f"probs must be numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"probs must be finite and within [0, 1], found {p[first]} at {first}")
    return y.astype(np.int64), p
