"""Contract suite for the Store, run on SQLite file, SQLite memory and PostgreSQL."""
from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, exc

from storage import Predictions, StorageError
from storage.store import Store
from tests.storage import samples


def test_run_round_trips_every_field(store: Store) -> None:
    spec, evaluation = samples.spec(), samples.evaluation()
    run_id = store.save_run(spec, evaluation)
    run = store.get_run(run_id)

    assert run.id == run_id
    assert run.spec == spec
    assert run.created_at.tzinfo is not None and run.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - run.created_at) < timedelta(minutes=5)
    got = run.evaluation
    assert got.n == evaluation.n
    assert math.isnan(got.scalars["roc_auc"])
    assert {k: v for k, v in got.scalars.items() if k != "roc_auc"} == {
        "accuracy": 0.75, "loss": 0.5, "ece": 0.0625
    }
    assert got.per_class == evaluation.per_class
    assert got.confusion == ((1, 1), (0, 2))
    assert got.curves == evaluation.curves
    assert got.curves["roc"].w[0] == math.inf


def test_nan_per_class_metrics_and_missing_optionals_round_trip(store: Store) -> None:
    spec = samples.spec(config={}, config_hash=None, warnings=(), artifact=None, duration_s=None)
    base = samples.evaluation()
    evaluation = type(base)(
        n=2, scalars={}, per_class={"positive": type(base.per_class["positive"])(
            precision=math.nan, recall=0.0, f1=math.nan, support=0
        )}, confusion=((2, 0), (0, 0)),
    )
    run = store.get_run(store.save_run(spec, evaluation))
    assert run.spec == spec
    metrics = run.evaluation.per_class["positive"]
    assert math.isnan(metrics.precision) and math.isnan(metrics.f1)
    assert (metrics.recall, metrics.support) == (0.0, 0)
    assert run.evaluation.curves == {} and run.evaluation.scalars == {}


def test_predictions_and_texts_round_trip_in_saved_order(store: Store) -> None:
    preds = samples.predictions(n=12)
    run_id = store.save_run(samples.spec(), samples.evaluation(), preds)
    frame = store.predictions(run_id)

    assert list(frame.columns) == ["review_id", "label", "prob", "text", "length"]
    assert list(frame["review_id"]) == list(preds.review_ids)
    assert list(frame["label"]) == list(preds.labels)
    assert list(frame["prob"]) == pytest.approx(list(preds.probs))
    assert list(frame["text"]) == list(preds.texts)
    assert list(frame["length"]) == [float(len(t)) for t in preds.texts]


def test_predictions_can_skip_the_texts(store: Store) -> None:
    preds = samples.predictions(n=7)
    run_id = store.save_run(samples.spec(), samples.evaluation(), preds)
    frame = store.predictions(run_id, texts=False)
    assert list(frame.columns) == ["review_id", "label", "prob"]
    assert list(frame["review_id"]) == list(preds.review_ids)
    assert list(frame["prob"]) == pytest.approx(list(preds.probs))
    with pytest.raises(StorageError, match="4242"):
        store.predictions(4242, texts=False)


def test_predictions_without_texts_have_none_text_and_nan_length(store: Store) -> None:
    run_id = store.save_run(samples.spec(), samples.evaluation(), samples.predictions(texts=False))
    frame = store.predictions(run_id)
    assert len(frame) == 4
    assert frame["text"].tolist() == [None] * 4
    assert frame["length"].isna().all()
    assert samples.row_counts(store)["sentiment_reviews"] == 0


def test_review_texts_are_stored_once_per_split(store: Store) -> None:
    first = samples.predictions(n=6)
    store.save_run(samples.spec("baseline"), samples.evaluation(), first)
    wider = samples.predictions(n=9)
    changed = Predictions(wider.review_ids, wider.labels, wider.probs,
                          tuple("changed" for _ in wider.review_ids))
    second = store.save_run(samples.spec("pretrained"), samples.evaluation(), changed)
    other_split = store.save_run(samples.spec("finetuned", split="validation"),
                                 samples.evaluation(), first)

    assert samples.row_counts(store)["sentiment_reviews"] == 9 + 6
    texts = store.predictions(second)["text"].tolist()
    assert texts[:6] == list(first.texts)  # existing texts are kept, not rewritten
    assert texts[6:] == ["changed"] * 3
    assert store.predictions(other_split)["text"].tolist() == list(first.texts)


