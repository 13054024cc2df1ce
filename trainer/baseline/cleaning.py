"""The original study's text cleaning for the TF-IDF baseline, and offsets back to the raw text."""
from __future__ import annotations

import itertools
import re
import string

import numpy as np

BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation if c != "'"})


def clean(text: str) -> str:
    """Drop `<br />` tags, replace every ASCII punctuation mark except the apostrophe with a space,
    and lower-case.

    Args:
        text: a raw review.

    Returns:
        The cleaned review; whitespace is kept as produced (the vectoriser splits on it).
    """
    return BREAK.sub(" ", text).translate(_PUNCTUATION).lower()


def original_offsets(text: str, cleaned_length: int) -> np.ndarray:
    """For each character of clean(text), the index of the original character it came from.

    `clean` turns each `<br />` into one space and every other character into its lower case,
    whose length does not depend on context (only final sigma is contextual, and stays one).
    """
    offsets: list[int] = []
    start = 0
    for match in itertools.chain(BREAK.finditer(text), [None]):
        end = match.start() if match else len(text)
        if text[start:end].isascii():
            offsets.extend(range(start, end))
        else:
            for i in range(start, end):
                offsets.extend([i] * len(text[i].lower()))
        if match:
            offsets.append(match.start())
            start = match.end()
    if len(offsets) != cleaned_length:
        raise RuntimeError("clean changed in a way original_offsets must follow")
    return np.array(offsets, dtype=np.int64)
