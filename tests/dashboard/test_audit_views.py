"""The "Data & models" page's pure views and charts, on a hand-built audit and predictions."""
from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from dashboard import audit_views, charts
from storage.records import Evaluation, Run, RunSpec
from tests.dashboard.audit_builders import HOSTILE, METHOD, sample_audit
from trainer.comparison import review_diff


def make_run(run_id: int, stage: str, split: str = "test", n: int = 4, **kw) -> Run:
    evaluation = Evaluation(n=n, scalars={"accuracy": 0.5}, per_class={},
                            confusion=((1, 1), (1, 1)))
    return Run(run_id, RunSpec(stage, f"model-{run_id}", split, "d", **kw),
               datetime(2026, 1, 1, tzinfo=UTC), evaluation)


def preds(ids: list[str], labels: list[int], probs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"review_id": ids, "label": labels, "prob": probs})


def test_duplicate_counts_have_every_kind_and_scope_with_reviews_and_conflicts() -> None:
    counts = audit_views.duplicate_counts(sample_audit()).set_index(["kind", "scope"])
    assert len(counts) == 6
    assert counts.loc[("exact", "train")].tolist() == [1, 2, 0]
    assert counts.loc[("exact", "cross")].tolist() == [1, 2, 1]
    assert counts.loc[("exact", "test")].tolist() == [1, 2, 1]
    assert counts.loc[("near", "test")].tolist() == [1, 3, 0]
    assert counts.loc[("near", "cross")].tolist() == [0, 0, 0]


def test_duplicate_groups_put_conflicting_first_and_name_labels_per_split() -> None:
    groups = audit_views.duplicate_groups(sample_audit())
    assert groups["group"].tolist() == [2, 4, 3, 1]  # conflicting, then the largest
    cross = groups.iloc[0]
    assert cross["labels"] == "train: 1 negative; test: 1 positive"
    assert cross["reviews"] == "test/pos/1, train/neg/5"
    assert groups.iloc[2]["labels"] == "test: 3 negative"
    only = audit_views.duplicate_groups(sample_audit(), scope="test", conflicting_only=True)
    assert only["group"].tolist() == [4]
    assert audit_views.duplicate_groups(sample_audit(), kind="near")["size"].tolist() == [3]
    assert len(audit_views.duplicate_groups(sample_audit(), limit=2)) == 2


def test_dedup_accuracy_leaves_the_leaked_reviews_out_of_test_runs_only() -> None:
    runs = [make_run(1, "baseline"), make_run(2, "trial", split="validation", study="s",
                                              trial=0)]
    frames = {1: preds(["test/pos/1", "test/neg/2", "test/pos/3", "test/neg/4"], [1, 0, 1, 0],
                       [0.9, 0.8, 0.7, math.nan]),
              2: preds(["x"], [1], [0.9])}
    table = audit_views.dedup_accuracy(runs, frames, sample_audit().leaked_test_ids)
    assert len(table) == 1
    row = table.iloc[0]
    # scored: pos/1 right, neg/2 wrong, pos/3 right; without the leaked pos/1 and neg/2: pos/3
    assert (row["n_full"], row["accuracy_full"]) == (3, pytest.approx(2 / 3))
    assert (row["n_dedup"], row["accuracy_dedup"], row["left_out"]) == (1, 1.0, 2)
    assert row["ci_full"] == "[0.208, 0.939]"  # Wilson, 2 of 3
    assert row["model"] == runs[0].label


def test_dedup_accuracy_of_a_run_whose_reviews_all_leaked_is_nan_not_an_error() -> None:
    table = audit_views.dedup_accuracy([make_run(1, "baseline")],
                                       {1: preds(["test/pos/1"], [1], [0.9])}, ["test/pos/1"])
    assert table.iloc[0]["n_dedup"] == 0 and math.isnan(table.iloc[0]["accuracy_dedup"])
    assert table.iloc[0]["ci_dedup"] == ""


def test_label_issues_are_listed_by_split_and_rank_with_texts_and_exported_as_csv() -> None:
    audit = sample_audit()
    summary = audit_views.label_issue_summary(audit)
    assert summary.to_dict("records") == [{"split": "test", "method": METHOD, "candidates": 1},
                                          {"split": "train", "method": METHOD, "candidates": 2}]
    table = audit_views.label_issue_table(audit, texts={"test/pos/1": "A great film."})
    assert table[["split", "rank", "review_id"]].values.tolist() == [
        ["test", 1, "test/pos/1"], ["train", 1, "train/neg/10"], ["train", 2, "train/pos/9"]]
    assert table["text"].iloc[0] == "A great film." and table["text"].iloc[1:].isna().all()
    assert table["prob_given"].tolist() == pytest.approx([0.1, 0.03, 0.04])
    assert table["given_label"].tolist() == ["positive", "negative", "positive"]
    train = audit_views.label_issue_table(audit, "train")
    back = pd.read_csv(io.BytesIO(audit_views.label_issues_csv(train)))
    assert back["review_id"].tolist() == ["train/neg/10", "train/pos/9"]
    hostile = audit_views.label_issue_table(audit, "test", {"test/pos/1": "=HYPERLINK(1)"})
    back = pd.read_csv(io.BytesIO(audit_views.label_issues_csv(hostile)))
    assert back["text"].tolist() == ["'=HYPERLINK(1)"]  # a spreadsheet shows it, runs nothing
    assert back["prob_positive"].tolist() == [0.1]


