"""Add the audit tables: audits and their duplicates, label issues, behaviour, slices, truncation.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CHILDREN = (
    "sentiment_audit_duplicates",
    "sentiment_audit_label_issues",
    "sentiment_audit_behaviour",
    "sentiment_audit_slices",
    "sentiment_audit_truncation",
)


def _child(table: str, *columns: sa.Column) -> None:
    """A table of one audit's findings: an id for their order, the audit's id, `columns`."""
    op.create_table(
        table,
        sa.Column("id", BIG_ID, autoincrement=True),
        sa.Column(
            "audit_id",
            sa.Integer(),
            sa.ForeignKey("sentiment_audits.id", ondelete="CASCADE",
                          name=f"fk_{table}_audit_id_sentiment_audits"),
            nullable=False,
        ),
        *columns,
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    )
    op.create_index(f"ix_{table}_audit_id", table, ["audit_id"])


def _floats(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.Float(), nullable=True) for name in names]


def _ints(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.Integer(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "sentiment_audits",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("data_source", sa.String(1024), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("leaked_test_ids", sa.JSON(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sentiment_audits"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sentiment_audits_data_source", "sentiment_audits", ["data_source"])
    op.create_index("ix_sentiment_audits_fingerprint", "sentiment_audits", ["fingerprint"])
    _child(
        "sentiment_audit_duplicates",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("conflicting", sa.Boolean(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
    )
    _child(
        "sentiment_audit_label_issues",
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("review_id", sa.String(256), nullable=False),
        sa.Column("given_label", sa.Integer(), nullable=False),
        *_floats("prob_positive"),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
    )
    _child(
        "sentiment_audit_behaviour",
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("test", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        *_ints("n", "failures"),
        *_floats("ci_low", "ci_high"),
        sa.Column("examples", sa.JSON(), nullable=False),
    )
    _child(
        "sentiment_audit_slices",
        *_ints("run_id"),
        sa.Column("slice_by", sa.String(32), nullable=False),
        sa.Column("bucket", sa.String(128), nullable=False),
        *_ints("n"),
        *_floats("accuracy", "ci_low", "ci_high"),
    )
    _child(
        "sentiment_audit_truncation",
        *_ints("run_id", "max_length", "n", "truncated"),
        *_floats("accuracy_truncated", "accuracy_untruncated"),
    )


def downgrade() -> None:
    for table in (*CHILDREN, "sentiment_audits"):
        op.drop_table(table)
