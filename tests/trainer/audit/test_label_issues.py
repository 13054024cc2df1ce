"""Label-issue candidates: a planted flipped label is found first; tiny splits give none."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.trainer.audit.built_data import replaced, review, split
from trainer.audit.label_issues import (
    candidate_of,
    find_issues,
    out_of_fold_probs,
    train_label_issues,
)
from trainer.errors import DataError

CANDIDATE = {"ngram_range": [1, 1], "sublinear_tf": True, "min_df": 2, "C": 10.0}


def flipped(n: int = 80, row: int = 6) -> tuple:
    """A train split whose review `row` reads clearly positive but is labelled negative."""
    s = split("train", n, 11)
    text = review(1, np.random.default_rng(99)) + " great wonderful brilliant superb"
    return replaced(s, row, text, label=0), row


def test_out_of_fold_probabilities_come_from_models_that_never_saw_the_review() -> None:
    s, row = flipped()
    probs = out_of_fold_probs(s, seed=0, candidate=CANDIDATE, folds=4)
    assert probs.shape == (len(s),) and not np.isnan(probs).any()
    assert probs[row] > 0.5  # its own (wrong) label never trained the model that scored it
    others = np.delete(np.arange(len(s)), row)
    assert np.mean((probs[others] >= 0.5) == s.labels[others]) > 0.9


def test_the_planted_flipped_label_is_the_first_candidate() -> None:
    s, row = flipped()
    issues, method = train_label_issues(s, seed=0, candidate=CANDIDATE, folds=4)
    assert issues and issues[0].review_id == s.ids[row]
    first = issues[0]
    assert (first.split, first.given_label, first.rank) == ("train", 0, 1)
    assert first.prob_positive > 0.5
    assert [i.rank for i in issues] == list(range(1, len(issues) + 1))
    assert "4-fold out-of-fold" in method and "unigrams, C=10" in method
    assert all(i.method == method for i in issues)


def test_test_split_candidates_rank_the_most_confidently_wrong_first() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    probs = np.array([0.1, 0.2, 0.1, 0.05, 0.9, 0.8, 0.95, 0.9, 0.99, 0.7])
    ids = [f"test/{i}" for i in range(10)]
    issues = find_issues("test", ids, labels, probs, "stored baseline")
    assert [i.review_id for i in issues][:1] == ["test/8"]
    assert issues[0].prob_positive == pytest.approx(0.99)
    assert issues[0].method == "stored baseline"


def test_one_label_or_too_few_reviews_give_no_candidates(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    assert find_issues("test", ["a", "b"], [1, 1], [0.1, 0.9], "m") == []
    tiny = split("train", 6, 12)
    with caplog.at_level(logging.WARNING):
        assert train_label_issues(tiny, seed=0) == ([], None)
    assert "fewer than the 5 folds" in caplog.text
    with pytest.raises(DataError, match="label issues need more reviews"):
        out_of_fold_probs(tiny, seed=0)


def test_the_stored_baselines_choice_becomes_the_fold_candidate() -> None:
    params = {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 2, "C": 30.0,
              "validation_accuracy": 0.9}
    assert candidate_of(params) == {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 2,
                                    "C": 30.0}
    assert candidate_of({"C": 1.0}) is None and candidate_of(None) is None
