"""Accuracy of a stored run by review length (quantile buckets) and by star rating."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from storage.records import SliceResult
from trainer.metrics import wilson_interval

LENGTH_BUCKETS = 4  # quartiles of the characters of the test split's reviews
THRESHOLD = 0.5  # a review is called positive at this probability, as everywhere else


def length_edges(lengths: Sequence[int] | np.ndarray, buckets: int = LENGTH_BUCKETS) -> list[int]:
    """Inner edges of quantile buckets of review lengths (a bucket is `previous < length ≤ edge`).

    Args:
        lengths: the characters of each review that sets the buckets (the test split).
        buckets: how many quantile buckets.

    Returns:
        Increasing whole numbers of characters, at most buckets - 1 of them (fewer when
        lengths repeat); none for no lengths.
    """
    if len(lengths) == 0:
        return []
    inner = np.quantile(np.asarray(lengths, dtype=float), np.arange(1, buckets) / buckets)
    return sorted({int(np.floor(e)) for e in inner} - {int(np.max(lengths))})


def length_labels(edges: Sequence[int]) -> list[str]:
    """The readable name of each bucket: "≤ 690 chars", "691–1,240 chars", …, "> 2,300 chars"."""
    if not edges:
        return ["all lengths"]
    labels = [f"≤ {edges[0]:,} chars"]
    labels += [f"{lo + 1:,}–{hi:,} chars" for lo, hi in zip(edges, edges[1:], strict=False)]
    return labels + [f"> {edges[-1]:,} chars"]


def slice_results(run_id: int, predictions: pd.DataFrame, lengths: Mapping[str, int], *,
                  edges: Sequence[int], ratings: Mapping[str, int] | None = None
                  ) -> list[SliceResult]:
    """One run's accuracy in each length bucket and, where ratings are known, each star rating.

    Args:
        run_id: the stored run.
        predictions: its predictions (review_id, label, prob), as Store.predictions gives them.
        lengths: characters of each review by id (reviews not in it are left out).
        edges: the length buckets' inner edges (`length_edges`).
        ratings: each review's stars by id, or None when the source has none.

    Returns:
        Length buckets in increasing order, then ratings in increasing order; a bucket that
        holds no scored review is left out.
    """
    scored = predictions.dropna(subset=["prob"])
    scored = scored[scored["review_id"].isin(lengths.keys())]
    right = ((scored["prob"].to_numpy() >= THRESHOLD) == scored["label"].to_numpy())
    chars = scored["review_id"].map(lengths).to_numpy()
    bucket = np.searchsorted(np.asarray(edges, dtype=float), chars, side="left")
    results = [_result(run_id, "length", name, right[bucket == b])
               for b, name in enumerate(length_labels(edges))]
    if ratings:
        stars = scored["review_id"].map(ratings)
        known = stars.notna().to_numpy()
        for star in sorted(set(stars[known].astype(int))):
            results.append(_result(run_id, "rating", f"{star}★",
                                   right[known & (stars.to_numpy() == star)]))
    return [r for r in results if r.n]


def _result(run_id: int, by: str, bucket: str, right: np.ndarray) -> SliceResult:
    n, correct = len(right), int(np.sum(right))
    low, high = wilson_interval(correct, n)
    return SliceResult(run_id, by, bucket, n, correct / n if n else float("nan"), low, high)
