"""Contract suite for stored audits, run on SQLite file, SQLite memory and PostgreSQL."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from storage import StorageError
from storage.records import (
    Audit,
    BehaviourResult,
    DuplicateGroup,
    LabelIssue,
    ReviewRef,
    SliceResult,
    TruncationResult,
)
from storage.store import Store
from tests.storage import samples


def sample_audit(source: str = "/data/imdb", fingerprint: str = "fp-1") -> Audit:
    """An audit with every kind of finding, NaNs where a figure can be undefined."""
    return Audit(
        data_source=source,
        duplicates=(
            DuplicateGroup("exact", "cross", (ReviewRef("train", "train/pos/1", 1),
                                              ReviewRef("test", "test/neg/7", 0)), True),
            DuplicateGroup("near", "train", (ReviewRef("train", "train/neg/2", 0),
                                             ReviewRef("train", "train/neg/3", 0)), False),
        ),
        label_issues=(
            LabelIssue("train", "train/pos/9", 1, 0.03, 1, "cleanlab, 5-fold"),
            LabelIssue("test", "test/neg/4", 0, 0.97, 1, "cleanlab, stored baseline"),
        ),
        behaviour=(
            BehaviourResult(3, "TF-IDF baseline: tfidf-logreg (run 3)", "negation", "MFT", 20,
                            5, 0.11, 0.47, ({"text": "not good", "expected": "negative",
                                             "prob_positive": np.float64(0.8)},)),
            BehaviourResult(None, "some model", "typos", "INV", 0, 0, math.nan, math.nan),
        ),
        slices=(SliceResult(3, "length", "≤ 512 chars", 10, 0.9, 0.6, 0.98),
                SliceResult(3, "rating", "1★", 4, 1.0, 0.51, 1.0)),
        truncation=(TruncationResult(5, 128, 10, 0, math.nan, 0.7),),
        leaked_test_ids=("test/neg/7",),
        config={"fingerprint": fingerprint, "near_threshold": 0.8, "seconds": {"all": 1.5},
                "not_a_number": math.nan, "array": np.array([1, 2])},
        duration_s=1.5,
    )


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_audit_round_trips_every_finding(store: Store) -> None:
    audit = sample_audit()
    audit_id = store.save_audit(audit)
    got = store.latest_audit()

    assert got is not None and got.id == audit_id
    assert got.created_at is not None and got.created_at.utcoffset() == timedelta(0)
    assert got.data_source == audit.data_source
    assert got.duplicates == audit.duplicates
    assert got.label_issues == audit.label_issues
    assert got.slices == audit.slices
    assert got.leaked_test_ids == ("test/neg/7",)
    assert got.duration_s == 1.5
    assert got.config == {"fingerprint": "fp-1", "near_threshold": 0.8, "seconds": {"all": 1.5},
                          "not_a_number": None, "array": [1, 2]}
    first, empty = got.behaviour
    assert first == replace(audit.behaviour[0], examples=(
        {"text": "not good", "expected": "negative", "prob_positive": 0.8},))
    assert empty.run_id is None and empty.n == 0
    assert math.isnan(empty.ci_low) and math.isnan(empty.ci_high)
    assert math.isnan(empty.failure_rate)
    (truncation,) = got.truncation
    assert math.isnan(truncation.accuracy_truncated) and truncation.accuracy_untruncated == 0.7
    assert (truncation.run_id, truncation.max_length, truncation.n, truncation.truncated) == (
        5, 128, 10, 0)


def test_latest_audit_is_the_newest_of_its_data_source(store: Store) -> None:
    assert store.latest_audit() is None
    first = store.save_audit(sample_audit("/data/a", "fp-a"))
    second = store.save_audit(sample_audit("/data/b", "fp-b"))
    third = store.save_audit(sample_audit("/data/a", "fp-a2"))

    assert store.latest_audit().id == third
    assert store.latest_audit("/data/a").id == third
    assert store.latest_audit("/data/b").id == second
    assert store.latest_audit("/data/none") is None
    assert first < second < third


def test_find_audit_by_fingerprint(store: Store) -> None:
    kept = store.save_audit(sample_audit(fingerprint="fp-1"))
    store.save_audit(sample_audit(fingerprint="fp-2"))

    assert store.find_audit("fp-1").id == kept
    assert store.find_audit("fp-unknown") is None


def test_empty_audit_round_trips(store: Store) -> None:
    empty = Audit("/data/tiny", (), (), (), (), (), ())
    store.save_audit(empty)
    got = store.latest_audit("/data/tiny")

    assert (got.duplicates, got.label_issues, got.behaviour, got.slices, got.truncation,
            got.leaked_test_ids, got.config) == ((), (), (), (), (), (), {})


def test_many_findings_are_stored_in_chunks(store: Store) -> None:
    issues = tuple(LabelIssue("train", f"train/pos/{i}", 1, 0.01, i + 1, "m")
                   for i in range(5_003))
    store.save_audit(replace(sample_audit(), label_issues=issues))

    got = store.latest_audit()
    assert len(got.label_issues) == 5_003
    assert [i.rank for i in got.label_issues[-3:]] == [5_001, 5_002, 5_003]


def test_an_unknown_duplicate_kind_is_refused_and_nothing_is_stored(store: Store) -> None:
    bad = DuplicateGroup("fuzzy", "train", (), False)
    with pytest.raises(StorageError, match="kind in"):
        store.save_audit(replace(sample_audit(), duplicates=(bad,)))
    assert store.latest_audit() is None


def test_audits_outlive_the_runs_they_cover(store: Store) -> None:
    run_id = store.save_run(samples.spec(), samples.evaluation())
    audit = sample_audit()
    store.save_audit(replace(audit, slices=(replace(audit.slices[0], run_id=run_id),)))
    store.delete_run(run_id)

    assert store.latest_audit().slices[0].run_id == run_id
