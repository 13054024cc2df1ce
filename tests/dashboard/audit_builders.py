"""A small hand-built Audit whose every count is known, for the audit views and page tests."""
from __future__ import annotations

from storage.records import (
    Audit,
    BehaviourResult,
    DuplicateGroup,
    LabelIssue,
    ReviewRef,
    SliceResult,
    TruncationResult,
)
from trainer.metrics import wilson_interval

METHOD = "cleanlab find_label_issues (self_confidence), 5-fold out-of-fold TF-IDF baseline"
HOSTILE = "<script>alert(1)</script>"


def ref(review_id: str, label: int) -> ReviewRef:
    return ReviewRef(review_id.split("/")[0], review_id, label)


def behaviour(run_id: int, model: str, test: str, kind: str, n: int,
              failures: int) -> BehaviourResult:
    low, high = wilson_interval(failures, n)
    examples = tuple({"text": f"{HOSTILE} case {i}", "expected": "negative",
                      "prob_positive": 0.9 - 0.1 * i} for i in range(min(failures, 3)))
    return BehaviourResult(run_id, model, test, kind, n, failures, low, high, examples)


def sample_audit(run_ids: tuple[int, int] = (1, 3), labels: tuple[str, str] = ("base", "tuned"),
                 data_source: str = "synthetic-imdb") -> Audit:
    """Two runs (baseline-like and fine-tuned-like) audited on a tiny source.

    Duplicates: exact train (2, same label), exact cross (test/pos/1 + train/neg/5, conflicting),
    near test (3), exact test (2, conflicting). Leaked: test/pos/1, test/neg/2.
    """
    first, second = run_ids
    duplicates = (
        DuplicateGroup("exact", "train", (ref("train/pos/3", 1), ref("train/pos/4", 1)), False),
        DuplicateGroup("exact", "cross", (ref("test/pos/1", 1), ref("train/neg/5", 0)), True),
        DuplicateGroup("near", "test", (ref("test/neg/2", 0), ref("test/neg/4", 0),
                                        ref("test/neg/6", 0)), False),
        DuplicateGroup("exact", "test", (ref("test/pos/7", 1), ref("test/neg/8", 0)), True),
    )
    issues = (
        LabelIssue("train", "train/pos/9", 1, 0.04, 2, METHOD),
        LabelIssue("train", "train/neg/10", 0, 0.97, 1, METHOD),
        LabelIssue("test", "test/pos/1", 1, 0.1, 1, METHOD),
    )
    results = (
        behaviour(first, labels[0], "negation: not good → negative", "MFT", 100, 64),
        behaviour(first, labels[0], "typos and character noise", "INV", 80, 3),
        behaviour(second, labels[1], "negation: not good → negative", "MFT", 100, 12),
        behaviour(second, labels[1], "typos and character noise", "INV", 80, 0),
    )
    slices = tuple(
        SliceResult(run, "length", bucket, n, acc, acc - 0.05, acc + 0.05)
        for run in run_ids
        for bucket, n, acc in (("≤ 512 chars", 40, 0.9), ("513–1,024 chars", 35, 0.85),
                               ("> 1,024 chars", 25, 0.8))
    ) + (SliceResult(first, "rating", "1★", 20, 0.95, 0.8, 0.99),
         SliceResult(first, "rating", "10★", 20, 0.9, 0.7, 0.97))
    truncation = (TruncationResult(second, 128, 100, 40, 0.8, 0.9),)
    return Audit(data_source, duplicates, issues, results, slices, truncation,
                 ("test/pos/1", "test/neg/2"), config={"seed": 0}, duration_s=12.0)
