"""The pure views of the overview, evaluation and live pages, on hand-made records."""
from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from dashboard import live_views, views
from storage.records import ClassMetrics, Curve, Evaluation, Run, RunSpec
from trainer.explanation import Contribution
from trainer.report import paired_predictions


def make_run(run_id: int, stage: str, accuracy: float = 0.8, **spec: object) -> Run:
    evaluation = Evaluation(
        n=4, scalars={"accuracy": accuracy, "accuracy_ci_low": accuracy - 0.1,
                      "accuracy_ci_high": accuracy + 0.1, "loss": 0.4, "roc_auc": 0.9,
                      "roc_auc_ci_low": math.nan, "roc_auc_ci_high": math.nan},
        per_class={"negative": ClassMetrics(1.0, 0.5, 2 / 3, 2),
                   "positive": ClassMetrics(2 / 3, 1.0, 0.8, 2)},
        confusion=((1, 1), (0, 2)),
        curves={"roc": Curve((0.0, 0.5, 1.0), (0.0, 1.0, 1.0), (1.0, 0.6, 0.1)),
                "pr": Curve((0.0, 0.5, 1.0), (1.0, 1.0, 0.5), (1.0, 0.6, 0.1))})
    values = {"stage": stage, "model": "m", "split": "test", "data_source": "d", **spec}
    return Run(run_id, RunSpec(**values), datetime(2026, 1, 1, tzinfo=UTC), evaluation)


def preds(labels: list[int], probs: list[float], prefix: str = "r") -> pd.DataFrame:
    texts = [f"review {i}" + "x" * i for i in range(len(labels))]
    return pd.DataFrame({"review_id": [f"{prefix}{i}" for i in range(len(labels))],
                         "label": labels, "prob": probs, "text": texts,
                         "length": [float(len(t)) for t in texts]})


def test_latest_by_stage_keeps_newest_run_of_each_stage_in_stage_order() -> None:
    runs = [make_run(3, "finetuned"), make_run(1, "baseline"), make_run(5, "baseline"),
            make_run(4, "trial", study="s", trial=0)]
    latest = views.latest_by_stage(runs)
    assert list(latest) == ["baseline", "finetuned"]
    assert latest["baseline"].id == 5


def test_runs_frame_flattens_scalars_and_per_class_metrics() -> None:
    frame = views.runs_frame([make_run(1, "baseline", warnings=("w1", "w2"))])
    row = frame.iloc[0]
    assert row["accuracy"] == 0.8 and row["f1_positive"] == 0.8
    assert row["recall_negative"] == 0.5 and row["warnings"] == "w1; w2"


def test_overview_table_shows_interval_and_blank_for_nan_interval() -> None:
    table = views.overview_table(views.runs_frame([make_run(2, "baseline", accuracy=0.9)]))
    column = table["TF-IDF baseline (run 2)"]
    assert column["accuracy"] == "0.900"
    assert column["accuracy 95% CI"] == "[0.800, 1.000]"
    assert column["ROC AUC 95% CI"] == ""
    assert column["f1 (negative)"] == "0.667"


def test_comparison_sentence_reads_like_the_issue() -> None:
    sentence = views.comparison_sentence("pretrained", "finetuned", 0.889, 0.931, 1e-5, 25000,
                                         "test")
    assert sentence == ("Fine-tuning raised accuracy from 0.889 to 0.931, p < 0.001, "
                        "on 25,000 test reviews.")


def test_comparison_sentence_flags_a_difference_chance_could_explain() -> None:
    sentence = views.comparison_sentence("baseline", "finetuned", 0.9, 0.89, 0.2, 100, "test")
    assert "lowered accuracy from 0.900 to 0.890, p = 0.200" in sentence
    assert "chance" in sentence


def test_align_predictions_pairs_by_review_id_and_rejects_different_labels() -> None:
    a = preds([0, 1, 1], [0.2, 0.7, 0.4])
    b = preds([1, 0, 1], [0.9, 0.1, 0.6])[::-1]
    b = b.assign(review_id=["r0", "r1", "r2"], label=[1, 1, 0])
    with pytest.raises(ValueError, match="different true labels"):
        paired_predictions(a, b)
    same = a.assign(prob=[0.3, 0.8, 0.9])
    aligned = paired_predictions(a, same)
    assert list(aligned.columns) == ["review_id", "label", "prob_a", "prob_b"]
    assert aligned["prob_b"].tolist() == [0.3, 0.8, 0.9]


