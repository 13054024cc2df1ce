"""Head+tail truncation: long reviews keep their opening and their ending, everywhere."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.transformer import loop
from trainer.transformer import model as transformer
from trainer.transformer.attribution import explain
from trainer.transformer.truncate import HEAD_SHARE, encode_ids, kept_positions, special_counts

OPENING = "the opening words come first"
ENDING = "in the end it was marvellous"
LONG = f"{OPENING} " + "filler " * 300 + ENDING


@pytest.fixture(scope="module")
def clf(tiny_model_dir: str) -> transformer.Classifier:
    return transformer.load_classifier(tiny_model_dir, device="cpu")


def test_bert_puts_one_special_token_before_and_one_after(clf: transformer.Classifier) -> None:
    assert special_counts(clf.tokenizer) == (1, 1)


def test_a_row_that_fits_is_kept_whole() -> None:
    assert kept_positions(10, 10, (1, 1)) is None
    assert kept_positions(3, 64, (1, 1)) is None


@pytest.mark.parametrize("max_length", [16, 64, 256])
def test_a_long_row_keeps_its_specials_a_quarter_of_head_and_the_rest_tail(
        max_length: int) -> None:
    length, room = 1000, max_length - 2
    keep = kept_positions(length, max_length, (1, 1))
    head = room // HEAD_SHARE
    assert len(keep) == max_length
    assert keep[:1 + head] == list(range(1 + head))  # [CLS] and the head
    assert keep[1 + head:] == list(range(length - (room - head) - 1, length))  # tail and [SEP]


def test_encoded_review_keeps_its_opening_and_its_ending(clf: transformer.Classifier) -> None:
    tok = clf.tokenizer
    (row,) = encode_ids(tok, [LONG], 64)
    opening = tok(OPENING, add_special_tokens=False)["input_ids"]
    ending = tok(ENDING, add_special_tokens=False)["input_ids"]
    assert len(row) == 64
    assert row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id
    assert row[1:1 + len(opening)] == opening
    assert row[-1 - len(ending):-1] == ending


def test_a_short_review_is_encoded_as_the_tokenizer_does(clf: transformer.Classifier) -> None:
    assert encode_ids(clf.tokenizer, ["a fine film"], 64) == [
        clf.tokenizer("a fine film")["input_ids"]]


def test_training_and_scoring_read_the_same_head_and_tail(clf: transformer.Classifier) -> None:
    encoded = loop.encode(clf.tokenizer, [LONG, "short"], max_length=64)
    assert encoded.ids[0].tolist() == encode_ids(clf.tokenizer, [LONG], 64)[0]
    # Scoring cuts the same way: the ending changes the score, words cut from the middle don't.
    other_end = f"{OPENING} " + "filler " * 300 + "in the end it was dreadful"
    other_middle = f"{OPENING} " + "filler " * 150 + "dreadful " + "filler " * 149 + ENDING
    probs = transformer.predict_proba(clf, [LONG, other_end, other_middle], max_length=64)
    assert probs[0] != probs[1]
    np.testing.assert_allclose(probs[0], probs[2], rtol=1e-6)


def test_explanations_cover_the_ending_of_a_long_review(clf: transformer.Classifier) -> None:
    contributions = explain(clf, LONG, max_length=64, top_k=1000)
    tokens = {c.token for c in contributions}
    assert "marvellous" in tokens and "opening" in tokens
    for c in contributions:
        assert LONG[c.start:c.end] == c.token
