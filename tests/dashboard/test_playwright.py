"""Playwright clicks through the dashboard in Debian's Chromium on a seeded database (issue 14).

Each step prints its time; `python -m bench dashboard --browser` times the same steps on the
1,000-trial benchmark database.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from storage.store import open_store
from tests.ci import missing
from tests.dashboard import builders
from tests.dashboard import playwright_browser as pw
from tests.dashboard.browser import dashboard

OTHER_STUDY = "imdb-finetune-rerun"
PAGES = {"/": "Overview", "/study": "Study explorer", "/evaluation": "Evaluation",
         "/live": "Live prediction", "/data": "Data & models"}
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # listed by its hub id; never loaded here
UNTRAINED_WARNING = "the model has a new, untrained sentiment head: its score is chance"
NEGATIVE_REVIEW = "Dull, boring and painful: an awful, tedious film with a clumsy script."
UPLOADED = 'id,text,source\n7,"A wonderful, moving film.",imdb\n' \
           '8,"Dull and boring, an awful mess.",imdb\n9,"Superb cast; charming.",letterboxd\n'


@pytest.fixture(scope="module")
def chromium() -> str:
    if pw.playwright_missing():
        missing("the playwright package (pip install -r requirements.txt)")
    binary = pw.chromium_path()
    if binary is None:
        missing("chromium (apt-get install chromium)")
    return binary


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three stages on 1,000 reviews written with IMDB's <br /> breaks (a real saved baseline; a
    hub encoder whose sentiment head was never trained), a 300-trial study with its trial runs,
    and a second, smaller study."""
    folder = tmp_path_factory.mktemp("playwright")
    url = f"sqlite:///{folder / 'seeded.db'}"
    plain = builders.synthetic_reviews(1000)
    reviews = builders.Reviews(plain.ids, plain.labels,
                               tuple(f"{t}<br /><br />Second paragraph." for t in plain.texts))
    with open_store(url) as store:
        builders.fill_stages(store, reviews, folder / "artifacts")
        builders.save_stage(store, "pretrained", reviews, 0.0, seed=4, model=ENCODER,
                            artifact=ENCODER, warnings=(UNTRAINED_WARNING,))
        study = builders.add_study(url, builders.STUDY,
                                   builders.make_trials(300, seed=7, running=0))
        validation = builders.synthetic_reviews(100, seed=5, prefix="train")
        builders.add_trial_runs(store, study, validation)
        builders.add_study(url, OTHER_STUDY, builders.make_trials(15, seed=3, running=0))
    return url


@pytest.fixture(scope="module")
def visitor(chromium: str, seeded_db: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[pw.Session]:
    """One browser tab on `streamlit run`, the toolbar as the repository's config sets it."""
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with dashboard(seeded_db, log, toolbar=None) as base, pw.chromium_page() as page:
        session = pw.Session(page, base)
        yield session
        print("timings (s):", session.timings)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _labels(axis: dict) -> list[str]:
    return [label for label in axis["labels"] if label]  # overlapping labels are drawn empty


def _axis(chart: dict, title: str) -> dict:
    return next(a for a in chart["axes"] if a["title"] == title)


def _switch_to_other_study(s: pw.Session, url: str) -> None:
    best = optuna.load_study(study_name=OTHER_STUDY, storage=url).best_trial.number
    pw.choose(s, "Study", OTHER_STUDY, s.text_shown(rf"^Best: trial {best}, "),
              "study: switch to another study")


def _assert_nothing_cut(s: pw.Session) -> None:
    """Vega shortens a label that does not fit with "…": no chart text may end so."""
    cut = [t for c in s.charts() for t in c["texts"] if t.endswith("…")]
    assert not cut, cut


@pytest.mark.slow
def test_every_page_loads_without_an_exception_or_a_deploy_button(visitor: pw.Session) -> None:
    for path, title in PAGES.items():
        visitor.open(f"load {path}", path, title)
        assert visitor.page.locator('[data-testid="stAppDeployButton"]').count() == 0, path
        toolbar = visitor.page.locator('[data-testid="stToolbar"]').inner_text()
        assert "Deploy" not in toolbar, (path, toolbar)
        _assert_nothing_cut(visitor)


@pytest.mark.slow
def test_overview_tiles_show_their_n_and_interval(visitor: pw.Session) -> None:
    visitor.open("overview", "/", "Overview")
    tiles = visitor.page.locator('[data-testid="stMetric"]')
    assert tiles.count() == 3
    text = visitor.main_text()
    for stage in ("TF-IDF baseline", "pretrained model", "fine-tuned model"):
        assert stage in text
    shown = re.findall(r"95% CI \[0\.\d{3}, 0\.\d{3}\] · the same 1,000 test reviews", text)
    assert len(shown) == 3, text[:1500]
    assert "McNemar" in text and re.search(r"p [<=] [\d.]+, on 1,000 test reviews", text)
    tests = visitor.page.locator('[data-testid="stDataFrame"]').last  # McNemar's, last
    assert not pw.grid_cut(tests), "the McNemar table's last column is cut off"
    assert "`" not in text  # commands are drawn as code, not as literal backticks


@pytest.mark.slow
def test_study_link_opens_its_trial_with_n_and_interval(visitor: pw.Session) -> None:
    pw.open_trial_link(visitor, 17)
    text = visitor.main_text()
    assert re.search(r"Trial 17: state \w+ · value [\d.–]+", text)
    chosen = visitor.page.get_by_role("spinbutton", name="Trial to inspect", exact=False)
    assert chosen.input_value() == "17"
    assert re.search(r"Best: trial \d+, value 0\.\d{4} on 100 validation reviews, "
                     r"95% interval 0\.\d{3}–0\.\d{3}\.", text), text[:1500]
    assert "?trial=17" in visitor.page.url


@pytest.mark.slow
def test_trial_table_has_readable_columns_and_significant_digits(visitor: pw.Session) -> None:
    visitor.open("study: trials", "/study", "Study explorer")
    grid = visitor.page.locator('[data-testid="stDataFrame"]').first
    rows = _rows(pw.grid_csv(visitor, grid))
    assert len(rows) == 300
    columns = list(rows[0])
    assert {"trial", "value", "95% interval", "n (reviews)", "learning rate", "batch size",
            "duration (s)"} <= set(columns), columns
    assert not [c for c in columns if c.startswith("params_") or c == "duration_s"], columns
    rates = [r["learning rate"] for r in rows]
    assert all(re.fullmatch(r"\d(\.\d{1,2})?e-0[4-6]", r) for r in rates), rates[:20]


@pytest.mark.slow
def test_filters_reset_when_the_study_changes(visitor: pw.Session, seeded_db: str) -> None:
    visitor.open("study: trials", "/study", "Study explorer")
    pw.remove_state(visitor, "FAIL")
    tags = visitor.page.locator('[data-testid="stMultiSelect"] [data-tag]')
    assert "FAIL" not in tags.all_inner_texts()
    _switch_to_other_study(visitor, seeded_db)
    assert sorted(tags.all_inner_texts()) == sorted(
        ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]), \
        "the States filter kept the other study's selection"


