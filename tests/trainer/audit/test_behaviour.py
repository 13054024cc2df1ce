"""Behavioural tests on keyword models whose failures are known exactly; the JSONL reader."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from trainer.audit import behaviour
from trainer.audit.behaviour import (
    BUILT_IN,
    CASES_PER_TEST,
    INTENSIFIER_WORDS,
    INTENSIFIERS,
    NAMES,
    NEGATED_NEGATIVE,
    NEGATED_POSITIVE,
    NEGATIVE_WORDS,
    NEUTRAL,
    POSITIVE_WORDS,
    TYPOS,
    behaviour_results,
    built_in_cases,
    read_behaviour_file,
)
from trainer.errors import DataError, ModelError
from trainer.metrics import wilson_interval

Model = Callable[[list[str]], np.ndarray]
NEGATORS = {"not", "wasn't", "can't", "didn't"}
FILLER = "The scenes were long and the score was loud, as the trailer had promised."


def reviews(n: int = 40) -> list[str]:
    """Short reviews, each with exactly one sentiment word; every third one names John."""
    words = POSITIVE_WORDS + NEGATIVE_WORDS
    return [f"{'John' if i % 3 == 0 else 'The critic'} said the plot was {words[i % len(words)]}."
            f" {FILLER} Review number {i}." for i in range(n)]


def keyword_model(*, negation: bool = False, very: float = 0.0,
                  calls: list[int] | None = None) -> Model:
    """p = sigmoid(sum of word polarities); "very" and the other intensifiers count `very`.

    With negation, a word after "not" (and the like) in the same text counts the other way.
    """
    polarity = {w: 1.0 for w in POSITIVE_WORDS} | {w: -1.0 for w in NEGATIVE_WORDS} | \
        dict.fromkeys(INTENSIFIER_WORDS, very)

    def predict(texts: list[str]) -> np.ndarray:
        if calls is not None:
            calls.append(len(texts))
        out = []
        for text in texts:
            score, sign = 0.0, 1.0
            for word in re.findall(r"[a-z']+", text.lower()):
                if negation and word in NEGATORS:
                    sign = -1.0
                score += sign * polarity.get(word, 0.0)
            out.append(1.0 / (1.0 + math.exp(-score)))
        return np.asarray(out)

    return predict


def by_test(results: Sequence) -> dict:
    return {r.test: r for r in results}


def run(model: Model, texts: Sequence[str] | None = None, seed: int = 0, **kw) -> dict:
    return by_test(behaviour_results(model, model="keywords", run_id=7,
                                     texts=reviews() if texts is None else texts, seed=seed,
                                     **kw))


def test_a_model_blind_to_negation_fails_every_negation_case_and_no_other() -> None:
    results = run(keyword_model())
    assert list(results) == list(BUILT_IN)
    for test in (NEGATED_POSITIVE, NEGATED_NEGATIVE):
        assert results[test].kind == "MFT"
        assert results[test].failures == results[test].n == CASES_PER_TEST
    assert results[INTENSIFIERS].failures == 0
    assert results[NEUTRAL].failures == 0  # the neutral sentences hold no sentiment word
    assert results[NAMES].failures == 0


def test_a_negation_aware_model_passes_both_negation_tests() -> None:
    results = run(keyword_model(negation=True))
    assert results[NEGATED_POSITIVE].failures == 0
    assert results[NEGATED_NEGATIVE].failures == 0
    assert results[NEGATED_POSITIVE].examples == ()


def test_intensifiers_that_weaken_a_word_fail_exactly_the_cases_that_must_go_up() -> None:
    # "very" read as a negative word: "very good" goes down (fails), "very bad" further down.
    cases = [c for c in built_in_cases(reviews(), 0) if c.test == INTENSIFIERS]
    results = run(keyword_model(very=-1.0))
    ups = sum(c.direction == "up" for c in cases)
    assert 0 < ups < len(cases)
    assert results[INTENSIFIERS].kind == "DIR"
    assert results[INTENSIFIERS].failures == ups
    assert all(e["prob_positive"] < e["prob_original"] for e in results[INTENSIFIERS].examples)


def test_typos_fail_exactly_where_they_broke_the_only_sentiment_word() -> None:
    words = set(POSITIVE_WORDS + NEGATIVE_WORDS)
    cases = [c for c in built_in_cases(reviews(), 0) if c.test == TYPOS]

    def label(text: str) -> int:
        found = [w for w in re.findall(r"[a-z']+", text.lower()) if w in words]
        return int(not found or found[0] in POSITIVE_WORDS)  # no word: p = 0.5, positive

    broken = sum(label(c.text) != label(c.variant) for c in cases)
    result = run(keyword_model())[TYPOS]
    assert result.kind == "INV" and result.n == len(cases) == len(reviews())
    assert broken > 0 and result.failures == broken


def test_a_model_that_knows_john_fails_exactly_the_name_swaps_that_add_or_remove_him() -> None:
    def likes_john(texts: list[str]) -> np.ndarray:
        return np.array([0.9 if "John" in t else 0.1 for t in texts])

    cases = [c for c in built_in_cases(reviews(), 0) if c.test == NAMES]
    expected = sum(("John" in c.text) != ("John" in c.variant) for c in cases)
    result = run(likes_john)[NAMES]
    assert result.n == CASES_PER_TEST  # real reviews with names, then templates
    assert expected > 0 and result.failures == expected
    assert {e["expected"] for e in result.examples} <= {"positive, as without the change",
                                                        "negative, as without the change"}


def test_a_length_model_fails_exactly_where_the_neutral_sentence_crosses_its_threshold() -> None:
    texts = reviews()
    cut = sorted(len(t) for t in texts)[len(texts) // 2]

    def long_is_positive(batch: list[str]) -> np.ndarray:
        return np.array([0.8 if len(t) >= cut else 0.2 for t in batch])

    cases = [c for c in built_in_cases(texts, 0) if c.test == NEUTRAL]
    crossed = sum(len(c.text) < cut <= len(c.variant) for c in cases)
    result = run(long_is_positive, texts)[NEUTRAL]
    assert crossed > 0 and result.failures == crossed


def test_results_carry_n_wilson_interval_model_and_at_most_three_worst_examples() -> None:
    for result in run(keyword_model()).values():
        assert (result.model, result.run_id) == ("keywords", 7)
        assert 0 < result.n <= CASES_PER_TEST
        assert (result.ci_low, result.ci_high) == wilson_interval(result.failures, result.n)
        assert len(result.examples) == min(3, result.failures)
    worst = run(keyword_model())[NEGATED_POSITIVE].examples
    assert [e["expected"] for e in worst] == ["negative"] * 3
    probs = [e["prob_positive"] for e in worst]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.5


def test_the_same_seed_gives_the_same_cases_and_another_seed_other_ones() -> None:
    texts = reviews()
    assert built_in_cases(texts, 3) == built_in_cases(texts, 3)
    assert built_in_cases(texts, 3) != built_in_cases(texts, 4)
    assert behaviour_results(keyword_model(), model="m", run_id=None, texts=texts, seed=3) == \
        behaviour_results(keyword_model(), model="m", run_id=None, texts=texts, seed=3)


def test_typos_and_the_neutral_sentence_change_the_same_real_reviews() -> None:
    cases = built_in_cases(reviews(), 0)
    typos = [c.text for c in cases if c.test == TYPOS]
    assert typos == [c.text for c in cases if c.test == NEUTRAL]
    assert all(c.variant.startswith(c.text) for c in cases if c.test == NEUTRAL)


def test_long_reviews_are_passed_over_while_enough_short_ones_exist() -> None:
    short = [f"Short review {i} was great." for i in range(CASES_PER_TEST)]
    long = ["A long review that was great. " * 60]
    cases = built_in_cases(short + long, 0)
    assert all(c.text != long[0] for c in cases)


def test_cases_are_scored_once_each_in_a_few_batches() -> None:
    calls: list[int] = []
    texts = reviews()
    run(keyword_model(calls=calls), texts)
    cases = built_in_cases(texts, 0)
    unique = {t for c in cases for t in (c.text, c.variant) if t}
    assert sum(calls) == len(unique)
    assert len(calls) == math.ceil(len(unique) / behaviour.BATCH)


def test_without_real_reviews_only_the_template_tests_run() -> None:
    results = run(keyword_model(), texts=[])
    assert list(results) == [NEGATED_POSITIVE, NEGATED_NEGATIVE, INTENSIFIERS, NAMES]
    assert results[NAMES].n == CASES_PER_TEST


def test_user_cases_become_their_own_tests_after_the_built_in_ones() -> None:
    extra = [
        {"test": "sarcasm", "kind": "MFT", "text": "Oh great, another boring sequel.",
         "expected": "negative"},
        {"test": "sarcasm", "kind": "MFT", "text": "What a great film.", "expected": "positive"},
        {"test": "emoji", "kind": "INV", "text": "A great film.", "variant": "A great film :)"},
        {"test": "more praise", "kind": "DIR", "text": "A good film.",
         "variant": "A good and moving film.", "direction": "up"},
        {"test": "more praise", "kind": "DIR", "text": "A good film.",
         "variant": "A good but dull film.", "direction": "up"},
    ]
    results = run(keyword_model(), extra_cases=extra)
    assert list(results)[len(BUILT_IN):] == ["sarcasm", "emoji", "more praise"]
    # "great" + "boring" = 0: p = 0.5 is positive, so the sarcastic case fails
    assert (results["sarcasm"].n, results["sarcasm"].failures) == (2, 1)
    assert (results["emoji"].kind, results["emoji"].failures) == ("INV", 0)
    assert (results["more praise"].n, results["more praise"].failures) == (2, 1)
    assert results["more praise"].examples[0]["text"] == "A good but dull film."


def test_a_model_returning_the_wrong_shape_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="one probability in"):
        run(lambda texts: np.zeros((len(texts), 2)))
    with pytest.raises(ModelError, match="one probability in"):
        run(lambda texts: np.full(len(texts), np.nan))


def test_user_cases_given_directly_are_checked_too() -> None:
    with pytest.raises(DataError, match="user case 2: unknown kind 'XYZ'"):
        run(keyword_model(), extra_cases=[
            {"test": "t", "kind": "INV", "text": "a", "variant": "b"},
            {"test": "t", "kind": "XYZ", "text": "a"}])


def write(tmp_path: Path, lines: Sequence[str]) -> str:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_behaviour_file_round_trips_each_kind_and_skips_blank_lines(tmp_path: Path) -> None:
    rows = [{"test": "a", "kind": "MFT", "text": "Good.", "expected": "positive", "note": "x"},
            {"test": "b", "kind": "INV", "text": "Good.", "variant": "Good!"},
            {"test": "c", "kind": "DIR", "text": "Good.", "variant": "Very good.",
             "direction": "up"}]
    path = write(tmp_path, [json.dumps(rows[0]), "", json.dumps(rows[1]), "  ",
                            json.dumps(rows[2])])
    cases = read_behaviour_file(path)
    assert cases == [{k: v for k, v in rows[0].items() if k != "note"}, rows[1], rows[2]]
    assert by_test(behaviour_results(keyword_model(), model="m", run_id=None, texts=[], seed=0,
                                     extra_cases=cases))["c"].failures == 0


@pytest.mark.parametrize(("line", "message"), [
    ('{"test": "a", "kind": "MFT", "text": "x", "expected": "positive"',
     "line 2 is not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object"),
    ('{"test": "a", "kind": "MFT", "text": "x"}', r"line 2: .*missing \['expected'\]"),
    ('{"test": "a", "text": "x"}', r"line 2: .*missing \['kind'\]"),
    ('{"test": "a", "kind": "NEW", "text": "x"}',
     "line 2: unknown kind 'NEW'; use MFT, INV or DIR"),
    ('{"test": "a", "kind": "MFT", "text": "x", "expected": "neutral"}',
     "line 2: expected must be 'negative' or 'positive'"),
    ('{"test": "a", "kind": "DIR", "text": "x", "variant": "y", "direction": "sideways"}',
     "line 2: direction must be 'up' or 'down'"),
    ('{"test": "a", "kind": "INV", "text": "", "variant": "y"}',
     "line 2: text must be a non-empty"),
    (json.dumps({"test": NEUTRAL, "kind": "INV", "text": "x", "variant": "y"}),
     "line 2: .*is the name of a built-in test"),
    ('{"test": "ok", "kind": "INV", "text": "x", "variant": "y"}',
     "line 2: test 'ok' already has MFT cases, this one is INV"),
])
def test_behaviour_file_errors_name_the_line_and_the_fix(tmp_path: Path, line: str,
                                                          message: str) -> None:
    first = '{"test": "ok", "kind": "MFT", "text": "Fine.", "expected": "positive"}'
    with pytest.raises(DataError, match=message) as error:
        read_behaviour_file(write(tmp_path, [first, line]))
    assert str(error.value).endswith(".")


def test_a_missing_or_binary_behaviour_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="There is no behaviour file at"):
        read_behaviour_file(str(tmp_path / "none.jsonl"))
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_behaviour_file(str(tmp_path / "bin.jsonl"))
    with pytest.raises(DataError, match="Could not read"):
        read_behaviour_file(str(tmp_path))


def test_wilson_interval_matches_hand_computed_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(11, 10)
