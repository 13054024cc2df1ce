"""McNemar's test of two stored runs paired on their shared reviews, and the summary table."""
from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from storage.records import Evaluation, Run, RunSpec
from trainer.comparison import mcnemar_against, paired_mcnemar, review_diff
from trainer.errors import TrainerError
from trainer.report import summary


def preds(ids: list[str], labels: list[int], probs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"review_id": ids, "label": labels, "prob": probs})


def make_run(run_id: int, stage: str) -> Run:
    evaluation = Evaluation(n=4, scalars={"accuracy": 0.5}, per_class={},
                            confusion=((1, 1), (1, 1)))
    return Run(run_id, RunSpec(stage, "m", "test", "d"), datetime(2026, 1, 1, tzinfo=UTC),
               evaluation)


class FakeStore:
    """Just the Store's predictions(), from frames given by run id."""

    def __init__(self, frames: dict[int, pd.DataFrame]) -> None:
        self.frames = frames

    def predictions(self, run_id: int, *, texts: bool = True) -> pd.DataFrame:
        return self.frames[run_id]


def test_paired_mcnemar_pairs_shared_scored_reviews_in_any_order() -> None:
    a = preds(["r0", "r1", "r2", "r3", "r4"], [0, 1, 1, 0, 1], [0.6, 0.4, 0.7, 0.2, math.nan])
    b = preds(["r9", "r3", "r2", "r1", "r0"], [1, 0, 1, 1, 0], [0.9, 0.3, 0.8, 0.9, 0.1])
    paired = paired_mcnemar(a, b)
    # shared and scored by both: r0-r3; A is right on r2, r3; B on all four
    assert paired.n == 4
    assert (paired.test.b, paired.test.c) == (0, 2)
    assert paired.test.p_value == 0.5  # two-sided exact binomial, 2 of 2
    assert (paired.accuracy_a, paired.accuracy_b) == (0.5, 1.0)


def test_paired_mcnemar_is_none_without_shared_reviews_and_refuses_other_labels() -> None:
    a = preds(["r0", "r1"], [0, 1], [0.2, 0.8])
    assert paired_mcnemar(a, preds(["x0"], [0], [0.1])) is None
    with pytest.raises(ValueError, match="different true labels"):
        paired_mcnemar(a, preds(["r0", "r1"], [1, 1], [0.2, 0.8]))


def test_mcnemar_against_says_p_and_n_or_why_there_is_none() -> None:
    store = FakeStore({1: preds(["r0", "r1", "r2"], [0, 1, 1], [0.9, 0.1, 0.2]),
                       2: preds(["r0", "r1", "r2"], [0, 1, 1], [0.1, 0.9, 0.8]),
                       3: preds(["x"], [0], [0.5]),
                       4: preds(["r0"], [1], [0.5])})
    out = mcnemar_against(store, make_run(1, "finetuned"),
                          [make_run(2, "baseline"), make_run(3, "baseline"),
                           make_run(4, "baseline")])
    assert out == {2: "0.25 (n=3)", 3: "no shared reviews", 4: "scored on other data"}


def test_summary_lists_stages_in_stage_order_with_mcnemar_against_fine_tuned() -> None:
    frame = preds(["r0", "r1"], [0, 1], [0.2, 0.8])
    store = FakeStore({1: frame, 2: frame, 3: frame})
    text = summary(store, [make_run(3, "finetuned"), make_run(1, "baseline"),
                           make_run(2, "pretrained")])
    lines = text.splitlines()
    assert "McNemar p vs fine-tuned" in lines[0]
    assert [line.split()[1] for line in lines[2:5]] == ["baseline", "pretrained", "finetuned"]
    assert lines[2].rstrip().endswith("1 (n=2)") and lines[4].rstrip().endswith("–")


