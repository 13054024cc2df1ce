"""The original study's text cleaning for the TF-IDF baseline."""
from __future__ import annotations

import re
import string

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
