"""The stages put on the same reviews: shared accuracies with n and interval, and shortfalls."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from storage.records import Evaluation, Predictions, Run, RunSpec
from trainer.comparison import compared_groups, shared_accuracies, shortfall_sentence
from trainer.metrics import evaluate, wilson_interval
from trainer.report import SHARED_HEADER, build_report, empty_report, render

IDS = [f"test/{i}" for i in range(10)]
LABELS = [i % 2 for i in range(10)]
BASELINE = [0.2, 0.8, 0.3, 0.7, 0.6, 0.9, 0.1, 0.4, 0.2, 0.8]  # 8 of 10 right; first 4 all right
TUNED = [0.6, 0.4, 0.4, 0.9]  # the first 4 reviews: 2 right


def preds(ids: list[str], labels: list[int], probs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"review_id": ids, "label": labels, "prob": probs})


def run(run_id: int, stage: str, *, source: str = "d", split: str = "test",
        config: dict | None = None) -> Run:
    evaluation = Evaluation(n=4, scalars={}, per_class={}, confusion=((1, 1), (1, 1)))
    return Run(run_id, RunSpec(stage, "m", split, source, config=config or {}),
               datetime(2026, 1, 1, tzinfo=UTC), evaluation)


def test_shared_accuracies_put_every_run_on_the_reviews_all_of_them_scored() -> None:
    shared = shared_accuracies({1: preds(IDS, LABELS, BASELINE),
                                3: preds(IDS[3::-1], LABELS[3::-1], TUNED[::-1]),
                                2: preds(IDS[:4] + ["test/x"], LABELS[:4] + [1],
                                         [0.5, 0.5, float("nan"), 0.5, 0.5])})
    # shared and scored by all three: test/0, test/1, test/3 (run 2 left test/2 unscored)
    assert {i: s["n"] for i, s in shared.items()} == {1: 3, 2: 3, 3: 3}
    assert shared[1]["accuracy"] == 1.0
    assert shared[3]["accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert shared[3]["accuracy_ci95"] == pytest.approx(list(wilson_interval(1, 3)), abs=1e-6)
    assert shared[1]["with"] == [2, 3] and shared[3]["with"] == [1, 2]


@pytest.mark.parametrize("others", [
    {},  # one run: nothing to compare
    {2: preds(["train/0"], [0], [0.1])},  # no shared review
    {2: preds(IDS[:2], [1, 1], [0.9, 0.9])},  # other labels: other data
])
def test_shared_accuracies_are_empty_when_runs_cannot_be_compared(others: dict) -> None:
    assert shared_accuracies({1: preds(IDS, LABELS, BASELINE), **others}) == {}


def test_compared_groups_take_the_newest_test_run_of_each_stage_per_data_source() -> None:
    runs = [run(1, "baseline"), run(2, "pretrained"), run(3, "finetuned"), run(4, "baseline"),
            run(5, "trial", split="validation"), run(6, "baseline", source="other"),
            run(7, "finetuned", source="third"), run(8, "pretrained", source="third")]
    assert [[r.id for r in g] for g in compared_groups(runs)] == [[4, 2, 3], [8, 7]]


def test_shortfall_says_why_from_the_stored_config_and_what_to_change() -> None:
    cpu = run(3, "finetuned", config={"train_size": 64, "max_length": 128,
                                      "best_params": {"num_train_epochs": 2}})
    sentence = shortfall_sentence(cpu, 0.865, 0.575, 200)
    assert sentence.startswith("The fine-tuned model scores 0.575 against the TF-IDF "
                               "baseline's 0.865 on the same 200 test reviews")
    assert "64 training reviews cut to 128 tokens for 2 epochs on a device the run did not " \
           "record" in sentence
    assert sentence.endswith("train on more reviews with --train-size, keep more tokens with "
                             "--max-length or train on a GPU.")
    assert ". " not in sentence and sentence.count(".") == 3  # one sentence, two decimals
    gpu = run(3, "finetuned", config={"train_size": None, "max_length": 512, "device": "cuda:0",
                                      "best_params": {"num_train_epochs": 1}})
    sentence = shortfall_sentence(gpu, 0.9, 0.89, 25000)
    assert "the whole train split cut to 512 tokens for 1 epoch on a GPU (cuda:0)" in sentence
    assert sentence.endswith("to close the gap, tune longer with --trials.")
    multi = run(3, "finetuned", config={"train_size": 400, "final_train_size": 2000,
                                        "trained_on": 2000, "max_length": 256, "device": "cpu"})
    sentence = shortfall_sentence(multi, 0.88, 0.86, 1000)
    assert "fine-tuned on 2,000 training reviews cut to 256 tokens for an unrecorded number " \
           "of epochs on the CPU" in sentence
    assert "train on more reviews with --final-train-size, keep more tokens" in sentence
    frozen = run(3, "finetuned", config={"trained_on": 1500, "max_length": 256, "device": "cpu",
                                         "frozen_layers": 2})
    sentence = shortfall_sentence(frozen, 0.9, 0.86, 1000)
    assert "1,500 training reviews cut to 256 tokens with the embeddings and 1 encoder layer " \
           "frozen for an unrecorded" in sentence
    assert "train every layer with --frozen-layers 0" in sentence
    assert shortfall_sentence(cpu, 0.8, 0.8, 200) is None


def save(store, stage: str, ids: list[str], labels: list[int], probs: list[float],
         config: dict | None = None) -> int:
    spec = RunSpec(stage, "tfidf-logreg" if stage == "baseline" else "minilm", "test", "imdb",
                   config=config or {}, study="s" if stage == "finetuned" else None)
    return store.save_run(spec, evaluate(labels, probs, n_bootstrap=0),
                          Predictions(tuple(ids), tuple(labels), tuple(probs)))


def test_report_shows_the_baseline_on_the_whole_split_and_on_the_stages_reviews(tmp_path) -> None:
    from storage.store import open_store

    with open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        base = save(store, "baseline", IDS, LABELS, BASELINE)
        pre = save(store, "pretrained", IDS[:4], LABELS[:4], [0.5, 0.5, 0.5, 0.5])
        tuned = save(store, "finetuned", IDS[:4], LABELS[:4], TUNED,
                     {"train_size": 64, "max_length": 128})
        report = json.loads(json.dumps(build_report(store)))
    entries = {e["id"]: e for e in report["runs"]}
    assert entries[base]["n"] == 10 and entries[base]["metrics"]["accuracy"] == 0.8  # whole split
    on_shared = entries[base]["on_shared_reviews"]
    assert (on_shared["n"], on_shared["accuracy"], on_shared["with"]) == (4, 1.0, [pre, tuned])
    assert on_shared["accuracy_ci95"] == pytest.approx(list(wilson_interval(4, 4)), abs=1e-6)
    assert entries[tuned]["on_shared_reviews"]["accuracy"] == 0.5
    (shortfall,) = report["shortfalls"]
    assert (shortfall["run_id"], shortfall["baseline_run_id"]) == (tuned, base)
    assert "64 training reviews cut to 128 tokens" in shortfall["sentence"]
    text = render(report)
    assert SHARED_HEADER in text.splitlines()[1]
    assert "1.000 [0.510, 1.000] (4)" in text  # the baseline, on the 4 shared reviews
    assert f"runs {base}, {pre}, {tuned}: compared on the 4 test reviews" in text
    assert f"note (run {tuned}): The fine-tuned model scores 0.500" in text


def test_report_keeps_its_keys_and_leaves_runs_out_of_a_comparison(tmp_path) -> None:
    from storage.store import open_store

    with open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        save(store, "baseline", IDS, LABELS, BASELINE)
        report = build_report(store)
    assert set(report) == set(empty_report()) == {"runs", "studies", "audit", "shortfalls"}
    (entry,) = report["runs"]
    assert entry["on_shared_reviews"] is None and report["shortfalls"] == []
    assert {"id", "stage", "model", "split", "n", "metrics", "warnings"} <= set(entry)
    assert SHARED_HEADER not in render(report)