def test_review_diff_lists_the_reviews_only_one_run_got_right_largest_gap_first() -> None:
    a = preds(["r0", "r1", "r2", "r3", "r4", "r5"], [1, 0, 1, 0, 1, 0],
              [0.9, 0.6, 0.2, 0.1, 0.7, math.nan])
    b = preds(["r5", "r4", "r3", "r2", "r1", "r0", "x"], [0, 1, 0, 1, 0, 1, 1],
              [0.9, 0.8, 0.7, 0.95, 0.45, 0.3, 0.5])
    diff = review_diff(a, b)
    # shared and scored by both: r0-r4. A alone right on r0, r3; B alone right on r1, r2.
    rows = diff.rows
    assert rows["review_id"].tolist() == ["r2", "r0", "r3", "r1"]
    assert rows["right"].tolist() == ["B", "A", "A", "B"]
    assert rows["true"].tolist() == ["positive", "positive", "negative", "negative"]
    assert rows["prob_a"].tolist() == [0.2, 0.9, 0.1, 0.6]
    assert rows["prob_b"].tolist() == [0.95, 0.3, 0.7, 0.45]
    assert rows["gap"].tolist() == pytest.approx([0.75, 0.6, 0.6, 0.15])
    assert rows["text"].isna().all() and rows["length"].isna().all()
    assert (diff.paired.n, diff.paired.test.b, diff.paired.test.c) == (5, 2, 2)
    assert diff.paired.test.p_value == 1.0
    assert (diff.paired.accuracy_a, diff.paired.accuracy_b) == (0.6, 0.6)


def test_review_diff_keeps_review_texts_from_either_run() -> None:
    a = preds(["r0", "r1"], [1, 0], [0.9, 0.8]).assign(text=["Loved it.", None])
    b = preds(["r0", "r1"], [1, 0], [0.1, 0.2]).assign(text=[None, "Hated <b>it</b>."])
    rows = review_diff(a, b).rows.set_index("review_id")
    assert rows.loc["r0", "text"] == "Loved it." and rows.loc["r0", "length"] == 9
    assert rows.loc["r1", "text"] == "Hated <b>it</b>." and rows.loc["r1", "right"] == "B"


def test_review_diff_of_identical_runs_is_empty_with_p_one() -> None:
    a = preds(["r0", "r1"], [1, 0], [0.9, 0.8])
    diff = review_diff(a, a)
    assert diff.rows.empty and list(diff.rows.columns)[:3] == ["review_id", "label", "true"]
    assert (diff.paired.n, diff.paired.test.p_value) == (2, 1.0)


def test_review_diff_refuses_runs_scored_on_other_reviews_or_other_labels() -> None:
    test_run = preds(["test/pos/0", "test/neg/1"], [1, 0], [0.9, 0.2])
    trial = preds(["train/pos/7"], [1], [0.6])
    with pytest.raises(TrainerError, match="share no scored review .*pick two stages"):
        review_diff(test_run, trial)
    with pytest.raises(TrainerError, match="different labels"):
        review_diff(test_run, preds(["test/pos/0"], [0], [0.9]))


def test_review_diff_pairs_two_trials_read_back_from_the_store(tmp_path) -> None:
    from storage.records import Predictions
    from storage.store import open_store
    from trainer.metrics import evaluate

    ids, labels = ("train/pos/1", "train/neg/2", "train/pos/3"), (1, 0, 1)
    texts = ("A fine film.", "Dull.", "Great fun.")
    with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        run_ids = []
        for trial, probs in ((0, (0.8, 0.7, 0.9)), (1, (0.4, 0.3, 0.6))):
            spec = RunSpec("trial", "tiny", "validation", "d", study="s", trial=trial)
            run_ids.append(store.save_run(spec, evaluate(labels, probs, n_bootstrap=0),
                                          Predictions(ids, labels, probs, texts)))
        diff = review_diff(*(store.predictions(i) for i in run_ids))
    assert diff.rows[["review_id", "right", "text"]].values.tolist() == [
        ["train/pos/1", "A", "A fine film."], ["train/neg/2", "B", "Dull."]]
    assert diff.paired.n == 3
