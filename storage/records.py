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


# --- the data and model audit (python -m trainer audit) -------------------------------------


@dataclass(frozen=True)
class ReviewRef:
    """One review of a split, as an audit finding names it."""

    split: str  # "train" | "test"
    review_id: str
    label: int


@dataclass(frozen=True)
class DuplicateGroup:
    """Reviews that are the same text (exact, after normalising whitespace and case) or nearly.

    kind: "exact" | "near" (MinHash Jaccard estimate at or above the audit's threshold).
    scope: "train" | "test" (all members in that split) | "cross" (members in both splits).
    conflicting: the members do not all carry the same label.
    """

    kind: str
    scope: str
    members: tuple[ReviewRef, ...]
    conflicting: bool


@dataclass(frozen=True)
class LabelIssue:
    """A review whose given label a model finds unlikely (a candidate; labels are never changed).

    prob_positive: the model's positive-class probability (out-of-fold for the train split).
    rank: 1 for the most suspicious review of its split.
    method: how it was found, e.g. "cleanlab find_label_issues (self_confidence), 5-fold
        out-of-fold TF-IDF baseline".
    """

    split: str
    review_id: str
    given_label: int
    prob_positive: float
    rank: int
    method: str


@dataclass(frozen=True)
class BehaviourResult:
    """One behavioural test (CheckList style) of one model: how often it failed, of n cases.

    kind: "MFT" (minimum functionality: expected label), "INV" (invariance: prediction must not
        flip) or "DIR" (directional: probability must move the expected way).
    ci_low, ci_high: 95% interval of the failure rate (Wilson).
    examples: a few failing cases, each {"text": …, "expected": …, "prob_positive": …}.
    """

    run_id: int | None  # the stored run whose model was tested; None for a model not stored
    model: str  # run_label of that run, or the model's name
    test: str
    kind: str
    n: int
    failures: int
    ci_low: float
    ci_high: float
    examples: tuple[dict[str, Any], ...] = ()

    @property
    def failure_rate(self) -> float:
        return self.failures / self.n if self.n else float("nan")


@dataclass(frozen=True)
class SliceResult:
    """Accuracy of one stored run on one slice of the reviews it was scored on."""

    run_id: int
    by: str  # "length" (character quantiles) | "rating" (stars, where the source has them)
    bucket: str  # e.g. "≤ 512 chars", "513–1,024 chars", "1★"
    n: int
    accuracy: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class TruncationResult:
    """How many test reviews a transformer run cut at its max length, and accuracy on each side."""

    run_id: int
    max_length: int
    n: int
    truncated: int
    accuracy_truncated: float  # NaN when no review was truncated
    accuracy_untruncated: float  # NaN when every review was truncated


@dataclass(frozen=True)
class Audit:
    """Everything one audit of a data source found; stored and read back as one record.

    leaked_test_ids: test review ids whose normalised text also appears in the train split;
        the "deduplicated test" figures leave them out.
    """

    data_source: str
    duplicates: tuple[DuplicateGroup, ...]
    label_issues: tuple[LabelIssue, ...]
    behaviour: tuple[BehaviourResult, ...]
    slices: tuple[SliceResult, ...]
    truncation: tuple[TruncationResult, ...]
    leaked_test_ids: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    id: int | None = None
    created_at: datetime | None = None
