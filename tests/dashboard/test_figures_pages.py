"""Overview and evaluation pages where the baseline scored the whole test split and the
transformer stages a subset: figures with their n, comparisons on the same reviews only."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from storage.records import Predictions, RunSpec
from storage.store import open_store
from tests.dashboard import builders
from tests.dashboard.test_pages import charts, no_exception, table_with, texts
from trainer.metrics import evaluate

Open = Callable[[str, str], AppTest]
WARNING = "the head was newly initialised; fine-tune it with `python -m trainer tune`"
CONFIG = {"train_size": 64, "max_length": 128, "best_params": {"num_train_epochs": 2}}


def save(store, stage: str, reviews: builders.Reviews, quality: float, seed: int, *,
         split: str = "test", **spec: object) -> int:
    probs = builders.scores(reviews.labels, quality, seed)
    evaluation = evaluate(np.asarray(reviews.labels), probs, seed=seed, n_bootstrap=100)
    return store.save_run(
        RunSpec(stage, "tfidf-logreg" if stage == "baseline" else "minilm", split, "imdb",
                **spec),
        evaluation, Predictions(reviews.ids, reviews.labels, tuple(map(float, probs)),
                                reviews.texts))


@pytest.fixture(scope="module")
def subset_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Baseline on 300 test reviews; pretrained and fine-tuned (weaker) on the first 100;
    a trial on 80 validation reviews; review texts with IMDB's `<br /><br />`."""
    url = f"sqlite:///{tmp_path_factory.mktemp('subset') / 'subset.db'}"
    whole = builders.synthetic_reviews(300)
    whole = builders.Reviews(whole.ids, whole.labels,
                             tuple(t.replace(" ", "<br /><br />", 1) for t in whole.texts))
    subset = builders.Reviews(whole.ids[:100], whole.labels[:100], whole.texts[:100])
    with open_store(url) as store:
        save(store, "baseline", whole, 1.25, 1)
        save(store, "pretrained", subset, 0.0, 2, warnings=(WARNING,))
        save(store, "finetuned", subset, 0.3, 3, study=builders.STUDY, config=CONFIG)
        save(store, "trial", builders.synthetic_reviews(80, seed=5, prefix="train"), 1.0, 4,
             split="validation", study=builders.STUDY, trial=0)
    return url


def test_overview_shows_each_stage_on_the_same_reviews_and_the_baseline_on_all(
        open_page: Open, subset_db: str) -> None:
    at = open_page(subset_db, "overview")
    no_exception(at)
    assert [m.label for m in at.metric] == ["TF-IDF baseline", "pretrained model",
                                            "fine-tuned model",
                                            "TF-IDF baseline, every review it scored"]
    captions = [c.value for c in at.caption]
    assert sum("· the same 100 test reviews" in c for c in captions) == 3
    assert any(c.endswith("· 300 test reviews") and c.startswith("95% CI [") for c in captions)
    shown = texts(at.markdown)
    assert "Accuracy on the same reviews: those every stage scored" in shown
    assert "Accuracy on every review each model scored" in shown
    assert "on 100 test reviews" in shown  # McNemar's sentences: on the shared reviews
    assert set(table_with(at, "comparison")["n"]) == {100}


def test_overview_says_why_the_fine_tuned_model_is_below_the_baseline(
        open_page: Open, subset_db: str) -> None:
    warnings = texts(open_page(subset_db, "overview").warning).replace("\\", "")
    assert "The fine-tuned model scores" in warnings
    assert "on the same 100 test reviews, likely because it was fine-tuned on 64 training " \
           "reviews cut to 128 tokens for 2 epochs" in warnings
    assert "--train-size" in warnings and "train on a GPU" in warnings


@pytest.mark.parametrize("page", ["overview", "evaluation"])
def test_warnings_show_commands_as_code_not_as_backslashed_backticks(
        open_page: Open, subset_db: str, page: str) -> None:
    at = open_page(subset_db, page)
    if page == "evaluation":
        at.selectbox(key="eval_run").set_value(2).run()
    warning = next(w.value for w in at.warning if "newly initialised" in w.value)
    assert "`python -m trainer tune`" in warning and "\\`" not in warning


def test_evaluation_shows_every_figure_with_n_and_interval(open_page: Open,
                                                           subset_db: str) -> None:
    at = open_page(subset_db, "evaluation")  # the fine-tuned model, on its 100 reviews
    no_exception(at)
    captions = [c.value for c in at.caption]
    headline = [c for c in captions if c.endswith("· n = 100")]
    assert len(headline) == 6 and sum(c.startswith("95% CI [") for c in headline) == 5
    at.slider(key="eval_threshold").set_value(0.7).run()
    assert at.metric[-1].label == "accuracy at threshold 0.70"
    assert any("on 100 test reviews at threshold 0\\.70" in c.value for c in at.caption)


def test_evaluation_overlays_the_baseline_only_on_the_reviews_both_scored(
        open_page: Open, subset_db: str) -> None:
    at = open_page(subset_db, "evaluation")
    at.selectbox(key="eval_compare").set_value(1).run()  # the baseline, 300 reviews
    no_exception(at)
    roc = next(c for c in charts(at) if c.get("title") == "ROC curve")
    models = {r["model"] for r in roc["rows"] if "model" in r}
    assert {m.split(" · ")[1] for m in models} == {"100 test reviews"} and len(models) == 2
    assert any("redrawn on the 100 test reviews" in c.value for c in at.caption)


def test_evaluation_refuses_to_overlay_a_trial_on_test_reviews(open_page: Open,
                                                               subset_db: str) -> None:
    at = open_page(subset_db, "evaluation")
    at.radio(key="eval_source").set_value("a tuning trial").run()
    at.selectbox(key="eval_compare").set_value(1).run()
    no_exception(at)
    assert "share no review" in texts(at.warning)
    roc = next(c for c in charts(at) if c.get("title") == "ROC curve")
    assert {r["model"] for r in roc["rows"] if "model" in r} == {
        f"trial 0 of {builders.STUDY} (run 4) · 80 validation reviews"}


def test_error_browser_counts_all_errors_and_shows_line_breaks(open_page: Open,
                                                               subset_db: str) -> None:
    at = open_page(subset_db, "evaluation")
    at.selectbox(key="eval_run").set_value(1).run()  # the baseline, 300 reviews
    shown = table_with(at, "confidence")
    caption = next(c.value for c in at.caption if "misclassified reviews shown" in c.value)
    total = int(caption.split(" of ")[1].split()[0].replace(",", ""))
    assert caption.startswith(f"{len(shown)} of {total} ") and total >= len(shown) > 0
    assert not shown["text"].str.contains("<br", regex=False).any()
    assert "\n\n" in at.text[0].value and "<br" not in at.text[0].value


def test_error_browser_caption_names_the_total_beyond_the_200_shown(open_page: Open,
                                                                     tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    with open_store(url) as store:
        save(store, "baseline", builders.synthetic_reviews(1000), 0.2, 1)
    at = open_page(url, "evaluation")
    caption = next(c.value for c in at.caption if "misclassified reviews shown" in c.value)
    assert caption.startswith("200 of ") and len(table_with(at, "confidence")) == 200
    assert int(caption.split(" of ")[1].split()[0].replace(",", "")) > 200
