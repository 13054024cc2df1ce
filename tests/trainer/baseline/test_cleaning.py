"""The original study's cleaning rules, checked on exact strings."""
from __future__ import annotations

import pytest

from trainer.baseline.cleaning import clean


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Great movie!", "great movie "),
        ("I didn't like it.<br /><br />Not at all", "i didn't like it   not at all"),
        ("A<br/>B<BR />C", "a b c"),
        ('"Wow" - (really?) 10/10, #1; $5 & more...', " wow     really   10 10   1   5   more   "),
        ("it's ok", "it's ok"),
        ("Émile's CAFÉ", "émile's café"),
        ("", ""),
    ],
)
def test_clean_follows_the_original_rules(raw: str, expected: str) -> None:
    assert clean(raw) == expected


def test_clean_keeps_apostrophes_and_drops_every_other_ascii_punctuation() -> None:
    import string

    out = clean(string.punctuation)
    assert out == " " * 6 + "'" + " " * 25
    assert len(out) == len(string.punctuation)
