"""Pure data preparation for the live page: model cards, verdicts, batch results, explanations."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dashboard.views import escape_markdown
from storage.records import Run
from trainer.errors import TrainerError
from trainer.predict import label_of, validate_review

MAX_UPLOAD_ROWS = 5000  # the most reviews classified from one uploaded CSV
PROB = "P(positive)"  # how the page names prob_positive, the one probability it shows
UNTRAINED = "head not trained: chance-level"
ACCURACY = "accuracy ± 95% CI"  # a model's stored accuracy, as the all-models table heads it
RESULT_COLUMNS = ("prob_positive", "label", "model", "error")  # added to an uploaded CSV


def untrained_head(warnings: Iterable[str]) -> bool:
    """Whether a run's warnings say its sentiment head was never trained (a chance-level score).

    The pretrained stage stores such a warning when the checkpoint had no sentiment head (an
    encoder such as all-MiniLM-L6-v2): its verdicts are coin tosses.
    """
    return any("head" in w.lower() and "chance" in w.lower() for w in warnings)


@dataclass(frozen=True)
class ModelCard:
    """What the page says beside a model's verdicts: its stored accuracy, n and caveat."""

    label: str
    run_id: int
    split: str = "test"
    n: int = 0
    accuracy: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    untrained: bool = False

    @property
    def option(self) -> str:
        """The model's name in a list of models, its caveat attached."""
        return f"{self.label} — {UNTRAINED}" if self.untrained else self.label

    @property
    def accuracy_text(self) -> str:
        """Accuracy ± half the 95% interval, e.g. "0.905 ± 0.004" ("unknown" if not stored)."""
        if math.isnan(self.accuracy):
            return "unknown"
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            return f"{self.accuracy:.3f}"
        return f"{self.accuracy:.3f} ± {(self.ci_high - self.ci_low) / 2:.3f}"

    @property
    def accuracy_note(self) -> str:
        """Where the accuracy comes from: its interval and n, e.g. "95% CI [0.9, 0.91], n = 25,000
        test reviews"."""
        if math.isnan(self.accuracy):
            return "no stored evaluation for this model"
        interval = "" if math.isnan(self.ci_low) or math.isnan(self.ci_high) else \
            f"95% CI [{self.ci_low:.3f}, {self.ci_high:.3f}], "
        return f"{interval}n = {self.n:,} {self.split} reviews"


def model_card(label: str, run_id: int, run: Run | None) -> ModelCard:
    """A model's card from its stored run (None: the run is gone, nothing known about it)."""
    if run is None:
        return ModelCard(label, run_id)
    scalars = run.evaluation.scalars
    return ModelCard(label, run_id, run.spec.split, run.evaluation.n,
                     _number(scalars.get("accuracy")), _number(scalars.get("accuracy_ci_low")),
                     _number(scalars.get("accuracy_ci_high")), untrained_head(run.spec.warnings))


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def highlight_markdown(text: str, contributions: Sequence[Any]) -> str:
    """The review as escaped markdown, the words that drove the decision highlighted.

    Args:
        text: the review as the user typed it.
        contributions: items with start, end (a character span of text) and a signed weight
            (+ towards positive, shown green; - towards negative, shown red).

    Returns:
        Markdown safe for st.markdown without unsafe_allow_html.
    """
    parts, pos = [], 0
    for c in sorted(contributions, key=lambda c: c.start):
        start, end = max(int(c.start), pos), min(int(c.end), len(text))
        if start >= end or c.weight == 0 or not text[start:end].strip():
            continue
        color = "green" if c.weight > 0 else "red"
        parts += [escape_markdown(text[pos:start]),
                  f":{color}-background[{escape_markdown(text[start:end]).strip()}]"]
        pos = end
    parts.append(escape_markdown(text[pos:]))
    return "".join(parts)


