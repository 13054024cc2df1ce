"""Conversions between run records (storage.records) and database rows (storage.models)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from storage.errors import StorageError
from storage.models import ClassMetricsRow, ConfusionRow, CurveRow, RunRow, ScalarRow
from storage.records import STAGES, ClassMetrics, Curve, Evaluation, Predictions, Run, RunSpec


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
