"""Hand-made records for the storage tests, and a row counter for orphan checks."""
from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select

from storage.models import Base
from storage.records import ClassMetrics, Curve, Evaluation, Predictions, RunSpec
from storage.store import Store


def evaluation(n: int = 4, accuracy: float = 0.75, roc_auc: float = math.nan) -> Evaluation:
    """An evaluation with every kind of child row; roc_auc NaN as when one class is absent."""
    return Evaluation(
        n=n,
        scalars={"accuracy": accuracy, "loss": 0.5, "roc_auc": roc_auc, "ece": 0.0625},
        per_class={
            "negative": ClassMetrics(precision=1.0, recall=0.5, f1=2 / 3, support=2),
            "positive": ClassMetrics(precision=2 / 3, recall=1.0, f1=0.8, support=2),
        },
        confusion=((1, 1), (0, 2)),
        curves={
            "roc": Curve(x=(0.0, 0.5, 1.0), y=(0.0, 1.0, 1.0), w=(math.inf, 0.6, 0.1)),
            "calibration": Curve(x=(0.25, 0.75), y=(0.0, 0.5), w=(2.0, 2.0)),
        },
    )


def spec(stage: str = "baseline", **changes: Any) -> RunSpec:
    values: dict[str, Any] = {
        "stage": stage,
        "model": "tfidf-logreg",
        "split": "test",
        "data_source": "/data/imdb",
        "config": {"seed": 13, "lr": 1.5e-5, "sizes": [1, 2], "nested": {"a": None}},
        "config_hash": "abc123",
        "warnings": ("the model has no sentiment head",),
        "artifact": "runs/model",
        "duration_s": 1.25,
    }
    values.update(changes)
    return RunSpec(**values)


def predictions(n: int = 4, texts: bool = True, prefix: str = "test/pos/") -> Predictions:
    ids = tuple(f"{prefix}{i}" for i in range(n))
    return Predictions(
        review_ids=ids,
        labels=tuple(i % 2 for i in range(n)),
        probs=tuple((i + 0.5) / n for i in range(n)),
        texts=tuple(f"review number {i}" + "!" * i for i in range(n)) if texts else None,
    )


def row_counts(store: Store) -> dict[str, int]:
    """Rows in each of our tables (white box: uses the Store's engine)."""
    with store._engine.connect() as conn:
        return {
            name: conn.scalar(select(func.count()).select_from(table))
            for name, table in Base.metadata.tables.items()
        }