def contributions_frame(contributions: Sequence[Any]) -> pd.DataFrame:
    """Explanation items as rows token, weight, towards ("positive"/"negative"), strongest
    first."""
    frame = pd.DataFrame([{"token": c.token, "weight": float(c.weight),
                           "towards": "positive" if c.weight > 0 else "negative"}
                          for c in contributions], columns=["token", "weight", "towards"])
    return frame.reindex(frame["weight"].abs().sort_values(ascending=False).index) \
        .reset_index(drop=True)


def result_names(uploaded: Iterable[str]) -> dict[str, str]:
    """The name each added column gets: as in RESULT_COLUMNS unless the upload has it already
    (a file of labelled reviews has a label column), then "<name>_predicted" (then _2, ...)."""
    taken, names = set(uploaded), {}
    for name in RESULT_COLUMNS:
        chosen, count = name if name not in taken else f"{name}_predicted", 1
        while chosen in taken:
            count += 1
            chosen = f"{name}_predicted_{count}"
        taken.add(chosen)
        names[name] = chosen
    return names


def batch_frame(uploaded: pd.DataFrame, probs: Sequence[float], errors: Sequence[str | None],
                model: str, threshold: float = 0.5) -> pd.DataFrame:
    """Batch results: every uploaded column unchanged, then prob_positive, label, model, error.

    Args:
        uploaded: the file as read (trainer.predict.ReviewTable.frame), one row per review.
        probs: each review's positive-class probability (NaN where it was not scored).
        errors: why each review was refused, or None.
        model: the model's name.
        threshold: the positive-class probability from which a review is called positive.

    Returns:
        A new frame; an added column whose name the upload uses is renamed (`result_names`).
    """
    scored = [not (err is not None or p is None or math.isnan(p)) for p, err in zip(probs, errors)]
    added = pd.DataFrame({
        "prob_positive": [float(p) if ok else math.nan for p, ok in zip(probs, scored)],
        "label": [label_of(p, threshold)[0] if ok else "" for p, ok in zip(probs, scored)],
        "model": model,
        "error": [e or "" for e in errors]}, index=uploaded.index)
    return pd.concat([uploaded, added.rename(columns=result_names(uploaded.columns))], axis=1)


@dataclass(frozen=True)
class Verdict:
    """One model's answer for one review."""

    model: str
    label: str
    probability: float  # probability of `label`
    positive: float  # positive-class probability: what the page shows, as P(positive)


def verdict(model: str, positive: float, threshold: float = 0.5) -> Verdict:
    """The label and its probability from a positive-class probability."""
    label, probability = label_of(positive, threshold)
    return Verdict(model, label, probability, positive)


def comparison_frame(rows: Sequence[tuple[ModelCard, float | None, str]]) -> pd.DataFrame:
    """Every model's verdict on one review, beside its stored accuracy.

    Args:
        rows: (card, positive-class probability or None, why it could not score or "").

    Returns:
        Columns model, label, P(positive), ACCURACY (± half its 95% interval), n and split (of
        that accuracy), note (why it could not score, or that its head is untrained).
    """
    records = []
    for card, prob, problem in rows:
        ok = prob is not None and not math.isnan(prob)
        records.append({"model": card.label, "label": label_of(prob)[0] if ok else "",
                        PROB: float(prob) if ok else math.nan,
                        ACCURACY: card.accuracy_text, "n": card.n, "split": card.split,
                        "note": problem or (UNTRAINED if card.untrained else "")})
    return pd.DataFrame(records,
                        columns=["model", "label", PROB, ACCURACY, "n", "split", "note"])


def validated(texts: Sequence[str]) -> tuple[list[str], list[str | None]]:
    """Each text checked as a review: (cleaned texts, "" where invalid; error or None each)."""
    cleaned: list[str] = []
    errors: list[str | None] = []
    for text in texts:
        try:
            cleaned.append(validate_review(text))
            errors.append(None)
        except TrainerError as e:
            cleaned.append("")
            errors.append(str(e))
    return cleaned, errors
