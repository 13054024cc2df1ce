"""Frozen dataclasses that cross the storage boundary (ORM rows never leave `storage/`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

CLASS_NAMES = ("negative", "positive")


class Stage(StrEnum):
    """Where an evaluated model comes from; each member equals the string stored in the database.

    Members are in the order models are listed: the three stages compared on the test split,
    then the tuning trials (scored on the validation split).

    Attributes:
        display: how people read the stage ("TF-IDF baseline").
        ref: the `--model-ref` word that names its newest model (`trial` takes `:N`).
        command: the `python -m trainer` command that produces it.
    """

    display: str
    ref: str
    command: str

    def __new__(cls, value: str, display: str, ref: str, command: str) -> Stage:
        member = str.__new__(cls, value)
        member._value_ = value
        member.display, member.ref, member.command = display, ref, command
        return member

    BASELINE = "baseline", "TF-IDF baseline", "baseline", "baseline"
    PRETRAINED = "pretrained", "pretrained model", "pretrained", "pretrained"
    FINETUNED = "finetuned", "fine-tuned model", "final", "final"
    TRIAL = "trial", "trial", "trial", "tune"

    @property
    def order(self) -> int:
        """The stage's place in listings (baseline 0, pretrained 1, fine-tuned 2, trial 3)."""
        return list(Stage).index(self)

    @classmethod
    def of_ref(cls, word: str) -> Stage | None:
        """The stage a `--model-ref` word names ("final" -> FINETUNED), else None."""
        return next((s for s in cls if s.ref == word), None)


STAGES = tuple(s.value for s in Stage)
COMPARED_STAGES = (Stage.BASELINE, Stage.PRETRAINED, Stage.FINETUNED)  # side by side, on test


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

    stage: str  # a Stage (a plain string when read back)
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

    @property
    def label(self) -> str:
        """The run's readable name (`run_label`)."""
        return run_label(self.id, self.spec)


def run_label(run_id: int, spec: RunSpec) -> str:
    """The one readable name of a stored model, shown by the CLI and the dashboard alike.

    E.g. "TF-IDF baseline: tfidf-logreg (run 1)", "fine-tuned model: all-MiniLM-L6-v2, study
    imdb-finetune (run 9)", "trial 3 of imdb-finetune (run 12)".

    Args:
        run_id: the run's id.
        spec: the run's spec; a stage unknown to `Stage` is shown as stored.

    Returns:
        The stage's display name, the model's last path part and the study, then the run id.
    """
    if spec.stage == Stage.TRIAL:
        return f"trial {spec.trial} of {spec.study} (run {run_id})"
    stage = Stage(spec.stage).display if spec.stage in STAGES else spec.stage
    study = f", study {spec.study}" if spec.study else ""
    return f"{stage}: {Path(spec.model).name or spec.model}{study} (run {run_id})"
