"""Accuracy by length bucket and star rating on hand-built predictions, with Wilson intervals."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from trainer.audit.slices import length_edges, length_labels, slice_results
from trainer.metrics import wilson_interval


def test_length_edges_are_the_floored_inner_quartiles() -> None:
    assert length_edges([1, 2, 3, 4, 5, 6, 7, 8]) == [2, 4, 6]  # 2.75, 4.5, 6.25
    assert length_edges([5, 5, 5, 5]) == []  # one length: one bucket
    assert length_edges([]) == []
    assert length_labels([690, 1240]) == ["≤ 690 chars", "691–1,240 chars", "> 1,240 chars"]
    assert length_labels([]) == ["all lengths"]


def test_slices_count_each_bucket_and_rating_with_its_interval() -> None:
    preds = pd.DataFrame({
        "review_id": ["a", "b", "c", "d", "e", "f", "g"],
        "label": [1, 0, 1, 0, 1, 0, 1],
        "prob": [0.9, 0.6, 0.8, 0.1, 0.3, 0.2, math.nan],  # b and e wrong, g unscored
    })
    lengths = {"a": 5, "b": 10, "c": 11, "d": 20, "e": 21, "f": 400, "g": 3}
    ratings = {"a": 10, "b": 4, "c": 10, "d": 1, "e": 7, "f": 1}
    out = slice_results(9, preds, lengths, edges=[10, 20], ratings=ratings)

    assert [(r.by, r.bucket, r.n, r.accuracy) for r in out] == [
        ("length", "≤ 10 chars", 2, 0.5),
        ("length", "11–20 chars", 2, 1.0),
        ("length", "> 20 chars", 2, 0.5),
        ("rating", "1★", 2, 1.0),
        ("rating", "4★", 1, 0.0),
        ("rating", "7★", 1, 0.0),
        ("rating", "10★", 2, 1.0),
    ]
    assert all(r.run_id == 9 for r in out)
    assert (out[0].ci_low, out[0].ci_high) == pytest.approx(wilson_interval(1, 2))
    assert (out[4].ci_low, out[4].ci_high) == pytest.approx(wilson_interval(0, 1))


def test_reviews_unknown_to_the_data_and_empty_buckets_are_left_out() -> None:
    preds = pd.DataFrame({"review_id": ["a", "zz"], "label": [1, 1], "prob": [0.9, 0.9]})
    out = slice_results(1, preds, {"a": 50}, edges=[10, 20], ratings=None)
    assert [(r.bucket, r.n) for r in out] == [("> 20 chars", 1)]
    empty = slice_results(1, preds.iloc[:0], {"a": 50}, edges=[10], ratings={"a": 3})
    assert empty == []