@pytest.mark.slow
def test_importance_is_not_drawn_below_its_minimum_trials(visitor: pw.Session,
                                                          seeded_db: str) -> None:
    visitor.open("study: trials", "/study", "Study explorer")
    _switch_to_other_study(visitor, seeded_db)
    pw.open_study_tab(visitor, "Importance", visitor.text_shown(r"^Importance is not drawn"))
    assert re.search(r"only \d+ complete trials have this target, and it needs at least 20",
                     visitor.main_text())
    assert not [c for c in visitor.charts() if "importance" in c["title"]]


@pytest.mark.slow
def test_history_and_time_charts_count_trials_in_whole_numbers(visitor: pw.Session) -> None:
    visitor.open("study: trials", "/study", "Study explorer")
    pw.open_study_tab(visitor, "History", pw.chart_titled(visitor, "optimisation history"))
    history = visitor.chart("optimisation history")
    ticks = _labels(_axis(history, "trial"))
    assert ticks and all(re.fullmatch(r"\d[\d,]*", t) for t in ticks), ticks
    states = next(g for g in history["legends"] if g["title"] == "state")["labels"]
    assert "PRUNED" in states  # pruned trials are drawn, at their last value
    lines = visitor.chart("intermediate values")
    assert all(re.fullmatch(r"\d+", t) for t in _labels(_axis(lines, "epoch")))
    best = next(g for g in lines["legends"] if g["title"] == "best")["labels"]
    assert any(label.endswith("(best 1)") for label in best), best  # highlighted over the mass
    visitor.chart("empirical distribution (EDF)")
    _assert_nothing_cut(visitor)
    pw.open_study_tab(visitor, "Time", pw.chart_titled(visitor, "timeline of trials"))
    timeline = visitor.chart("timeline of trials")
    assert all(re.fullmatch(r"\d[\d,]*", t) for t in _labels(_axis(timeline, "trial")))
    assert _labels(_axis(timeline, "time"))


@pytest.mark.slow
def test_parameter_axes_and_brushing_filter_the_trials(visitor: pw.Session) -> None:
    visitor.open("study: trials", "/study", "Study explorer")
    pw.open_study_tab(visitor, "Slices", pw.chart_titled(visitor, "slice plots"))
    slices = visitor.chart("slice plots")
    titles = [a["title"] for a in slices["axes"]]
    assert "learning rate (log scale)" in titles, titles
    assert _labels(_axis(slices, "batch size")) == ["8", "16", "32"]
    assert all(re.fullmatch(r"\d+", t) for t in _labels(_axis(slices, "epochs (planned)")))
    _assert_nothing_cut(visitor)
    pw.open_study_tab(visitor, "Contour", pw.chart_titled(visitor, "contour"))
    _assert_nothing_cut(visitor)
    pw.open_study_tab(visitor, "Parallel coordinates",
                      pw.chart_titled(visitor, "parallel coordinates"))
    parallel = visitor.chart("parallel coordinates")
    axes = [label for a in parallel["axes"] for label in a["labels"]]
    assert axes[-1] == "objective" and "learning rate" in axes, axes
    assert re.search(r"\de-0\d", " ".join(parallel["texts"]))  # values printed on the axes
    _assert_nothing_cut(visitor)

    _, caption = pw.brush(visitor, 0.0, 0.3, 0.2, 0.8)
    inside, complete = (int(n.replace(",", "")) for n in
                        re.match(r"([\d,]+) of ([\d,]+) complete trials", caption).groups())
    assert 0 < inside < complete, caption
    brushed = visitor.page.locator('[data-testid="stDataFrame"]').last
    rows = _rows(pw.grid_csv(visitor, brushed))
    assert len(rows) == inside and {r["state"] for r in rows} == {"COMPLETE"}

    toggle = visitor.page.get_by_text(f"Only the {inside:,} trials inside", exact=False)
    pw.open_study_tab(visitor, "Trials", toggle)  # the brush filters the trial table too
    table = visitor.page.locator('[data-testid="stDataFrame"]').first
    assert sorted(r["trial"] for r in _rows(pw.grid_csv(visitor, table))) == \
        sorted(r["trial"] for r in rows)


