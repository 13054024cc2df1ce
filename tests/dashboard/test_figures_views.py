"""Overview and evaluation views: every figure with its n and interval, runs compared only on
the same reviews, warnings with code, review text with its line breaks."""
from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from dashboard import charts, views
from storage.records import Run, RunSpec, Stage
from trainer.metrics import evaluate, wilson_interval

LABELS = [i % 2 for i in range(10)]
BASELINE = [0.2, 0.8, 0.3, 0.7, 0.6, 0.9, 0.1, 0.4, 0.2, 0.8]  # 8 of 10 right; first 4 right
TUNED = [0.6, 0.4, 0.4, 0.9]  # the first 4 reviews: 2 right


def preds(probs: list[float], prefix: str = "test/") -> pd.DataFrame:
    labels = LABELS[:len(probs)]
    return pd.DataFrame({"review_id": [f"{prefix}{i}" for i in range(len(probs))],
                         "label": labels, "prob": probs})


def stored(run_id: int, stage: str, frame: pd.DataFrame, split: str = "test",
           config: dict | None = None) -> Run:
    evaluation = evaluate(frame["label"].to_numpy(), frame["prob"].to_numpy(), n_bootstrap=50)
    spec = RunSpec(stage, "tfidf-logreg" if stage == "baseline" else "minilm", split, "imdb",
                   config=config or {}, study="s" if stage in ("finetuned", "trial") else None,
                   trial=0 if stage == "trial" else None)
    return Run(run_id, spec, datetime(2026, 1, 1, tzinfo=UTC), evaluation)


def three_stages() -> tuple[dict, dict]:
    frames = {1: preds(BASELINE), 2: preds([0.5] * 4), 3: preds(TUNED)}
    runs = [stored(1, "baseline", frames[1]), stored(2, "pretrained", frames[2]),
            stored(3, "finetuned", frames[3], config={"train_size": 64, "max_length": 128})]
    return views.latest_by_stage(runs), frames


def test_tiles_show_every_stage_on_the_same_reviews_then_the_baseline_on_all_its_own() -> None:
    latest, frames = three_stages()
    tiles = views.accuracy_tiles(latest, views.shared_figures(latest, frames))
    assert tiles["row"].tolist() == ["same", "same", "same", "own"]
    assert tiles["label"].tolist() == ["TF-IDF baseline", "pretrained model", "fine-tuned model",
                                       "TF-IDF baseline, every review it scored"]
    assert tiles["n"].tolist() == [4, 4, 4, 10]
    assert tiles["accuracy"].tolist() == pytest.approx([1.0, 0.5, 0.5, 0.8])
    low, high = wilson_interval(4, 4)
    assert tiles["caption"].iloc[0] == f"95% CI [{low:.3f}, {high:.3f}] · the same 4 test reviews"
    assert tiles["caption"].iloc[3].endswith("· 10 test reviews")
    assert tiles["caption"].iloc[3].startswith("95% CI [")


def test_tiles_without_shared_reviews_are_each_runs_own_figures() -> None:
    run = stored(1, "baseline", preds(BASELINE))
    tiles = views.accuracy_tiles({Stage.BASELINE: run}, {})
    assert tiles["row"].tolist() == ["own"] and tiles["label"].tolist() == ["TF-IDF baseline"]
    assert tiles["caption"].iloc[0].endswith("· 10 test reviews")


def test_shortfall_explains_a_fine_tuned_model_below_the_baseline_on_the_same_reviews() -> None:
    latest, frames = three_stages()
    sentence = views.shortfall(latest, views.shared_figures(latest, frames))
    assert sentence.startswith("The fine-tuned model scores 0.500 against the TF-IDF baseline's "
                               "1.000 on the same 4 test reviews")
    assert "64 training reviews cut to 128 tokens" in sentence
    assert views.shortfall({Stage.BASELINE: latest[Stage.BASELINE]}, {}) is None


@pytest.mark.parametrize(("text", "shown"), [
    ("fine-tune it with `python -m trainer tune`", "fine\\-tune it with `python -m trainer tune`"),
    ("use `--train-size 2000` or `--max-length`", "use `--train-size 2000` or `--max-length`"),
    ("model `<img src=x onerror=alert(1)>` here",
     "model \\`\\<img src\\=x onerror\\=alert\\(1\\)\\>\\` here"),
    ("`:red[x]` and `$x$`", "\\`\\:red\\[x\\]\\` and \\`\\$x\\$\\`"),
    ("no code at all.", "no code at all\\."),
])
def test_markdown_with_code_shows_commands_as_code_and_everything_else_as_text(
        text: str, shown: str) -> None:
    assert views.markdown_with_code(text) == shown


def test_review_text_turns_html_line_breaks_into_newlines_and_leaves_other_markup() -> None:
    assert views.review_text("Great.<br /><br />Really <BR>great<br/>end") == \
        "Great.\n\nReally\ngreat\nend"  # IMDB's paragraph: a blank line
    assert views.review_text("<b>bold</b> stays text") == "<b>bold</b> stays text"
    assert views.review_text(None) is None


def test_error_browser_counts_every_error_and_shows_review_text_with_line_breaks() -> None:
    frame = preds(BASELINE).assign(text=["a<br /><br />b"] * 10, length=[10.0] * 10)
    wrong = views.errors_frame(frame, 0.5, limit=None)
    assert len(wrong) == 2 and len(views.errors_frame(frame, 0.5, limit=1)) == 1
    assert set(wrong["text"]) == {"a\n\nb"}
    assert len(views.misclassified(frame, 0.5)) == 2  # the total the browser names
    assert len(views.misclassified(frame, 0.5, max_length=9)) == 0
    assert views.errors_caption(1, 2) == \
        "1 of 2 misclassified reviews shown, the most confidently wrong first."
    assert views.errors_caption(200, 1234).startswith("200 of 1,234 misclassified reviews shown")
    assert views.errors_caption(2, 2) == "2 of 2 misclassified reviews shown."
    assert "No misclassified review" in views.errors_caption(0, 0)