def test_same_study_trial_stage_replaces_the_run_without_orphans(store: Store) -> None:
    spec = samples.spec("trial", study="s1", trial=3, split="validation")
    old = store.save_run(spec, samples.evaluation(accuracy=0.5), samples.predictions(n=5))
    once = samples.row_counts(store)
    new = store.save_run(spec, samples.evaluation(accuracy=0.9), samples.predictions(n=5))

    assert new != old
    assert samples.row_counts(store) == once
    assert [r.id for r in store.list_runs()] == [new]
    assert store.get_run(new).evaluation.scalars["accuracy"] == 0.9
    with pytest.raises(StorageError, match=str(old)):
        store.get_run(old)
    # another stage or trial of the same study is a different run
    store.save_run(samples.spec("finetuned", study="s1", trial=3), samples.evaluation())
    store.save_run(samples.spec("trial", study="s1", trial=4), samples.evaluation())
    assert len(store.list_runs()) == 3


def test_runs_without_study_are_never_replaced(store: Store) -> None:
    first = store.save_run(samples.spec("baseline"), samples.evaluation())
    second = store.save_run(samples.spec("baseline"), samples.evaluation())
    assert [r.id for r in store.list_runs()] == [first, second]


def test_failing_save_leaves_nothing_behind(store: Store) -> None:
    good = samples.predictions(n=4)
    # A missing text violates NOT NULL after the run, its metrics and one text were written.
    bad = Predictions(good.review_ids, good.labels, good.probs, ("ok", None, "x", "y"))
    with pytest.raises(StorageError) as caught:
        store.save_run(samples.spec(), samples.evaluation(), bad)
    assert isinstance(caught.value.__cause__, exc.IntegrityError)
    assert set(samples.row_counts(store).values()) == {0}


def test_failing_replacement_keeps_the_previous_run(store: Store) -> None:
    spec = samples.spec("trial", study="s", trial=0)
    old = store.save_run(spec, samples.evaluation(), samples.predictions(n=3))
    before = samples.row_counts(store)
    good = samples.predictions(n=4, prefix="other/")
    bad = Predictions(good.review_ids, good.labels, good.probs, ("a", "b", None, "d"))
    with pytest.raises(StorageError):
        store.save_run(spec, samples.evaluation(), bad)
    assert samples.row_counts(store) == before
    assert store.get_run(old).spec == spec


@pytest.mark.parametrize("bad", [
    Predictions(("a", "b"), (0,), (0.1, 0.2)),
    Predictions(("a", "b"), (0, 1), (0.1, 0.2), ("only one text",)),
    Predictions(("a",), ("not a label",), (0.1,)),
])
def test_inconsistent_predictions_are_refused(store: Store, bad: Predictions) -> None:
    with pytest.raises(StorageError, match="Expected"):
        store.save_run(samples.spec(), samples.evaluation(), bad)
    assert set(samples.row_counts(store).values()) == {0}


def test_unknown_stage_is_refused(store: Store) -> None:
    with pytest.raises(StorageError, match="'final'"):
        store.save_run(samples.spec("final"), samples.evaluation())


def test_list_runs_filters_by_stage_and_study_in_id_order(store: Store) -> None:
    ids = [
        store.save_run(samples.spec("baseline"), samples.evaluation()),
        store.save_run(samples.spec("trial", study="a", trial=0), samples.evaluation()),
        store.save_run(samples.spec("trial", study="b", trial=0), samples.evaluation()),
        store.save_run(samples.spec("finetuned", study="a"), samples.evaluation()),
    ]
    assert [r.id for r in store.list_runs()] == ids
    assert [r.id for r in store.list_runs(stage="trial")] == ids[1:3]
    assert [r.id for r in store.list_runs(study="a")] == [ids[1], ids[3]]
    assert [r.id for r in store.list_runs(stage="trial", study="b")] == [ids[2]]
    assert store.list_runs(stage="pretrained") == []