def test_truncation_frame_names_runs_and_gives_the_share_cut() -> None:
    table = audit_views.truncation_frame(sample_audit(), {3: "tuned (run 3)"})
    assert table.to_dict("records") == [{
        "model": "tuned (run 3)", "max_length": 128, "n": 100, "truncated": 40,
        "share_truncated": 0.4, "accuracy_truncated": 0.8, "accuracy_untruncated": 0.9}]
    assert audit_views.truncation_frame(sample_audit(), {})["model"].tolist() == ["run 3"]


def test_slices_keep_the_bucket_order_and_split_by_length_and_rating() -> None:
    audit = sample_audit()
    assert audit_views.slice_kinds(audit) == ["length", "rating"]
    length = audit_views.slices_frame(audit, "length", {1: "base", 3: "tuned"})
    assert len(length) == 6 and set(length["model"]) == {"base", "tuned"}
    assert length.drop_duplicates("bucket")[["bucket", "order"]].values.tolist() == [
        ["≤ 512 chars", 0], ["513–1,024 chars", 1], ["> 1,024 chars", 2]]
    assert length.iloc[0]["interval"] == "[0.850, 0.950]" and length.iloc[0]["n"] == 40
    assert audit_views.slices_frame(audit, "rating", {})["bucket"].tolist() == ["1★", "10★"]


def test_behaviour_frame_gives_rate_n_and_interval_per_test_and_model() -> None:
    frame = audit_views.behaviour_frame(sample_audit())
    assert frame[["model", "test", "n", "failures"]].values.tolist()[0] == [
        "base", "negation: not good → negative", 100, 64]
    assert frame["failure_rate"].tolist() == pytest.approx([0.64, 3 / 80, 0.12, 0.0])
    assert frame.iloc[0]["interval"] == "[0.542, 0.727]"
    assert frame.iloc[3]["interval"].startswith("[0.000, ")


def test_behaviour_examples_of_one_test_and_model() -> None:
    examples = audit_views.behaviour_examples(sample_audit(), "base",
                                              "negation: not good → negative")
    assert len(examples) == 3 and examples.iloc[0]["text"] == f"{HOSTILE} case 0"
    assert examples["original"].isna().all()
    assert audit_views.behaviour_examples(sample_audit(), "tuned",
                                          "typos and character noise").empty


def test_diff_choices_list_stages_in_order_then_trials_with_their_split() -> None:
    runs = [make_run(5, "trial", "validation", 80, study="s", trial=1),
            make_run(4, "finetuned", study="s"), make_run(2, "trial", "validation", 80,
                                                          study="s", trial=0),
            make_run(1, "baseline")]
    choices = audit_views.diff_choices(runs)
    assert list(choices) == [1, 4, 2, 5]
    assert choices[2] == "trial 0 of s (run 2) · 80 validation reviews"


def test_diff_table_and_sentence_name_the_right_model_with_mcnemar_p_and_n() -> None:
    a = preds(["r0", "r1", "r2"], [1, 0, 1], [0.9, 0.8, 0.6]).assign(text=["x", "y", "z"])
    b = preds(["r0", "r1", "r2"], [1, 0, 1], [0.2, 0.1, 0.7])
    diff = review_diff(a, b)
    table = audit_views.diff_table(diff, "base", "tuned")
    assert table[["review_id", "right", "text"]].values.tolist() == [["r1", "tuned", "y"],
                                                                     ["r0", "base", "x"]]
    assert audit_views.diff_sentence(diff, "A", "B") == (
        "Of 3 reviews both scored, only A is right on 1 and only B on 1; McNemar's exact "
        "test: p = 1.000 (n = 3).")
    assert len(audit_views.diff_table(diff, "A", "B", limit=1)) == 1


def test_empty_audit_gives_empty_frames_with_their_columns() -> None:
    empty = sample_audit().__class__("d", (), (), (), (), (), ())
    assert audit_views.duplicate_counts(empty)["groups"].sum() == 0
    assert audit_views.duplicate_groups(empty).columns.tolist()[:2] == ["group", "kind"]
    assert audit_views.label_issue_table(empty).empty
    assert audit_views.behaviour_frame(empty).empty and audit_views.slice_kinds(empty) == []
    assert audit_views.truncation_frame(empty, {}).empty


def test_behaviour_chart_draws_a_point_and_an_interval_bar_per_model() -> None:
    spec = charts.behaviour_chart(audit_views.behaviour_frame(sample_audit())).to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["rule", "point"]
    rule, point = spec["layer"]
    assert (rule["encoding"]["x"]["field"], rule["encoding"]["x2"]["field"]) == \
        ("ci_low", "ci_high")
    assert point["encoding"]["x"]["field"] == "failure_rate"
    assert [layer["encoding"]["yOffset"]["field"] for layer in spec["layer"]] == ["model"] * 2
    assert {row["model"] for row in next(iter(spec["datasets"].values()))} == {"base", "tuned"}


def test_slice_chart_orders_buckets_and_draws_intervals() -> None:
    frame = audit_views.slices_frame(sample_audit(), "length", {1: "base", 3: "tuned"})
    spec = charts.slice_accuracy_chart(frame, "length").to_dict()
    encoding = spec["layer"][1]["encoding"]
    assert encoding["x"]["sort"] == {"field": "order", "op": "min"}
    assert encoding["xOffset"]["field"] == "model"
    rule = spec["layer"][0]
    assert (rule["encoding"]["y"]["field"], rule["encoding"]["y2"]["field"]) == \
        ("ci_low", "ci_high")
    assert spec["title"] == "accuracy by length"