def test_accuracy_at_threshold_has_n_and_wilson_interval() -> None:
    found = views.accuracy_at(preds(BASELINE), 0.5)
    assert (found["n"], found["accuracy"]) == (10, 0.8)
    low, high = wilson_interval(8, 10)
    assert views.accuracy_sentence(found, 0.5, "test") == \
        f"accuracy 0.800 95% CI [{low:.3f}, {high:.3f}] on 10 test reviews at threshold 0.50"
    assert views.accuracy_at(preds(BASELINE), 0.95)["accuracy"] == 0.5  # all called negative
    empty = views.accuracy_at(preds(BASELINE).assign(prob=math.nan), 0.5)
    assert "no scored review" in views.accuracy_sentence(empty, 0.5, "test")


def test_metric_captions_give_every_headline_figure_an_interval_or_say_why_not() -> None:
    frame = preds(BASELINE)
    run = stored(1, "baseline", frame)
    captions = views.metric_captions(run, frame)
    assert set(captions) == {"accuracy", "ROC AUC", "PR AUC", "log loss", "ECE", "Brier"}
    assert all(c.endswith("· n = 10") for c in captions.values())
    for name in ("accuracy", "ROC AUC", "PR AUC", "log loss", "Brier"):
        assert captions[name].startswith("95% CI ["), name
    assert captions["ECE"].startswith("no interval (a binned statistic)")
    assert views.metric_captions(run, None)["log loss"].startswith("no interval stored")


def test_mean_interval_is_the_normal_approximation_around_the_mean() -> None:
    values = np.array([0.0, 1.0, 0.0, 1.0])
    low, high = views.mean_interval(values)
    half = 1.959963984540054 * np.std(values, ddof=1) / 2
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert all(math.isnan(x) for x in views.mean_interval(np.array([1.0])))
    losses = views.review_losses(preds(BASELINE))
    assert float(losses["Brier"].mean()) == pytest.approx(
        stored(1, "baseline", preds(BASELINE)).evaluation.scalars["brier"])


def test_roc_comparison_redraws_both_runs_on_the_reviews_both_scored() -> None:
    base, tuned = stored(1, "baseline", preds(BASELINE)), stored(3, "finetuned", preds(TUNED))
    frame, note = views.roc_comparison(tuned, base, preds(TUNED), preds(BASELINE))
    assert set(frame["model"]) == {f"{tuned.label} · 4 test reviews",
                                   f"{base.label} · 4 test reviews"}
    assert note.startswith("Both curves redrawn on the 4 test reviews both runs scored")
    assert "10 test reviews" in note  # each run's own n is named


def test_roc_comparison_keeps_stored_curves_of_runs_on_the_same_reviews() -> None:
    a, b = stored(1, "baseline", preds(BASELINE)), stored(2, "pretrained", preds(BASELINE[::-1]))
    frame, note = views.roc_comparison(a, b, preds(BASELINE), preds(BASELINE[::-1]))
    assert len(frame) == len(a.evaluation.curves["roc"].x) + len(b.evaluation.curves["roc"].x)
    assert note == "Both curves are on the same 10 test reviews."


def test_roc_comparison_refuses_runs_that_share_no_review() -> None:
    trial = stored(5, "trial", preds(TUNED, prefix="train/"), split="validation")
    base = stored(1, "baseline", preds(BASELINE))
    frame, note = views.roc_comparison(trial, base, preds(TUNED, "train/"), preds(BASELINE))
    assert frame is None
    assert note.startswith("Not overlaid: the two runs share no review")
    assert "4 validation reviews" in note and "10 test reviews" in note
    assert views.roc_comparison(trial, base, None, preds(BASELINE))[0] is None


def test_curve_legends_are_below_and_never_cut_and_absent_for_one_model() -> None:
    base = stored(1, "baseline", preds(BASELINE))
    frame = views.curve_frame(base.evaluation.curves["roc"], views.curve_label(base))
    assert frame["model"].iloc[0] == "TF-IDF baseline: tfidf-logreg (run 1) · 10 test reviews"
    one = charts.curves_chart(frame, "roc").to_dict()["layer"][1]["encoding"]["color"]
    assert one["legend"] is None  # the page names the one model beside the chart
    two = pd.concat([frame, frame.assign(model="another run · 10 test reviews")])
    legend = charts.curves_chart(two, "roc").to_dict()["layer"][1]["encoding"]["color"]["legend"]
    assert legend == {"orient": "bottom", "columns": 1, "labelLimit": 0}


def test_class_intervals_give_precision_and_recall_their_own_n_and_wilson_interval() -> None:
    frame = preds([0.1] * 4 + [0.9] + [0.2] * 2 + [0.8] * 3)  # labels alternate 0, 1, …
    confusion, per_class = views.at_threshold(frame, 0.5)
    table = views.class_intervals(confusion, per_class).set_index("class")
    counts = confusion.set_index(["true", "predicted"])["count"]
    tp, fp = int(counts["positive", "positive"]), int(counts["negative", "positive"])
    support = int(counts["positive"].sum())
    assert table.loc["positive", "predicted"] == tp + fp
    assert table.loc["positive", "support"] == support
    assert table.loc["positive", "precision 95% CI"] == views.format_ci(
        *wilson_interval(tp, tp + fp))
    assert table.loc["positive", "recall 95% CI"] == views.format_ci(
        *wilson_interval(tp, support))
    assert table.loc["positive", "recall"] == pytest.approx(tp / support)
