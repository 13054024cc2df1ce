"""Frozen dataclasses that cross the storage boundary (ORM rows never leave `storage/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CLASS_NAMES = ("negative", "positive")
STAGES = ("baseline", "pretrained", "trial", "finetuned")


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Curve:
    """Points of one curve, already downsampled for storage.

    roc: x=false positive rate, y=true positive rate, w=threshold.
    pr: x=recall, y=precision, w=threshold.
    calibration: x=mean predicted probability, y=fraction positive, w=count in the bin.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    w: tuple[float, ...]


@dataclass(frozen=True)
class Evaluation:
    """Everything measured for one model on one split.

    scalars holds at least: accuracy, accuracy_ci_low, accuracy_ci_high, loss, roc_auc,
    roc_auc_ci_low, roc_auc_ci_high, ece, brier (roc_auc* may be NaN when one class is absent).
    confusion is [[tn, fp], [fn, tp]]: rows are true labels, columns predictions (0 negative).
    """

    n: int
    scalars: dict[str, float]
    per_class: dict[str, ClassMetrics]
    confusion: tuple[tuple[int, int], tuple[int, int]]
    curves: dict[str, Curve] = field(default_factory=dict)


@dataclass(frozen=True)
class Predictions:
    """Per-review predictions: positive-class probability for each review."""

    review_ids: tuple[str, ...]
    labels: tuple[int, ...]
    probs: tuple[float, ...]
    texts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RunSpec:
    """What is known about an evaluated model before it is stored."""

    stage: str  # one of STAGES
    model: str  # hub id, local path or a readable name
    split: str  # "train" | "validation" | "test"
    data_source: str
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    study: str | None = None
    trial: int | None = None
    warnings: tuple[str, ...] = ()
    artifact: str | None = None  # directory or file of the saved model, if any
    duration_s: float | None = None


@dataclass(frozen=True)
class Run:
    """A stored evaluated model."""

    id: int
    spec: RunSpec
    created_at: datetime
    evaluation: Evaluation
