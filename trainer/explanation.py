"""Contribution: one word's signed share of a sentiment prediction, shared by every explainer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contribution:
    """A word (or n-gram) and how much it pushed the prediction.

    Attributes:
        token: the text of the span, exactly ``text[start:end]`` of the explained text.
        start: character offset of the span in the original text.
        end: character offset one past the span's end.
        weight: signed contribution; positive pushes towards the positive class.
    """

    token: str
    start: int
    end: int
    weight: float
