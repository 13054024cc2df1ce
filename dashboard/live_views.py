"""Pure data preparation for the live page: highlighted explanations, batch results, verdicts."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dashboard.views import escape_markdown
from trainer.errors import TrainerError
from trainer.predict import label_of, validate_review

MAX_UPLOAD_ROWS = 5000  # the most reviews classified from one uploaded CSV


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


def batch_frame(texts: Sequence[str], probs: Sequence[float], errors: Sequence[str | None],
                model: str, threshold: float = 0.5) -> pd.DataFrame:
    """Batch results: text, label, score (probability of that label), model, error."""
    labels, scores = [], []
    for p, err in zip(probs, errors):
        if err is not None or p is None or math.isnan(p):
            labels.append("")
            scores.append(math.nan)
        else:
            label, score = label_of(p, threshold)
            labels.append(label)
            scores.append(score)
    return pd.DataFrame({"text": list(texts), "label": labels, "score": scores,
                         "model": model, "error": [e or "" for e in errors]})


@dataclass(frozen=True)
class Verdict:
    """One model's answer for one review."""

    model: str
    label: str
    probability: float  # probability of `label`
    positive: float  # positive-class probability


def verdict(model: str, positive: float, threshold: float = 0.5) -> Verdict:
    """The label and its probability from a positive-class probability."""
    label, probability = label_of(positive, threshold)
    return Verdict(model, label, probability, positive)


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