def test_find_run_returns_the_newest_match(store: Store) -> None:
    store.save_run(samples.spec("baseline", config_hash="h1"), samples.evaluation())
    newest = store.save_run(samples.spec("baseline", config_hash="h1"), samples.evaluation())
    store.save_run(samples.spec("pretrained", config_hash="h1"), samples.evaluation())
    found = store.find_run("baseline", "h1")
    assert found is not None and found.id == newest
    assert store.find_run("baseline", "h2") is None
    assert store.find_run("finetuned", "h1") is None


def test_trial_runs_and_studies(store: Store) -> None:
    assert store.studies() == []
    ids = {t: store.save_run(samples.spec("trial", study="zeta", trial=t), samples.evaluation())
           for t in (2, 0, 1)}
    store.save_run(samples.spec("finetuned", study="zeta"), samples.evaluation())
    store.save_run(samples.spec("trial", study="alpha", trial=0), samples.evaluation())
    store.save_run(samples.spec("baseline"), samples.evaluation())

    runs = store.trial_runs("zeta")
    assert {t: r.id for t, r in runs.items()} == ids
    assert all(r.spec.stage == "trial" for r in runs.values())
    assert store.trial_runs("missing") == {}
    assert store.studies() == ["alpha", "zeta"]


def test_run_specs_list_every_run_without_its_metrics(store: Store) -> None:
    assert store.run_specs() == {}
    specs = [samples.spec("baseline"), samples.spec("trial", study="s", trial=3),
             samples.spec("finetuned", study="s")]
    ids = [store.save_run(spec, samples.evaluation()) for spec in specs]
    assert store.run_specs() == dict(zip(ids, specs, strict=True))
    assert list(store.run_specs()) == ids  # id order
    assert store.run_specs(stage="trial") == {ids[1]: specs[1]}
    assert list(store.run_specs(study="s")) == ids[1:]
    assert store.run_specs(stage="finetuned", study="s") == {ids[2]: specs[2]}
    assert store.run_specs(stage="trial", study="other") == {}


def test_missing_ids_raise_storage_error_naming_the_id(store: Store) -> None:
    with pytest.raises(StorageError, match="4242"):
        store.get_run(4242)
    with pytest.raises(StorageError, match="4242"):
        store.predictions(4242)
    with pytest.raises(StorageError, match="4242"):
        store.delete_run(4242)


def test_delete_run_cascades_but_keeps_review_texts(store: Store) -> None:
    run_id = store.save_run(samples.spec(), samples.evaluation(), samples.predictions(n=5))
    store.delete_run(run_id)
    counts = samples.row_counts(store)
    assert counts.pop("sentiment_reviews") == 5
    assert set(counts.values()) == {0}
    assert store.list_runs() == []


def test_list_runs_loads_many_runs_in_a_few_queries(store: Store) -> None:
    for trial in range(120):
        store.save_run(samples.spec("trial", study="big", trial=trial), samples.evaluation())
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(store._engine, "before_cursor_execute", count)
    try:
        runs = store.list_runs(study="big")
    finally:
        event.remove(store._engine, "before_cursor_execute", count)
    assert len(runs) == 120
    assert all(r.evaluation.curves["roc"].w[0] == math.inf for r in runs)
    assert all(r.evaluation.confusion == ((1, 1), (0, 2)) for r in runs)
    assert len(statements) <= 10  # one for runs plus one per child table, never one per run


def test_get_runs_reads_the_named_runs_that_exist_in_id_order(store: Store) -> None:
    ids = [store.save_run(samples.spec("trial", study="s", trial=t), samples.evaluation())
           for t in range(3)]
    got = store.get_runs([ids[2], ids[0], ids[0], 10_000])
    assert [r.id for r in got] == [ids[0], ids[2]]
    assert got[0].spec == store.get_run(ids[0]).spec
    assert len(store.get_runs(range(1, 1_200))) == 3  # over 500 ids: read in chunks
    assert store.get_runs([]) == []
