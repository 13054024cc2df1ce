"""Pure data preparation for the live page: highlighted explanations, CSV uploads, verdicts."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dashboard.views import escape_markdown
from trainer.errors import TrainerError
from trainer.predict import label_of, validate_review


class UploadError(ValueError):
    """An uploaded file cannot be read as reviews; the message says what to do."""


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
    """Explanation items as rows token, weight, towards ("positive"/"negative"), strongest first."""
    frame = pd.DataFrame([{"token": c.token, "weight": float(c.weight),
                           "towards": "positive" if c.weight > 0 else "negative"}
                          for c in contributions], columns=["token", "weight", "towards"])
    return frame.reindex(frame["weight"].abs().sort_values(ascending=False).index) \
        .reset_index(drop=True)


def read_reviews_csv(data: bytes, max_rows: int = 5000) -> pd.DataFrame:
    """Parse an uploaded CSV of reviews (UTF-8, with or without BOM, LF or CRLF line ends).

    Args:
        data: the file's bytes.
        max_rows: the most reviews accepted in one file.

    Returns:
        A DataFrame with a `text` column (other columns kept).

    Raises:
        UploadError: not UTF-8, not CSV, empty, no review column or too many rows.
    """
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UploadError(f"the file is not UTF-8 text (byte 0x{data[e.start]:02x} at position "
                          f"{e.start}); save it as \"CSV UTF-8\" and upload it again") from None
    if not decoded.strip():
        raise UploadError("the file is empty; upload a CSV with a header row and a column "
                          "named text")
    try:
        frame = pd.read_csv(io.StringIO(decoded), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UploadError(f"the file is not a readable CSV ({first}); check that fields with "
                          "commas or line breaks are quoted, then upload it again") from None
    return _review_column(frame, max_rows)


def _review_column(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    names = {str(c).strip().lower(): c for c in frame.columns}
    column = names.get("text", names.get("review"))
    if column is None and len(frame.columns) == 1:
        column = frame.columns[0]
    if column is None:
        raise UploadError(f"expected a column named 'text', found {list(map(str, frame.columns))}"
                          "; rename the column that holds the reviews to text")
    if frame.empty:
        raise UploadError("the file has a header but no reviews; add one review per row")
    if len(frame) > max_rows:
        raise UploadError(f"the file has {len(frame):,} reviews; upload at most {max_rows:,} "
                          "at a time (split the file)")
    return frame.rename(columns={column: "text"})


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
