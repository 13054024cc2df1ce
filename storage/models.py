"""SQLAlchemy ORM rows of our `sentiment_*` tables (they never leave `storage/`)."""
from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

VERSION_TABLE = "sentiment_alembic_version"
TABLE_PREFIX = "sentiment_"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# Millions of prediction rows may pile up; SQLite only autoincrements a plain INTEGER key.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, found naive {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class FloatList(TypeDecorator[list[float]]):
    """A JSON array of floats; NaN and ±inf travel as strings because JSON has no such numbers."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> list[Any] | None:
        if value is None:
            return None
        return [float(v) if math.isfinite(v) else repr(float(v)) for v in value]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[float] | None:
        if value is None:
            return None
        return [float(v) for v in value]


class Base(DeclarativeBase):
    """Our declarative base; constraint names follow NAMING so migrations can name them."""

    metadata = MetaData(naming_convention=NAMING)


class RunRow(Base):
    """One evaluated model; unique per (study, trial, stage) when study and trial are set."""

    __tablename__ = "sentiment_runs"
    __table_args__ = (
        UniqueConstraint("study", "trial", "stage"),
        Index(None, "study", "trial"),
        Index(None, "stage", "config_hash"),
        {"sqlite_autoincrement": True},  # a replaced run gets a new id, never a reused one
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stage: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(32))
    data_source: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str | None] = mapped_column(String(128))
    study: Mapped[str | None] = mapped_column(String(512))
    trial: Mapped[int | None] = mapped_column(Integer)
    warnings: Mapped[list[str]] = mapped_column(JSON)
    artifact: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Read-only: rows are written with bulk Core inserts and removed by ON DELETE CASCADE.
    scalars: Mapped[list[ScalarRow]] = relationship(order_by="ScalarRow.name", viewonly=True)
    class_metrics: Mapped[list[ClassMetricsRow]] = relationship(
        order_by="ClassMetricsRow.class_name", viewonly=True
    )
    confusion: Mapped[ConfusionRow | None] = relationship(viewonly=True)
    curves: Mapped[list[CurveRow]] = relationship(order_by="CurveRow.kind", viewonly=True)


def _run_fk() -> Any:
    return ForeignKey("sentiment_runs.id", ondelete="CASCADE")


class ScalarRow(Base):
    """One scalar metric of a run (accuracy, loss, roc_auc, …)."""

    __tablename__ = "sentiment_scalars"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)  # NULL means NaN (SQLite stores NaN so)


class ClassMetricsRow(Base):
    """Precision, recall, F1 and support of one class in a run."""

    __tablename__ = "sentiment_class_metrics"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    precision: Mapped[float | None] = mapped_column(Float)
    recall: Mapped[float | None] = mapped_column(Float)
    f1: Mapped[float | None] = mapped_column(Float)
    support: Mapped[int] = mapped_column(Integer)


class ConfusionRow(Base):
    """The 2x2 confusion matrix of a run."""

    __tablename__ = "sentiment_confusion"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    tn: Mapped[int] = mapped_column(Integer)
    fp: Mapped[int] = mapped_column(Integer)
    fn: Mapped[int] = mapped_column(Integer)
    tp: Mapped[int] = mapped_column(Integer)


class CurveRow(Base):
    """One curve of a run (roc, pr, calibration): all points in one row."""

    __tablename__ = "sentiment_curves"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    x: Mapped[list[float]] = mapped_column(FloatList)
    y: Mapped[list[float]] = mapped_column(FloatList)
    w: Mapped[list[float]] = mapped_column(FloatList)


class PredictionRow(Base):
    """One review's predicted positive-class probability in a run."""

    __tablename__ = "sentiment_predictions"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(_run_fk(), index=True)
    review_id: Mapped[str] = mapped_column(String(256))
    label: Mapped[int] = mapped_column(Integer)
    prob: Mapped[float | None] = mapped_column(Float)


class ReviewRow(Base):
    """A review text, stored once per (data source, split, review id)."""

    __tablename__ = "sentiment_reviews"
    __table_args__ = (UniqueConstraint("data_source", "split", "review_id"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    data_source: Mapped[str] = mapped_column(String(1024))
    split: Mapped[str] = mapped_column(String(32))
    review_id: Mapped[str] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text)


# --- the data and model audit ---------------------------------------------------------------


class AuditRow(Base):
    """One audit of a data source; its findings are in the sentiment_audit_* tables."""

    __tablename__ = "sentiment_audits"
    __table_args__ = (
        Index(None, "data_source"),
        Index(None, "fingerprint"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    data_source: Mapped[str] = mapped_column(String(1024))
    # What the audit covered (data, seed, runs): an audit with the same one is not redone.
    fingerprint: Mapped[str | None] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    leaked_test_ids: Mapped[list[str]] = mapped_column(JSON)
    duration_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def _audit_fk() -> Any:
    return ForeignKey("sentiment_audits.id", ondelete="CASCADE")


class AuditDuplicateRow(Base):
    """One group of exact or near duplicate reviews; members: [[split, review_id, label], …]."""

    __tablename__ = "sentiment_audit_duplicates"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(_audit_fk(), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    conflicting: Mapped[bool] = mapped_column(Boolean)
    members: Mapped[list[Any]] = mapped_column(JSON)


class AuditLabelIssueRow(Base):
    """One label-issue candidate: a review whose given label a model finds unlikely."""

    __tablename__ = "sentiment_audit_label_issues"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(_audit_fk(), index=True)
    split: Mapped[str] = mapped_column(String(32))
    review_id: Mapped[str] = mapped_column(String(256))
    given_label: Mapped[int] = mapped_column(Integer)
    prob_positive: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(Text)


class AuditBehaviourRow(Base):
    """One behavioural test of one model; run_id is no foreign key: audits outlive runs."""

    __tablename__ = "sentiment_audit_behaviour"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(_audit_fk(), index=True)
    run_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(Text)
    test: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    examples: Mapped[list[Any]] = mapped_column(JSON)


class AuditSliceRow(Base):
    """Accuracy of one run on one slice (by length or rating) of the reviews it scored."""

    __tablename__ = "sentiment_audit_slices"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(_audit_fk(), index=True)
    run_id: Mapped[int] = mapped_column(Integer)
    slice_by: Mapped[str] = mapped_column(String(32))
    bucket: Mapped[str] = mapped_column(String(128))
    n: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)


class AuditTruncationRow(Base):
    """How many test reviews one transformer run cut at its max length, accuracy each side."""

    __tablename__ = "sentiment_audit_truncation"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(_audit_fk(), index=True)
    run_id: Mapped[int] = mapped_column(Integer)
    max_length: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[int] = mapped_column(Integer)
    accuracy_truncated: Mapped[float | None] = mapped_column(Float)
    accuracy_untruncated: Mapped[float | None] = mapped_column(Float)


AUDIT_TABLES = (AuditDuplicateRow, AuditLabelIssueRow, AuditBehaviourRow, AuditSliceRow,
                AuditTruncationRow)