def test_stage_comparisons_counts_discordant_reviews() -> None:
    labels = [0, 1, 1, 0]
    latest = {"pretrained": make_run(1, "pretrained"), "finetuned": make_run(2, "finetuned")}
    table = views.stage_comparisons(latest, {1: preds(labels, [0.6, 0.4, 0.7, 0.2]),
                                             2: preds(labels, [0.1, 0.9, 0.8, 0.3])})
    row = table.iloc[0]
    assert (row["before"], row["after"], row["n"]) == ("pretrained", "finetuned", 4)
    assert (row["b"], row["c"]) == (0, 2)  # only the fine-tuned model got reviews 0 and 1 right
    assert row["accuracy_before"] == 0.5 and row["accuracy_after"] == 1.0
    assert row["sentence"].startswith("Fine-tuning raised accuracy from 0.500 to 1.000")


def test_confusion_frame_normalises_each_true_class() -> None:
    frame = views.confusion_frame(((3, 1), (0, 0)))
    assert frame["count"].tolist() == [3, 1, 0, 0]
    assert frame["share"].tolist() == [0.75, 0.25, 0.0, 0.0]


def test_at_threshold_recomputes_confusion_and_per_class() -> None:
    data = preds([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    confusion, per_class = views.at_threshold(data, 0.5)
    assert confusion["count"].tolist() == [1, 1, 1, 1]
    confusion, per_class = views.at_threshold(data, 0.35)
    assert confusion["count"].tolist() == [1, 1, 0, 2]
    positive = per_class.set_index("class").loc["positive"]
    assert positive["recall"] == 1.0 and positive["precision"] == pytest.approx(2 / 3)


def test_curve_frame_thins_long_curves_keeping_both_ends() -> None:
    curve = Curve(tuple(np.linspace(0, 1, 2001)), tuple(np.linspace(0, 1, 2001)),
                  tuple(range(2001)))
    frame = views.curve_frame(curve, "m", max_points=100)
    assert len(frame) <= 100
    assert frame["x"].iloc[0] == 0.0 and frame["x"].iloc[-1] == 1.0


def test_precision_recall_area_matches_hand_computed_value() -> None:
    run = make_run(1, "baseline")
    assert views.step_auc(run.evaluation.curves["pr"]) == 0.75  # 0.5*1.0 + 0.5*0.5


def test_probability_histogram_bins_every_review_once() -> None:
    data = preds([0, 0, 1, 1, 1], [0.01, 0.5, 0.51, 0.99, 1.0])
    hist = views.probability_histogram(data, bins=4)
    assert len(hist) == 8 and hist["count"].sum() == 5
    positive = hist[hist["true"] == "positive"]["count"].tolist()
    assert positive == [0, 0, 1, 2]


def test_errors_frame_lists_confident_mistakes_first_and_filters_length() -> None:
    data = preds([0, 0, 1, 1, 0], [0.9, 0.6, 0.05, 0.8, 0.2])
    errors = views.errors_frame(data, 0.5)
    assert errors["review_id"].tolist() == ["r2", "r0", "r1"]
    assert errors["confidence"].tolist() == pytest.approx([0.95, 0.9, 0.6])
    assert errors.iloc[0][["true", "predicted"]].tolist() == ["positive", "negative"]
    short = views.errors_frame(data, 0.5, min_length=0, max_length=9)
    assert short["review_id"].tolist() == ["r0", "r1"]
    assert len(views.errors_frame(data, 0.5, limit=1)) == 1


def test_escape_markdown_leaves_no_markup_and_collapses_whitespace() -> None:
    escaped = views.escape_markdown("<script>alert(1)</script>\n\n# *big* [x](y) :red[z] $a$")
    assert "<" not in escaped.replace("\\<", "")
    assert "\\#" in escaped and "\\*big\\*" in escaped and "\\:red\\[z\\]" in escaped
    assert "\n" not in escaped and "\\$a\\$" in escaped


def test_highlight_markdown_wraps_spans_in_escaped_colour_directives() -> None:
    text = "A <b>great</b> film, dull ending"
    spans = [Contribution("great", 5, 10, 0.8), Contribution("dull", 21, 25, -0.3)]
    marked = live_views.highlight_markdown(text, spans)
    assert ":green-background[great]" in marked and ":red-background[dull]" in marked
    assert marked.startswith("A \\<b\\>:green-background[great]\\<\\/b\\>")


def test_highlight_markdown_skips_overlapping_and_zero_spans() -> None:
    spans = [Contribution("ab", 0, 2, 1.0), Contribution("b", 1, 2, -1.0),
             Contribution("c", 3, 4, 0.0)]
    assert live_views.highlight_markdown("ab c", spans) == ":green-background[ab] c"


def test_contributions_frame_orders_by_strength() -> None:
    frame = live_views.contributions_frame([Contribution("a", 0, 1, 0.1),
                                            Contribution("b", 2, 3, -0.5)])
    assert frame["token"].tolist() == ["b", "a"]
    assert frame["towards"].tolist() == ["negative", "positive"]


@pytest.mark.parametrize("data", [
    b"text,stars\nGreat film,5\nAwful,1\n",
    b"\xef\xbb\xbftext,stars\r\nGreat film,5\r\nAwful,1\r\n",
    b"Review\n\"Great, truly\nfilm\"\nAwful\n",
])
def test_read_reviews_csv_accepts_bom_crlf_and_quoted_newlines(data: bytes) -> None:
    frame = live_views.read_reviews_csv(data)
    assert len(frame) == 2 and "text" in frame
    assert frame["text"].iloc[1] == "Awful"


@pytest.mark.parametrize(("data", "message"), [
    (b"text\n\xff\xfe bad bytes\n", "not UTF-8 text (byte 0xff at position 5)"),
    (b"", "the file is empty"),
    (b"   \r\n", "the file is empty"),
    (b"title,stars\nx,1\n", "expected a column named 'text', found ['title', 'stars']"),
    (b"text\n", "has a header but no reviews"),
    (b'text,b\n"unterminated,1\n', "not a readable CSV"),
])
def test_read_reviews_csv_explains_what_to_do(data: bytes, message: str) -> None:
    with pytest.raises(live_views.UploadError, match="; ") as caught:
        live_views.read_reviews_csv(data)
    assert message in str(caught.value)


def test_read_reviews_csv_caps_rows() -> None:
    with pytest.raises(live_views.UploadError, match="upload at most 3"):
        live_views.read_reviews_csv(b"text\n" + b"a\n" * 4, max_rows=3)


def test_batch_frame_reports_label_score_and_row_errors() -> None:
    _cleaned, errors = live_views.validated(["good", "   ", "bad"])
    assert errors[0] is None and "empty" in errors[1]
    frame = live_views.batch_frame(["good", "   ", "bad"], [0.8, math.nan, 0.3], errors, "m")
    assert frame["label"].tolist() == ["positive", "", "negative"]
    assert frame["score"].iloc[0] == 0.8 and frame["score"].iloc[2] == pytest.approx(0.7)
    assert frame["error"].iloc[1] != "" and frame["model"].unique().tolist() == ["m"]


def test_verdict_gives_the_probability_of_the_chosen_label() -> None:
    assert live_views.verdict("m", 0.25) == live_views.Verdict("m", "negative", 0.75, 0.25)
    assert live_views.verdict("m", 0.5).label == "positive"


def test_missing_sqlite_file_only_for_absent_sqlite_files(tmp_path) -> None:
    assert views.missing_sqlite_file(f"sqlite:///{tmp_path}/no.db") == f"{tmp_path}/no.db"
    (tmp_path / "yes.db").write_bytes(b"")
    assert views.missing_sqlite_file(f"sqlite:///{tmp_path}/yes.db") is None
    assert views.missing_sqlite_file("sqlite://") is None
    assert views.missing_sqlite_file("postgresql+psycopg://u@h/db") is None


def test_metric_cells_show_dash_for_missing_values() -> None:
    cells = {name: (shown, note) for name, shown, note in
                 views.metric_cells(make_run(1, "baseline"))}
    assert cells["accuracy"] == ("0.800", "95% CI [0.700, 0.900]")
    assert cells["ROC AUC"] == ("0.900", None)
    assert cells["ECE"][0] == "–"


def test_errors_frame_ignores_reviews_without_a_probability() -> None:
    data = preds([1, 0], [math.nan, 0.9])
    assert views.errors_frame(data, 0.5)["review_id"].tolist() == ["r1"]
