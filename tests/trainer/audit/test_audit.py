"""The audit end to end on built data: every part stored, resumable, empty where nothing is."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storage.records import BehaviourResult, Evaluation, Predictions, RunSpec
from storage.store import Store, open_store
from tests.trainer.audit.built_data import planted, split, write_parquet
from trainer import stages
from trainer.audit.audit import run_audit
from trainer.cli import main
from trainer.config import Config
from trainer.errors import TrainerError
from trainer.splits import Dataset


class StubBehaviour:
    """behaviour_results's signature: records each call, scores the texts, returns one result."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, predict_proba, *, model: str, run_id: int | None, texts, seed: int,
                 extra_cases=()) -> list[BehaviourResult]:
        probs = predict_proba(["a great film", "an awful film"])
        self.calls.append({"model": model, "run_id": run_id, "texts": texts, "seed": seed,
                           "extra_cases": list(extra_cases), "probs": probs})
        return [BehaviourResult(run_id, model, "stub test", "MFT", 2, 1, 0.1, 0.9)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    yield opened
    opened.close()


def config_for(tmp_path: Path, **changes: Any) -> Config:
    return Config(**{"db": "sqlite://", "data": "/built/planted", "seed": 0,
                     "artifacts": str(tmp_path / "artifacts"), **changes})


def stored_baseline(store: Store, data: Dataset, config: Config) -> int:
    ctx = stages.Context(config, store, progress=False, _data=data)
    return stages.baseline(ctx).id


def save_pretrained(store: Store, data: Dataset, max_length: int = 16) -> int:
    """A pretrained run (without a loadable model) on the first 20 test reviews."""
    test = data.test.take(np.arange(20))
    probs = np.where(test.labels == 1, 0.8, 0.3)
    evaluation = Evaluation(len(test), {"accuracy": 1.0}, {}, ((10, 0), (0, 10)))
    spec = RunSpec("pretrained", "some-model", "test", data.source, artifact="/no/such/model",
                   config={"max_length": max_length})
    return store.save_run(spec, evaluation, Predictions(test.ids, tuple(test.labels.tolist()),
                                                        tuple(probs.tolist())))


def test_the_audit_stores_every_part_for_the_planted_data(store: Store, tmp_path: Path) -> None:
    data, config = planted(), config_for(tmp_path)
    baseline_id = stored_baseline(store, data, config)
    stub = StubBehaviour()
    audit = run_audit(store, data, config, progress=False, behaviour=stub)

    assert audit.id is not None and store.latest_audit(data.source).id == audit.id
    assert sorted((g.kind, g.scope) for g in audit.duplicates) == [
        ("exact", "cross"), ("exact", "test"), ("exact", "train"), ("near", "train")]
    assert audit.leaked_test_ids == ("test/pos/5",)
    by_split = {s: [i for i in audit.label_issues if i.split == s] for s in ("train", "test")}
    assert by_split["train"][0].review_id == "train/neg/12"  # the planted flipped label
    assert audit.config["label_issues"]["train"]["n"] == 60
    assert audit.config["label_issues"]["test"]["run_id"] == baseline_id
    assert all(f"(run {baseline_id})" in i.method for i in by_split["test"])
    assert {(s.by, s.run_id) for s in audit.slices} == {("length", baseline_id),
                                                       ("rating", baseline_id)}
    assert sum(s.n for s in audit.slices if s.by == "length") == 40
    assert audit.truncation == ()
    (call,) = stub.calls
    assert (call["run_id"], call["seed"], call["extra_cases"]) == (baseline_id, 0, [])
    assert call["model"] == f"TF-IDF baseline: tfidf-logreg (run {baseline_id})"
    assert call["texts"] == data.test.texts
    assert call["probs"][0] > call["probs"][1]  # the stored baseline itself was called
    assert [b.test for b in audit.behaviour] == ["stub test"]
    assert set(audit.config["seconds"]) == {"duplicates", "label_issues", "slices",
                                            "truncation", "behaviour"}
    assert audit.duration_s is not None


def test_an_audit_with_the_same_fingerprint_is_not_redone(store: Store, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    data, config = planted(), config_for(tmp_path)
    stored_baseline(store, data, config)
    stub = StubBehaviour()
    first = run_audit(store, data, config, progress=False, behaviour=stub)
    with caplog.at_level(logging.INFO):
        again = run_audit(store, data, config, progress=False, behaviour=stub)
    assert again.id == first.id and len(stub.calls) == 1
    assert "not redone" in caplog.text

    other_seed = run_audit(store, data, config_for(tmp_path, seed=1), progress=False,
                           behaviour=stub)
    assert other_seed.id != first.id
    pretrained_id = save_pretrained(store, data)
    with caplog.at_level(logging.WARNING):
        with_new_run = run_audit(store, data, config, progress=False, behaviour=stub)
    assert with_new_run.id not in (first.id, other_seed.id)
    assert pretrained_id in with_new_run.config["runs"]
    assert "behaviour of pretrained model: some-model" in caplog.text  # its model is gone
    assert "truncation of run" in caplog.text
    assert {s.run_id for s in with_new_run.slices} == {pretrained_id,
                                                       *with_new_run.config["models"][:1]}


def test_user_behaviour_cases_reach_the_behaviour_tests_and_change_the_fingerprint(
    store: Store, tmp_path: Path
) -> None:
    data, config = planted(), config_for(tmp_path)
    stored_baseline(store, data, config)
    stub = StubBehaviour()
    plain = run_audit(store, data, config, progress=False, behaviour=stub)
    cases = tmp_path / "cases.jsonl"
    case = {"test": "my negation", "kind": "MFT", "text": "Not a bad film.",
            "expected": "positive"}
    cases.write_text(json.dumps(case) + "\n", encoding="utf-8")
    with_cases = run_audit(store, data, config, progress=False, behaviour=stub,
                           behaviour_file=str(cases))
    assert with_cases.id != plain.id
    assert stub.calls[-1]["extra_cases"] == [case]
    assert with_cases.config["user_cases"] == 1


def test_a_chosen_trial_is_audited_too_and_a_missing_one_is_a_clear_error(
    store: Store, tmp_path: Path
) -> None:
    data, config = planted(), config_for(tmp_path, study="s")
    validation = data.train.take(np.arange(10), name="validation")
    spec = RunSpec("trial", "m", "validation", data.source, study="s", trial=2)
    trial_id = store.save_run(spec, Evaluation(10, {}, {}, ((5, 0), (0, 5))),
                              validation.predictions(np.full(10, 0.6)))
    audit = run_audit(store, data, config, progress=False, behaviour=StubBehaviour(), trial=2)
    assert audit.config["trial_run"] == trial_id and trial_id in audit.config["models"]
    assert sum(s.n for s in audit.slices if s.run_id == trial_id and s.by == "length") == 10
    with pytest.raises(TrainerError, match="has no stored trial 7"):
        run_audit(store, data, config, progress=False, behaviour=StubBehaviour(), trial=7)


def test_a_tiny_source_without_overlap_or_runs_gives_empty_tables(store: Store,
                                                                  tmp_path: Path) -> None:
    data = Dataset(split("train", 6, 21), split("test", 4, 22, ratings=False), "/built/tiny")
    stub = StubBehaviour()
    audit = run_audit(store, data, config_for(tmp_path, data="/built/tiny"), progress=False,
                      behaviour=stub)
    assert (audit.duplicates, audit.label_issues, audit.behaviour, audit.slices,
            audit.truncation, audit.leaked_test_ids) == ((), (), (), (), (), ())
    assert audit.config["label_issues"]["train"]["method"] is None
    assert stub.calls == []


def test_audit_command_after_baseline_reports_deduplicated_figures_and_the_audit_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_parquet(planted(), tmp_path / "data")
    common = ["--data", str(folder), "--db", f"sqlite:///{tmp_path / 'cli.db'}"]
    assert main(["--quiet", "baseline", *common, "--artifacts", str(tmp_path / "art")]) == 0
    assert main(["--quiet", "audit", *common]) == 0
    printed = capsys.readouterr().out
    assert "leaked test reviews (text also in train): 1" in printed
    assert "deduplicated test" in printed

    assert main(["report", "--json", "--db", common[3]]) == 0
    report = json.loads(capsys.readouterr().out)
    (run,) = report["runs"]
    assert (run["deduplicated_test"]["n"], run["deduplicated_test"]["left_out"]) == (39, 1)
    section = report["audit"]
    assert section["duplicates"]["groups"] == {"exact": {"train": 1, "test": 1, "cross": 1},
                                               "near": {"train": 1, "test": 0, "cross": 0}}
    assert section["duplicates"]["conflicting"]["exact"] == {"train": 1, "test": 0, "cross": 0}
    assert section["leaked_test_reviews"] == 1
    assert section["label_issues"]["test"]["n"] == 40
    assert {b["test"] for b in section["behaviour"]} >= {"negation: not good → negative"}
    assert {s["by"] for s in section["slices"]} == {"length", "rating"}  # parquet ratings kept

    assert main(["--quiet", "audit", *common, "--trial", "3"]) == 1
    assert "has no stored trial 3" in capsys.readouterr().err