@pytest.mark.slow
def test_evaluation_errors_show_their_total_and_line_breaks(visitor: pw.Session) -> None:
    visitor.open("evaluation", "/evaluation", "Evaluation")
    text = visitor.main_text()
    assert re.search(r"accuracy\n+0\.\d{3}\n+95% CI \[0\.\d{3}, 0\.\d{3}\] · n = 1,000", text)
    assert re.search(r"[\d,]+ of [\d,]+ misclassified reviews shown", text), text[-1500:]
    assert "accuracy at threshold 0.50" in text
    review = visitor.page.locator('[data-testid="stText"]').last.inner_text()
    assert "<br" not in review and "\n" in review.strip(), review
    pw.move_threshold(visitor)
    assert re.search(r"accuracy 0\.\d{3} 95% CI \[.*\] on 1,000 test reviews at threshold 0.51",
                     visitor.main_text())
    _assert_nothing_cut(visitor)


@pytest.mark.slow
def test_roc_curves_are_overlaid_only_on_the_same_reviews(visitor: pw.Session) -> None:
    baseline = re.compile(r"^TF-IDF baseline")
    visitor.open("evaluation", "/evaluation", "Evaluation")
    pw.click_and_wait(visitor, "evaluation: pick a trial",
                      visitor.page.get_by_text("a tuning trial", exact=True),
                      visitor.page.get_by_role("combobox", name="Trial", exact=True))
    pw.choose(visitor, "Compare the ROC curve with", baseline,
              visitor.text_shown(r"^Not overlaid: the two runs share no review"),
              "evaluation: compare a trial with a stage")
    assert re.search(r"scored 100 validation reviews, TF-IDF baseline.* 1,000 test reviews",
                     visitor.main_text())
    visitor.open("evaluation", "/evaluation", "Evaluation")
    pw.choose(visitor, "Compare the ROC curve with", baseline,
              visitor.text_shown(r"^Both curves are on the same 1,000 test reviews"),
              "evaluation: compare two stages")
    _assert_nothing_cut(visitor)


@pytest.mark.slow
def test_live_review_and_csv_keep_their_results(visitor: pw.Session, tmp_path: Path) -> None:
    visitor.open("live", "/live", "Live prediction")
    pw.classify_review(visitor, pw.REVIEW, "positive", "live: first review (loads the model)")
    accuracy = visitor.page.locator('[data-testid="stMetric"]', has_text="test accuracy")
    assert re.fullmatch(r"test accuracy\n+0\.\d{3} ± 0\.\d{3}", accuracy.inner_text().strip())
    assert re.search(r"95% CI \[0\.\d{3}, 0\.\d{3}\], n = 1,000 test reviews",
                     visitor.main_text())
    pw.classify_review(visitor, NEGATIVE_REVIEW, "negative", "live: next review")

    upload = tmp_path / "reviews.csv"
    upload.write_text(UPLOADED, encoding="utf-8")
    pw.open_live_tab(visitor, "A CSV file", visitor.page.locator(
        '[data-testid="stFileUploader"]'), "live: open the CSV tab")
    pw.upload_csv(visitor, upload)
    pw.classify_file(visitor)
    rows = _rows(pw.download_results(visitor))
    assert list(rows[0])[:6] == ["id", "text", "source", "prob_positive", "label", "model"]
    assert [r["id"] for r in rows] == ["7", "8", "9"]
    assert [r["label"] for r in rows][:2] == ["positive", "negative"]
    assert all(0.0 <= float(r["prob_positive"]) <= 1.0 for r in rows)
    # The results stay after the download, beside the model's accuracy.
    visitor.page.get_by_role("button", name="Download the results as CSV").wait_for()
    assert re.search(r"test accuracy 0\.\d{3} ± 0\.\d{3}", visitor.main_text())

    # The encoder whose head was never trained is listed, and picked, with its warning.
    pw.choose(visitor, "Model for the file", re.compile(r"head not trained: chance-level$"),
              visitor.text_shown(r"sentiment head was never trained"),
              "live: pick the untrained model")
    assert "coin tosses" in visitor.main_text()
