"""Conversions between run records (storage.records) and database rows (storage.models)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from storage.errors import StorageError
from storage.models import (
    AuditBehaviourRow,
    AuditDuplicateRow,
    AuditLabelIssueRow,
    AuditRow,
    AuditSliceRow,
    AuditTruncationRow,
    ClassMetricsRow,
    ConfusionRow,
    CurveRow,
    RunRow,
    ScalarRow,
)
from storage.records import (
    STAGES,
    Audit,
    BehaviourResult,
    ClassMetrics,
    Curve,
    DuplicateGroup,
    Evaluation,
    LabelIssue,
    Predictions,
    ReviewRef,
    Run,
    RunSpec,
    SliceResult,
    TruncationResult,
)


def check_spec(spec: RunSpec) -> None:
    if spec.stage not in STAGES:
        raise StorageError(
            f"Expected the run stage to be one of {list(STAGES)}, found {spec.stage!r}."
        )


def run_values(spec: RunSpec, evaluation: Evaluation) -> dict[str, Any]:
    return {
        "stage": spec.stage,
        "model": spec.model,
        "split": spec.split,
        "data_source": spec.data_source,
        "config": dict(spec.config),
        "config_hash": spec.config_hash,
        "study": spec.study,
        "trial": None if spec.trial is None else int(spec.trial),
        "warnings": [str(w) for w in spec.warnings],
        "artifact": spec.artifact,
        "duration_s": None if spec.duration_s is None else float(spec.duration_s),
        "n": int(evaluation.n),
        "created_at": datetime.now(UTC),
    }


def child_rows(evaluation: Evaluation) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Rows of the per-run tables, without run_id; numpy numbers become Python numbers."""
    (tn, fp), (fn, tp) = evaluation.confusion
    return [
        (ScalarRow.__table__, [
            {"name": name, "value": float(value)} for name, value in evaluation.scalars.items()
        ]),
        (ClassMetricsRow.__table__, [
            {"class_name": name, "precision": float(m.precision), "recall": float(m.recall),
             "f1": float(m.f1), "support": int(m.support)}
            for name, m in evaluation.per_class.items()
        ]),
        (ConfusionRow.__table__, [{"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}]),
        (CurveRow.__table__, [
            {"kind": kind, "x": _floats(c.x), "y": _floats(c.y), "w": _floats(c.w)}
            for kind, c in evaluation.curves.items()
        ]),
    ]


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values]


def prediction_rows(predictions: Predictions) -> list[dict[str, Any]]:
    ids, labels, probs = predictions.review_ids, predictions.labels, predictions.probs
    texts = predictions.texts
    lengths = {len(ids), len(labels), len(probs), len(ids if texts is None else texts)}
    if len(lengths) > 1:
        raise StorageError(
            f"Expected one label, probability (and text) per review, found {len(ids)} review "
            f"ids, {len(labels)} labels, {len(probs)} probabilities and "
            f"{'no' if texts is None else len(texts)} texts."
        )
    try:
        return [
            {"review_id": str(r), "label": int(lab), "prob": float(p)}
            for r, lab, p in zip(ids, labels, probs, strict=True)
        ]
    except (TypeError, ValueError) as e:
        raise StorageError(f"Expected integer labels and float probabilities, found {e}.") from e


def review_texts(predictions: Predictions) -> dict[str, Any]:
    if predictions.texts is None:
        return {}
    return dict(zip(map(str, predictions.review_ids), predictions.texts, strict=True))


def _nan(value: float | None) -> float:
    """SQLite stores NaN as NULL: NULL reads back as NaN."""
    return math.nan if value is None else value


def spec_of(row: RunRow) -> RunSpec:
    return RunSpec(
        stage=row.stage, model=row.model, split=row.split, data_source=row.data_source,
        config=dict(row.config or {}), config_hash=row.config_hash, study=row.study,
        trial=row.trial, warnings=tuple(row.warnings or ()), artifact=row.artifact,
        duration_s=row.duration_s,
    )


def to_run(row: RunRow) -> Run:
    spec = spec_of(row)
    c = row.confusion
    evaluation = Evaluation(
        n=row.n,
        scalars={s.name: _nan(s.value) for s in row.scalars},
        per_class={
            m.class_name: ClassMetrics(_nan(m.precision), _nan(m.recall), _nan(m.f1), m.support)
            for m in row.class_metrics
        },
        confusion=((c.tn, c.fp), (c.fn, c.tp)) if c else ((0, 0), (0, 0)),
        curves={cv.kind: Curve(tuple(cv.x), tuple(cv.y), tuple(cv.w)) for cv in row.curves},
    )
    return Run(id=row.id, spec=spec, created_at=row.created_at, evaluation=evaluation)


# --- audits ---------------------------------------------------------------------------------

DUPLICATE_KINDS = ("exact", "near")
DUPLICATE_SCOPES = ("train", "test", "cross")


def plain(value: Any) -> Any:
    """`value` as JSON can hold it: numpy numbers become Python ones, NaN and ±inf None.

    PostgreSQL's JSON refuses NaN, and SQLite's would read it back as a float only by luck.
    """
    if callable(getattr(value, "tolist", None)):  # a numpy array or number
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _maybe(value: float) -> float | None:
    """NaN is stored as NULL (see _nan)."""
    value = float(value)
    return value if math.isfinite(value) else None


def check_audit(audit: Audit) -> None:
    for group in audit.duplicates:
        if group.kind not in DUPLICATE_KINDS or group.scope not in DUPLICATE_SCOPES:
            raise StorageError(
                f"Expected duplicate groups of a kind in {list(DUPLICATE_KINDS)} and a scope in "
                f"{list(DUPLICATE_SCOPES)}, found {group.kind!r} and {group.scope!r}."
            )


def audit_values(audit: Audit) -> dict[str, Any]:
    fingerprint = audit.config.get("fingerprint")
    return {
        "data_source": audit.data_source,
        "fingerprint": None if fingerprint is None else str(fingerprint),
        "config": plain(dict(audit.config)),
        "leaked_test_ids": [str(i) for i in audit.leaked_test_ids],
        "duration_s": None if audit.duration_s is None else float(audit.duration_s),
        "created_at": datetime.now(UTC),
    }


def audit_child_rows(audit: Audit) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Rows of the per-audit tables, without audit_id, in the audit's order."""
    return [
        (AuditDuplicateRow.__table__, [
            {"kind": g.kind, "scope": g.scope, "conflicting": bool(g.conflicting),
             "members": [[m.split, str(m.review_id), int(m.label)] for m in g.members]}
            for g in audit.duplicates
        ]),
        (AuditLabelIssueRow.__table__, [
            {"split": i.split, "review_id": str(i.review_id), "given_label": int(i.given_label),
             "prob_positive": _maybe(i.prob_positive), "rank": int(i.rank), "method": i.method}
            for i in audit.label_issues
        ]),
        (AuditBehaviourRow.__table__, [
            {"run_id": None if b.run_id is None else int(b.run_id), "model": b.model,
             "test": b.test, "kind": b.kind, "n": int(b.n), "failures": int(b.failures),
             "ci_low": _maybe(b.ci_low), "ci_high": _maybe(b.ci_high),
             "examples": plain(list(b.examples))}
            for b in audit.behaviour
        ]),
        (AuditSliceRow.__table__, [
            {"run_id": int(r.run_id), "slice_by": r.by, "bucket": r.bucket, "n": int(r.n),
             "accuracy": _maybe(r.accuracy), "ci_low": _maybe(r.ci_low),
             "ci_high": _maybe(r.ci_high)}
            for r in audit.slices
        ]),
        (AuditTruncationRow.__table__, [
            {"run_id": int(t.run_id), "max_length": int(t.max_length), "n": int(t.n),
             "truncated": int(t.truncated), "accuracy_truncated": _maybe(t.accuracy_truncated),
             "accuracy_untruncated": _maybe(t.accuracy_untruncated)}
            for t in audit.truncation
        ]),
    ]


def to_audit(row: AuditRow, children: dict[type, Sequence[Any]]) -> Audit:
    """The Audit of a row and its findings (children: ORM class -> its rows, in order)."""
    def rows(kind: type) -> Sequence[Any]:
        return children.get(kind, ())

    return Audit(
        data_source=row.data_source,
        duplicates=tuple(
            DuplicateGroup(d.kind, d.scope,
                           tuple(ReviewRef(s, str(r), int(lab)) for s, r, lab in d.members),
                           bool(d.conflicting))
            for d in rows(AuditDuplicateRow)
        ),
        label_issues=tuple(
            LabelIssue(i.split, i.review_id, i.given_label, _nan(i.prob_positive), i.rank,
                       i.method)
            for i in rows(AuditLabelIssueRow)
        ),
        behaviour=tuple(
            BehaviourResult(b.run_id, b.model, b.test, b.kind, b.n, b.failures, _nan(b.ci_low),
                            _nan(b.ci_high), tuple(b.examples or ()))
            for b in rows(AuditBehaviourRow)
        ),
        slices=tuple(
            SliceResult(r.run_id, r.slice_by, r.bucket, r.n, _nan(r.accuracy), _nan(r.ci_low),
                        _nan(r.ci_high))
            for r in rows(AuditSliceRow)
        ),
        truncation=tuple(
            TruncationResult(t.run_id, t.max_length, t.n, t.truncated,
                             _nan(t.accuracy_truncated), _nan(t.accuracy_untruncated))
            for t in rows(AuditTruncationRow)
        ),
        leaked_test_ids=tuple(row.leaked_test_ids or ()),
        config=dict(row.config or {}),
        duration_s=row.duration_s,
        id=row.id,
        created_at=row.created_at,
    )
