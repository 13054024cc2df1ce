"""The live page's pure views: model cards, verdicts, batch results and explanations."""
from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from dashboard import live_views
from dashboard.live_views import ACCURACY, PROB, UNTRAINED
from storage.records import Evaluation, Run, RunSpec
from trainer.explanation import Contribution
from trainer.stages import CHANCE_WARNING


def stored_run(run_id: int = 7, *, accuracy: float = 0.905, low: float = 0.901,
               high: float = 0.909, n: int = 25_000, split: str = "test",
               warnings: tuple[str, ...] = ()) -> Run:
    evaluation = Evaluation(n=n, scalars={"accuracy": accuracy, "accuracy_ci_low": low,
                                          "accuracy_ci_high": high},
                            per_class={}, confusion=((0, 0), (0, 0)))
    spec = RunSpec(stage="pretrained", model="m", split=split, data_source="d",
                   warnings=warnings)
    return Run(run_id, spec, datetime(2026, 1, 1, tzinfo=UTC), evaluation)


def test_model_card_gives_accuracy_plus_minus_half_the_interval_and_its_n() -> None:
    card = live_views.model_card("m (run 7)", 7, stored_run())
    assert card.accuracy_text == "0.905 ± 0.004"
    assert card.accuracy_note == "95% CI [0.901, 0.909], n = 25,000 test reviews"
    assert card.option == "m (run 7)" and not card.untrained


def test_model_card_names_the_split_of_a_trials_accuracy() -> None:
    card = live_views.model_card("trial 3", 9, stored_run(accuracy=0.625, low=0.5, high=0.75,
                                                          n=64, split="validation"))
    assert card.accuracy_text == "0.625 ± 0.125"
    assert card.accuracy_note.endswith("n = 64 validation reviews")


def test_model_card_without_a_stored_run_says_its_accuracy_is_unknown() -> None:
    card = live_views.model_card("gone", 3, None)
    assert card.accuracy_text == "unknown"
    assert card.accuracy_note == "no stored evaluation for this model"


def test_model_card_without_an_interval_shows_the_accuracy_alone() -> None:
    card = live_views.model_card("m", 1, stored_run(low=math.nan, high=math.nan, n=10))
    assert card.accuracy_text == "0.905" and card.accuracy_note == "n = 10 test reviews"


@pytest.mark.parametrize("warning", [
    CHANCE_WARNING.format(model="all-MiniLM-L6-v2"),  # what the pretrained stage stores
    "the model has a new, untrained sentiment head: its score is chance",
])
def test_untrained_head_is_labelled_wherever_the_model_is_offered(warning: str) -> None:
    card = live_views.model_card("pretrained: MiniLM (run 2)", 2,
                                 stored_run(accuracy=0.5, warnings=(warning,)))
    assert card.untrained
    assert card.option == "pretrained: MiniLM (run 2) — head not trained: chance-level"


def test_other_warnings_do_not_mark_a_head_untrained() -> None:
    assert not live_views.untrained_head(["the test split was cut to 64 reviews"])


def test_batch_frame_keeps_every_uploaded_column_and_adds_prob_positive() -> None:
    uploaded = pd.DataFrame({"id": ["a", "b", "c"], "text": ["good", "   ", "bad"],
                             "source": ["x", "y", "z"]})
    _cleaned, errors = live_views.validated(uploaded["text"].tolist())
    frame = live_views.batch_frame(uploaded, [0.8, math.nan, 0.3], errors, "m")
    assert list(frame.columns) == ["id", "text", "source", "prob_positive", "label", "model",
                                   "error"]
    pd.testing.assert_frame_equal(frame[["id", "text", "source"]], uploaded)
    assert frame["prob_positive"].iloc[0] == 0.8
    assert frame["prob_positive"].iloc[2] == 0.3  # the positive class's, not the label's 0.7
    assert math.isnan(frame["prob_positive"].iloc[1])
    assert frame["label"].tolist() == ["positive", "", "negative"]
    assert frame["error"].iloc[0] == "" and "empty" in frame["error"].iloc[1]
    assert frame["model"].unique().tolist() == ["m"]


def test_batch_frame_never_overwrites_an_uploaded_label_column() -> None:
    uploaded = pd.DataFrame({"text": ["good", "bad"], "label": ["1", "0"],
                             "label_predicted": ["?", "?"]})
    frame = live_views.batch_frame(uploaded, [0.9, 0.1], [None, None], "m")
    assert frame["label"].tolist() == ["1", "0"]  # the file's own labels, unchanged
    assert frame["label_predicted"].tolist() == ["?", "?"]
    assert frame["label_predicted_2"].tolist() == ["positive", "negative"]
    assert list(frame.columns)[3:] == ["prob_positive", "label_predicted_2", "model", "error"]


def test_comparison_frame_shows_p_positive_and_each_models_accuracy() -> None:
    good = live_views.model_card("good", 1, stored_run(1))
    untrained = live_views.model_card("raw", 2, stored_run(2, accuracy=0.5, low=0.49, high=0.51,
                                                           warnings=(CHANCE_WARNING,)))
    broken = live_views.model_card("broken", 3, None)
    frame = live_views.comparison_frame([(good, 0.2, ""), (untrained, 0.6, ""),
                                         (broken, None, "its saved model is gone")])
    assert list(frame.columns) == ["model", "label", PROB, ACCURACY, "n", "split", "note"]
    assert frame["label"].tolist() == ["negative", "positive", ""]
    assert frame[PROB].iloc[0] == 0.2 and math.isnan(frame[PROB].iloc[2])
    assert frame[ACCURACY].tolist() == ["0.905 ± 0.004", "0.500 ± 0.010", "unknown"]
    assert frame["note"].tolist() == ["", UNTRAINED, "its saved model is gone"]


def test_verdict_gives_the_label_and_keeps_the_positive_probability() -> None:
    assert live_views.verdict("m", 0.25) == live_views.Verdict("m", "negative", 0.75, 0.25)
    assert live_views.verdict("m", 0.5).label == "positive"


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
