"""Persistence for evaluated models: SQLAlchemy tables beside Optuna's, returning dataclasses."""
from storage.errors import StorageError
from storage.records import ClassMetrics, Curve, Evaluation, Predictions, Run, RunSpec
from storage.store import Store, open_store

__all__ = [
    "ClassMetrics",
    "Curve",
    "Evaluation",
    "Predictions",
    "Run",
    "RunSpec",
    "StorageError",
    "Store",
    "open_store",
]
