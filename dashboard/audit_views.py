"""Pure data preparation for the "Data & models" page: audits and predictions in, frames out."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.views import format_ci, format_p, safe_csv
from storage.records import CLASS_NAMES, STAGES, Audit, Run, Stage
from trainer.comparison import ReviewDiff
from trainer.report import deduplicated_accuracy

SCOPES = ("train", "test", "cross")  # a duplicate group's members: in one split, or in both
DUPLICATE_KINDS = ("exact", "near")
MAX_GROUPS = 500  # rows of the expandable duplicate table
MAX_DIFF_ROWS = 200  # the review diff shows the largest gaps first (1,000 with their texts
# made the browser take 0.7-1.6 s to load the page)


def _labels(by_id: Mapping[int, str], run_id: int) -> str:
    return by_id.get(run_id, f"run {run_id}")


# ---------------------------------------------------------------- duplicates and leakage


def duplicate_counts(audit: Audit) -> pd.DataFrame:
    """Duplicate groups per kind and scope, with the reviews they hold and the conflicting ones.

    Args:
        audit: the audit.

    Returns:
        One row per kind (exact, near) and scope (train, test, cross), zeros included:
        kind, scope, groups, reviews, conflicting (groups whose members' labels differ).
    """
    rows = []
    for kind in DUPLICATE_KINDS:
        for scope in SCOPES:
            groups = [g for g in audit.duplicates if g.kind == kind and g.scope == scope]
            rows.append({"kind": kind, "scope": scope, "groups": len(groups),
                         "reviews": sum(len(g.members) for g in groups),
                         "conflicting": sum(g.conflicting for g in groups)})
    return pd.DataFrame(rows)


def _members_summary(group_members: Iterable) -> str:
    """E.g. "train: 2 negative; test: 1 positive"."""
    counts = Counter((m.split, CLASS_NAMES[m.label] if m.label in (0, 1) else str(m.label))
                     for m in group_members)
    parts = []
    for split in ("train", "test"):
        found = [f"{n} {label}" for (s, label), n in sorted(counts.items()) if s == split]
        if found:
            parts.append(f"{split}: {', '.join(found)}")
    return "; ".join(parts)


def duplicate_groups(audit: Audit, *, kind: str | None = None, scope: str | None = None,
                     conflicting_only: bool = False, limit: int = MAX_GROUPS) -> pd.DataFrame:
    """The duplicate groups as rows, conflicting ones first, then the largest.

    Args:
        audit: the audit.
        kind, scope: keep only groups of this kind / scope (None: all).
        conflicting_only: keep only groups whose labels differ.
        limit: at most this many rows.

    Returns:
        group (its position in the audit, from 1), kind, scope, size, conflicting, labels
        (members per split and label), reviews (the review ids, comma-separated).
    """
    rows = []
    for number, group in enumerate(audit.duplicates, 1):
        if (kind and group.kind != kind) or (scope and group.scope != scope) or \
                (conflicting_only and not group.conflicting):
            continue
        rows.append({"group": number, "kind": group.kind, "scope": group.scope,
                     "size": len(group.members), "conflicting": group.conflicting,
                     "labels": _members_summary(group.members),
                     "reviews": ", ".join(m.review_id for m in group.members)})
    frame = pd.DataFrame(rows, columns=["group", "kind", "scope", "size", "conflicting",
                                        "labels", "reviews"])
    return frame.sort_values(["conflicting", "size", "group"], ascending=[False, False, True],
                             kind="stable").head(limit).reset_index(drop=True)


def dedup_accuracy(runs: Sequence[Run], preds: Mapping[int, pd.DataFrame],
                   leaked_test_ids: Iterable[str], threshold: float = 0.5) -> pd.DataFrame:
    """Each test-split run's accuracy on all its reviews and on those not also in train.

    Args:
        runs: stored runs; those not scored on the test split are left out.
        preds: run id -> its predictions (review_id, label, prob); runs without are left out.
        leaked_test_ids: test review ids whose text also appears in the train split.
        threshold: a review is called positive when prob >= threshold.

    Returns:
        One row per run: model, n_full, accuracy_full, ci_full, n_dedup, accuracy_dedup,
        ci_dedup (95% Wilson intervals), left_out (leaked reviews this run scored).
    """
    leaked = set(leaked_test_ids)
    rows = []
    for run in runs:
        frame = preds.get(run.id)
        if run.spec.split != "test" or frame is None or frame["prob"].notna().sum() == 0:
            continue
        full, dedup = (deduplicated_accuracy(frame, ids, threshold) for ids in (set(), leaked))
        row: dict[str, Any] = {"model": run.label}
        for name, found in (("full", full), ("dedup", dedup)):
            row |= {f"n_{name}": found["n"],
                    f"accuracy_{name}": math.nan if found["accuracy"] is None
                    else found["accuracy"], f"ci_{name}": format_ci(*found["accuracy_ci95"])}
        rows.append(row | {"left_out": dedup["left_out"]})
    return pd.DataFrame(rows, columns=["model", "n_full", "accuracy_full", "ci_full", "n_dedup",
                                       "accuracy_dedup", "ci_dedup", "left_out"])


# ---------------------------------------------------------------- label issues


def label_issue_summary(audit: Audit) -> pd.DataFrame:
    """Label-issue candidates per split and method: split, method, candidates."""
    counts = Counter((i.split, i.method) for i in audit.label_issues)
    return pd.DataFrame([{"split": split, "method": method, "candidates": n}
                         for (split, method), n in sorted(counts.items())],
                        columns=["split", "method", "candidates"])


def label_issue_table(audit: Audit, split: str | None = None,
                      texts: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The label-issue candidates, most suspicious first within each split.

    Args:
        audit: the audit.
        split: keep only this split's candidates (None: all).
        texts: review id -> text, where known (e.g. from a test run's stored predictions).

    Returns:
        split, rank, review_id, given_label ("negative" | "positive"), prob_positive,
        prob_given (the model's probability of the given label), method, text (None when
        unknown).
    """
    texts = texts or {}
    rows = [{"split": i.split, "rank": i.rank, "review_id": i.review_id,
             "given_label": CLASS_NAMES[i.given_label], "prob_positive": i.prob_positive,
             "prob_given": i.prob_positive if i.given_label == 1 else 1.0 - i.prob_positive,
             "method": i.method, "text": texts.get(i.review_id)}
            for i in audit.label_issues if split is None or i.split == split]
    frame = pd.DataFrame(rows, columns=["split", "rank", "review_id", "given_label",
                                        "prob_positive", "prob_given", "method", "text"])
    return frame.sort_values(["split", "rank"], kind="stable").reset_index(drop=True)


def label_issues_csv(frame: pd.DataFrame) -> bytes:
    """The candidate list as UTF-8 CSV for download (labels are never changed in place); a
    review that a spreadsheet would run as a formula is quoted (`views.safe_csv`)."""
    return safe_csv(frame).encode("utf-8")


# ---------------------------------------------------------------- truncation and slices


def truncation_frame(audit: Audit, labels: Mapping[int, str]) -> pd.DataFrame:
    """Per transformer run: how many test reviews its max length cut, and accuracy either side.

    Args:
        audit: the audit.
        labels: run id -> readable name (`Run.label`).

    Returns:
        model, max_length, n, truncated, share_truncated, accuracy_truncated,
        accuracy_untruncated (NaN where that side is empty).
    """
    rows = [{"model": _labels(labels, t.run_id), "max_length": t.max_length, "n": t.n,
             "truncated": t.truncated, "share_truncated": t.truncated / t.n if t.n else math.nan,
             "accuracy_truncated": t.accuracy_truncated,
             "accuracy_untruncated": t.accuracy_untruncated} for t in audit.truncation]
    return pd.DataFrame(rows, columns=["model", "max_length", "n", "truncated",
                                       "share_truncated", "accuracy_truncated",
                                       "accuracy_untruncated"])


def slice_kinds(audit: Audit) -> list[str]:
    """The slicings the audit holds ("length", then "rating" when the source has ratings)."""
    found = {s.by for s in audit.slices}
    return [by for by in ("length", "rating") if by in found] + sorted(found - {"length",
                                                                               "rating"})


def slices_frame(audit: Audit, by: str, labels: Mapping[int, str]) -> pd.DataFrame:
    """Accuracy per slice per run, buckets in the audit's order.

    Args:
        audit: the audit.
        by: "length" or "rating".
        labels: run id -> readable name.

    Returns:
        model, bucket, order (the bucket's position), n, accuracy, ci_low, ci_high, interval.
    """
    order: dict[str, int] = {}
    rows = []
    for s in audit.slices:
        if s.by != by:
            continue
        rows.append({"model": _labels(labels, s.run_id), "bucket": s.bucket,
                     "order": order.setdefault(s.bucket, len(order)), "n": s.n,
                     "accuracy": s.accuracy, "ci_low": s.ci_low, "ci_high": s.ci_high,
                     "interval": format_ci(s.ci_low, s.ci_high)})
    return pd.DataFrame(rows, columns=["model", "bucket", "order", "n", "accuracy", "ci_low",
                                       "ci_high", "interval"])


# ---------------------------------------------------------------- behavioural tests


def behaviour_frame(audit: Audit) -> pd.DataFrame:
    """Failure rate per behavioural test per model, tests in the audit's order.

    Returns:
        test, kind, model, run_id, n, failures, failure_rate, ci_low, ci_high, interval.
    """
    rows = [{"test": b.test, "kind": b.kind, "model": b.model, "run_id": b.run_id, "n": b.n,
             "failures": b.failures, "failure_rate": b.failure_rate, "ci_low": b.ci_low,
             "ci_high": b.ci_high, "interval": format_ci(b.ci_low, b.ci_high)}
            for b in audit.behaviour]
    return pd.DataFrame(rows, columns=["test", "kind", "model", "run_id", "n", "failures",
                                       "failure_rate", "ci_low", "ci_high", "interval"])


def behaviour_examples(audit: Audit, model: str, test: str) -> pd.DataFrame:
    """The stored failing examples of one test of one model.

    Returns:
        text, expected, prob_positive, original, prob_original (None where a kind has none).
    """
    found = next((b for b in audit.behaviour if b.model == model and b.test == test), None)
    examples = found.examples if found else ()
    return pd.DataFrame([{key: e.get(key) for key in ("text", "expected", "prob_positive",
                                                      "original", "prob_original")}
                         for e in examples],
                        columns=["text", "expected", "prob_positive", "original",
                                 "prob_original"])


# ---------------------------------------------------------------- review-by-review diff


def diff_choices(runs: Iterable[Run]) -> dict[int, str]:
    """Runs a user can compare review by review: stages first, then trials; id -> name + split.

    Args:
        runs: stored runs.

    Returns:
        Run id -> "name · n split reviews", stages in stage order, then trials by study
        and number.
    """
    def key(run: Run) -> tuple:
        stage = Stage(run.spec.stage).order if run.spec.stage in STAGES else len(STAGES)
        return stage, run.spec.study or "", run.spec.trial or 0, run.id

    return {r.id: f"{r.label} · {r.evaluation.n:,} {r.spec.split} reviews"
            for r in sorted(runs, key=key)}


def diff_table(diff: ReviewDiff, name_a: str, name_b: str,
               limit: int = MAX_DIFF_ROWS) -> pd.DataFrame:
    """The review diff as shown: which model is right, both probabilities, the text.

    Args:
        diff: `trainer.comparison.review_diff` of runs A and B.
        name_a, name_b: the two runs' names.
        limit: at most this many rows, the largest probability gap first.

    Returns:
        review_id, true, right (the name of the run that is right), prob_a, prob_b, gap,
        length, text.
    """
    rows = diff.rows.head(limit)
    return pd.DataFrame({"review_id": rows["review_id"], "true": rows["true"],
                         "right": rows["right"].map({"A": name_a, "B": name_b}),
                         "prob_a": rows["prob_a"], "prob_b": rows["prob_b"], "gap": rows["gap"],
                         "length": rows["length"], "text": rows["text"]}).reset_index(drop=True)


def diff_sentence(diff: ReviewDiff, name_a: str, name_b: str) -> str:
    """One sentence: how often each run alone is right on the shared reviews, McNemar's p."""
    test, n = diff.paired.test, diff.paired.n
    return (f"Of {n:,} reviews both scored, only {name_a} is right on {test.b:,} and only "
            f"{name_b} on {test.c:,}; McNemar's exact test: {format_p(test.p_value)} "
            f"(n = {n:,}).")
