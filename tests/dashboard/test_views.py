"""The pure views of the overview and evaluation pages, on hand-made records."""
from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from dashboard import views
from storage.records import ClassMetrics, Curve, Evaluation, Run, RunSpec, Stage
from storage.store import open_store
from trainer import predict
from trainer.comparison import mcnemar_against


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
    assert list(latest) == [Stage.BASELINE, Stage.FINETUNED]
    assert latest["baseline"].id == 5


def test_runs_frame_flattens_scalars_and_per_class_metrics() -> None:
    frame = views.runs_frame([make_run(1, "baseline", warnings=("w1", "w2"))])
    row = frame.iloc[0]
    assert row["accuracy"] == 0.8 and row["f1_positive"] == 0.8
    assert row["recall_negative"] == 0.5 and row["warnings"] == "w1; w2"


def test_overview_table_shows_interval_and_blank_for_nan_interval() -> None:
    table = views.overview_table(views.runs_frame([make_run(2, "baseline", accuracy=0.9)]))
    column = table["TF-IDF baseline: m (run 2)"]
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


def test_stage_comparisons_skip_runs_scored_on_other_reviews_or_labels() -> None:
    latest = {"baseline": make_run(1, "baseline"), "pretrained": make_run(2, "pretrained")}
    other_ids = views.stage_comparisons(latest, {1: preds([0, 1], [0.2, 0.8]),
                                                 2: preds([0, 1], [0.2, 0.8], prefix="x")})
    other_labels = views.stage_comparisons(latest, {1: preds([0, 1], [0.2, 0.8]),
                                                    2: preds([1, 1], [0.2, 0.8])})
    assert other_ids.empty and other_labels.empty


def test_overview_and_cli_summary_give_the_same_mcnemar_test() -> None:
    """Both pair the runs through trainer.comparison.paired_mcnemar: same reviews, same p."""
    labels = [0, 1, 1, 0, 1, 0, 1, 1]
    frames = {1: preds(labels, [0.6, 0.4, 0.7, 0.2, 0.3, 0.8, 0.9, 0.4]),
              2: preds(labels, [0.1, 0.9, 0.8, 0.3, 0.7, 0.1, 0.2, 0.6])[::-1].head(7)}
    latest = {"pretrained": make_run(1, "pretrained"), "finetuned": make_run(2, "finetuned")}
    row = views.stage_comparisons(latest, frames).iloc[0]

    class Store:
        def predictions(self, run_id: int, *, texts: bool = True) -> pd.DataFrame:
            return frames[run_id]

    cli = mcnemar_against(Store(), latest["finetuned"], [latest["pretrained"]])
    assert row["n"] == 7
    assert cli == {1: f"{row['p_value']:.3g} (n={row['n']})"}


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


def test_pr_auc_is_the_stored_average_precision_and_the_curve_only_for_older_runs() -> None:
    from sklearn.metrics import average_precision_score

    from trainer.metrics import evaluate

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1).round(2)
    ev = evaluate(labels, probs, n_bootstrap=50, curve_points=8)  # a coarse stored curve
    exact = average_precision_score(labels, probs)
    value, note = views.pr_auc_cell(ev.scalars, ev.curves)
    assert value == exact and note.startswith("average precision, 95% CI [")
    older = {k: v for k, v in ev.scalars.items() if not k.startswith("average_precision")}
    value, note = views.pr_auc_cell(older, ev.curves)
    assert value == views.step_auc(ev.curves["pr"]) and abs(value - exact) > 1e-3
    assert "approximated from the stored curve" in note
    assert math.isnan(views.pr_auc_cell(older, {})[0])


def test_pr_auc_cell_shows_the_stored_value_and_says_which_it_is() -> None:
    older = {name: cell for name, *cell in views.metric_cells(make_run(1, "baseline"))}
    assert older["PR AUC"] == ["0.750", "average precision, approximated from the stored curve "
                                        "(an older run)"]
    run = make_run(2, "baseline")
    scalars = {**run.evaluation.scalars, "average_precision": 0.8125,
               "average_precision_ci_low": math.nan, "average_precision_ci_high": math.nan}
    stored = Run(2, run.spec, run.created_at, Evaluation(
        run.evaluation.n, scalars, run.evaluation.per_class, run.evaluation.confusion,
        run.evaluation.curves))
    cells = {name: cell for name, *cell in views.metric_cells(stored)}
    assert cells["PR AUC"] == ["0.812", "average precision"]  # not the curve's 0.750
    single_class = {**scalars, "average_precision": math.nan}
    assert views.pr_auc_cell(single_class, run.evaluation.curves)[1] == "average precision"


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


def test_dashboard_and_cli_name_a_run_the_same_way(tmp_path) -> None:
    with open_store(f"sqlite:///{tmp_path / 's.db'}") as store:
        run_id = store.save_run(RunSpec("finetuned", "/m/minilm", "test", "d", study="imdb",
                                        artifact=str(tmp_path)), make_run(1, "x").evaluation)
        run = store.get_run(run_id)
        (choice,) = predict.model_choices(store)  # the live page's and `predict`'s name
    frame = views.runs_frame([run])
    assert frame["name"].iloc[0] == choice.label == run.label
    assert list(views.overview_table(frame).columns) == [choice.label]
    assert set(views.curves_frame([run], "roc")["model"]) == {choice.label}


def test_metric_cells_show_dash_for_missing_values() -> None:
    cells = {name: (shown, note) for name, shown, note in
                 views.metric_cells(make_run(1, "baseline"))}
    assert cells["accuracy"] == ("0.800", "95% CI [0.700, 0.900]")
    assert cells["ROC AUC"] == ("0.900", None)
    assert cells["ECE"][0] == "–"


def test_errors_frame_ignores_reviews_without_a_probability() -> None:
    data = preds([1, 0], [math.nan, 0.9])
    assert views.errors_frame(data, 0.5)["review_id"].tolist() == ["r1"]
