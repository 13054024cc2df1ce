"""Every page under AppTest on missing, empty, locked, small and 1,000-trial databases."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from dashboard import charts as charts_module
from dashboard import study_views as sv
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
              "Parallel coordinates": ("parallel coordinates",), "Contour": ("contour",),
              "Slices": ("slice plots",),
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
        if label == "Importance":  # 8 complete trials: too few to rate (see below)
            continue
        open_tab(at, label)
        no_exception(at)
        shown = [json.dumps(c.get("title", "")) for c in charts(at)]
        assert all(any(title in s for s in shown) for title in titles), (label, shown)
    open_tab(at, "Importance")
    assert "Importance is not drawn: only 8 complete trials" in texts(at.info)
    assert not charts(at)  # no confident bars under the warning


def test_study_explorer_filters_and_shows_the_chosen_trial(open_page: Open,
                                                           small_db: str) -> None:
    at = open_page(small_db, "study")
    at.multiselect(key="study_states").set_value(["PRUNED"]).run()
    no_exception(at)
    shown = at.dataframe(key="study_table").value
    assert set(shown["state"]) == {"PRUNED"}
    pruned = int(shown["trial"].iloc[0])
    at.number_input(key="study_trial").set_value(pruned).run()
    no_exception(at)
    assert "state PRUNED" in texts(at.caption)
    assert len(table_with(at, "support")) == 2
    titles = [c.get("title") for c in charts(at)]
    assert charts_module.CONFUSION_TITLE in titles and "ROC curve" in titles


def test_selecting_a_trial_row_shows_that_trials_diagnostics(open_page: Open,
                                                             small_db: str) -> None:
    at = open_page(small_db, "study")
    at.multiselect(key="study_states").set_value(["COMPLETE"]).run()
    third = int(at.dataframe(key="study_table").value["trial"].iloc[2])
    at.session_state["study_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    no_exception(at)
    assert f"Trial {third}, the selected row" in texts(at.caption)
    assert "state COMPLETE" in texts(at.caption)
    assert charts_module.CONFUSION_TITLE in [c.get("title") for c in charts(at)]


@pytest.mark.parametrize("evaluator", ["fANOVA", "mean decrease impurity", "PED-ANOVA"])
def test_importance_for_any_evaluator_and_a_per_class_target(open_page: Open, big_db: str,
                                                             evaluator: str) -> None:
    at = open_tab(open_page(big_db, "study"), "Importance")
    at.selectbox(key="study_evaluator").set_value(evaluator)
    at.selectbox(key="study_target").set_value("f1_negative").run()
    no_exception(at)
    found = chart(at, "hyperparameter importance")
    assert found["encoding"]["x"]["title"] == "importance for f1_negative"


def open_study_linked(monkeypatch: pytest.MonkeyPatch, url: str, trial: str) -> AppTest:
    """The study explorer opened from a link that ends in ?trial=<trial>."""
    from dashboard import resources
    from tests.dashboard.conftest import APP, PAGE_TIMEOUT_S

    monkeypatch.setenv("SENTIMENT_DB", url)
    resources.databases.clear()
    at = AppTest.from_file(str(APP), default_timeout=PAGE_TIMEOUT_S)
    at.run()
    at.query_params["trial"] = trial
    return at.switch_page("app_pages/study.py").run()


def best_trial(at: AppTest) -> int:
    table = at.dataframe(key="study_table").value
    done = table[table["state"] == "COMPLETE"]
    return int(done.loc[done["value"].idxmax(), "trial"])


def test_study_link_opens_that_trial_and_a_pick_writes_the_link(
        monkeypatch: pytest.MonkeyPatch, small_db: str) -> None:
    at = open_study_linked(monkeypatch, small_db, "7")
    no_exception(at)
    assert at.number_input(key="study_trial").value == 7
    assert "Trial 7: state COMPLETE" in texts(at.caption)
    at.number_input(key="study_trial").set_value(3).run()
    no_exception(at)
    assert at.query_params["trial"] == "3" and "Trial 3: state" in texts(at.caption)
    best = best_trial(at)
    at.button(key="study_best").click().run()
    assert at.number_input(key="study_trial").value == best
    assert at.query_params["trial"] == str(best)


def test_study_opens_on_the_best_trial_and_says_so_when_a_link_is_wrong(
        monkeypatch: pytest.MonkeyPatch, small_db: str) -> None:
    at = open_study_linked(monkeypatch, small_db, "999")
    no_exception(at)
    assert "asks for trial 999, which this study does not have" in \
        texts(at.warning).replace("\\", "")
    best = best_trial(at)
    assert at.number_input(key="study_trial").value == best
    assert at.button(key="study_best").label == f"Show the best trial ({best})"
    assert f"Trial {best}: state COMPLETE" in texts(at.caption)
    assert "the study's best trial" in texts(at.caption)


def test_study_headline_and_table_give_n_and_the_95_interval(open_page: Open,
                                                             small_db: str) -> None:
    import re

    at = open_page(small_db, "study")
    no_exception(at)
    best = best_trial(at)
    assert re.search(rf"Best: trial {best}, value 0\.\d{{4}} on 80 validation reviews, "
                     r"95% interval 0\.\d{3}–0\.\d{3}\.", texts(at.caption))
    table = at.dataframe(key="study_table").value
    assert {"trial", "value", "95% interval", "n (reviews)", "duration (s)", "learning rate",
            "batch size"} <= set(table.columns)
    done = table[table["state"] == "COMPLETE"]
    assert (done["n (reviews)"] == 80).all() and done["95% interval"].str.match(
        r"0\.\d{3}–[01]\.\d{3}").all()
    assert table["learning rate"].str.fullmatch(r"\d\.\d{1,2}e-0\d").all()  # 3 significant


def test_study_filters_show_running_trials_and_reset_when_the_database_changes(
    open_page: Open, small_db: str, xss_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTIMENT_DASHBOARD_URLS", f"small={small_db} hostile={xss_db}")
    at = open_page(small_db, "study")
    assert "RUNNING" in set(at.dataframe(key="study_table").value["state"])
    at.multiselect(key="study_states").set_value(["PRUNED"]).run()
    at.number_input(key="study_trial").set_value(1).run()
    at.sidebar.selectbox(key="database_choice").set_value("hostile").run()
    no_exception(at)
    assert at.multiselect(key="study_states").value == ["COMPLETE", "PRUNED", "FAIL", "RUNNING",
                                                        "WAITING"]
    table = at.dataframe(key="study_table").value
    assert len(table) == 12 and "RUNNING" in set(table["state"])
    assert at.number_input(key="study_trial").value == best_trial(at)


def test_trial_filters_survive_a_visit_to_another_tab(open_page: Open, small_db: str) -> None:
    at = open_page(small_db, "study")
    at.toggle(key="study_descending").set_value(True).run()
    open_tab(at, "History")
    open_tab(at, "Trials")
    no_exception(at)
    assert at.multiselect(key="study_states").value == list(sv.STATES)
    assert at.toggle(key="study_descending").value is True
    assert len(at.dataframe(key="study_table").value) == 12


def test_study_brush_on_parallel_coordinates_lists_the_trials_inside(open_page: Open,
                                                                    small_db: str) -> None:
    at = open_tab(open_page(small_db, "study"), "Parallel coordinates")
    assert "Drag a box over one or more axes" in texts(at.caption)
    lines = chart(at, "parallel coordinates")
    params = lines.get("params", []) + lines["layer"][0].get("params", [])
    assert [p["name"] for p in params if p.get("select", {}).get("type") == "interval"] == \
        ["brush"]
    at.session_state["study_parallel"] = {"selection": {"brush": {"index": [-0.2, 0.2],
                                                                  "position": [0.5, 1.0]}}}
    at.run()
    no_exception(at)
    rows = chart(at, "parallel coordinates")["rows"]
    inside = {r["number"] for r in rows if r.get("index") == 0 and "number" in r
              and 0.5 <= r["position"] <= 1.0}
    listed = table_with(at, "95% interval")  # the only table on this tab
    assert inside and set(listed["trial"]) == inside
    assert f"{len(inside)} of 8 complete trials inside the brushed range" in texts(at.caption)


def test_study_contour_plots_the_two_chosen_parameters(open_page: Open, small_db: str) -> None:
    at = open_tab(open_page(small_db, "study"), "Contour")
    at.selectbox(key="study_contour_x").set_value("warmup_ratio")
    at.selectbox(key="study_contour_y").set_value("weight_decay").run()
    no_exception(at)
    contour = chart(at, "contour")
    assert contour["title"] == "contour: objective over warmup ratio and weight decay"
    assert len({r["number"] for r in contour["rows"]}) == 8
    at.selectbox(key="study_contour_y").set_value("warmup_ratio").run()
    assert "Pick two different hyperparameters" in texts(at.info)


def test_evaluation_draws_only_the_open_curve_tab(open_page: Open, small_db: str) -> None:
    at = open_page(small_db, "evaluation")
    titles = [c.get("title") for c in charts(at)]
    assert "ROC curve" in titles and "precision-recall curve" not in titles
    for tab, title in (("Precision-recall", "precision-recall curve"),
                       ("Calibration", "calibration (reliability diagram)")):
        at.session_state["eval_curve_tab"] = tab
        at.run()
        no_exception(at)
        titles = [c.get("title") for c in charts(at)]
        assert title in titles and "ROC curve" not in titles, titles


def test_evaluation_threshold_slider_recomputes_the_confusion(open_page: Open,
                                                              small_db: str) -> None:
    at = open_page(small_db, "evaluation")
    no_exception(at)
    assert [m.label for m in at.metric] == ["accuracy", "ROC AUC", "PR AUC", "log loss", "ECE",
                                            "Brier", "accuracy at threshold 0.50"]

    def predicted_positive() -> int:
        title = charts_module.CONFUSION_TITLE
        rows = next(c for c in charts(at) if c.get("title") == title)["rows"]
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
        open_tab(at, "Importance")
        assert "hyperparameter importance" in [c.get("title") for c in charts(at)]
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
