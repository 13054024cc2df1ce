"""Create the sentiment_* tables: runs and their metrics, curves, predictions, review texts.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _run_id(table: str) -> sa.Column:
    return sa.Column(
        "run_id",
        sa.Integer(),
        sa.ForeignKey(
            "sentiment_runs.id", ondelete="CASCADE", name=f"fk_{table}_run_id_sentiment_runs"
        ),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "sentiment_runs",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("data_source", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=True),
        sa.Column("study", sa.String(512), nullable=True),
        sa.Column("trial", sa.Integer(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("artifact", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sentiment_runs"),
        sa.UniqueConstraint("study", "trial", "stage", name="uq_sentiment_runs_study_trial_stage"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sentiment_runs_study_trial", "sentiment_runs", ["study", "trial"])
    op.create_index(
        "ix_sentiment_runs_stage_config_hash", "sentiment_runs", ["stage", "config_hash"]
    )
    op.create_table(
        "sentiment_scalars",
        _run_id("sentiment_scalars"),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "name", name="pk_sentiment_scalars"),
    )
    op.create_table(
        "sentiment_class_metrics",
        _run_id("sentiment_class_metrics"),
        sa.Column("class_name", sa.String(128), nullable=False),
        sa.Column("precision", sa.Float(), nullable=True),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.Column("f1", sa.Float(), nullable=True),
        sa.Column("support", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "class_name", name="pk_sentiment_class_metrics"),
    )
    op.create_table(
        "sentiment_confusion",
        _run_id("sentiment_confusion"),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in ("tn", "fp", "fn", "tp")),
        sa.PrimaryKeyConstraint("run_id", name="pk_sentiment_confusion"),
    )
    op.create_table(
        "sentiment_curves",
        _run_id("sentiment_curves"),
        sa.Column("kind", sa.String(64), nullable=False),
        *(sa.Column(name, sa.JSON(), nullable=False) for name in ("x", "y", "w")),
        sa.PrimaryKeyConstraint("run_id", "kind", name="pk_sentiment_curves"),
    )
    op.create_table(
        "sentiment_predictions",
        sa.Column("id", BIG_ID, autoincrement=True),
        _run_id("sentiment_predictions"),
        sa.Column("review_id", sa.String(256), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("prob", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sentiment_predictions"),
    )
    op.create_index("ix_sentiment_predictions_run_id", "sentiment_predictions", ["run_id"])
    op.create_table(
        "sentiment_reviews",
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column("data_source", sa.String(1024), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("review_id", sa.String(256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sentiment_reviews"),
        sa.UniqueConstraint(
            "data_source",
            "split",
            "review_id",
            name="uq_sentiment_reviews_data_source_split_review_id",
        ),
    )


def downgrade() -> None:
    for table in (
        "sentiment_reviews",
        "sentiment_predictions",
        "sentiment_curves",
        "sentiment_confusion",
        "sentiment_class_metrics",
        "sentiment_scalars",
        "sentiment_runs",
    ):
        op.drop_table(table)
