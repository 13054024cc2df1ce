"""`report`: deduplicated test accuracy beside the full one, and the audit section."""
from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from storage.store import open_store
from tests.storage import samples
from tests.storage.test_audit_store import sample_audit
from trainer.metrics import wilson_interval
from trainer.report import (
    audit_section,
    audit_text,
    deduplicated_accuracy,
    deduplicated_entries,
    render,
    runs_table,
)


def test_deduplicated_accuracy_leaves_out_the_leaked_reviews() -> None:
    preds = pd.DataFrame({"review_id": ["a", "b", "c", "d", "e"], "label": [1, 0, 1, 0, 1],
                          "prob": [0.9, 0.2, 0.3, 0.6, math.nan]})
    # c and d wrong; d leaked, e unscored: kept a, b, c with 2 right
    got = deduplicated_accuracy(preds, {"d", "x"})
    assert (got["n"], got["left_out"], got["accuracy"]) == (3, 1, round(2 / 3, 6))
    assert got["accuracy_ci95"] == [round(v, 6) for v in wilson_interval(2, 3)]
    nothing = deduplicated_accuracy(preds, {"a", "b", "c", "d"})
    assert (nothing["n"], nothing["accuracy"], nothing["accuracy_ci95"]) == (0, None,
                                                                             [None, None])


def test_test_runs_get_deduplicated_figures_from_their_sources_latest_audit() -> None:
    with open_store("sqlite://") as store:
        preds = samples.predictions(4)  # ids test/pos/0..3, labels 0 1 0 1, probs .125-.875
        run_id = store.save_run(samples.spec(), samples.evaluation(), preds)
        trial_id = store.save_run(samples.spec("trial", split="validation", study="s", trial=0),
                                  samples.evaluation())
        runs = store.list_runs()
        before = deduplicated_entries(store, runs)
        assert before[0]["deduplicated_test"] is None and "deduplicated_test" not in before[1]
        audit = sample_audit(source=samples.spec().data_source)
        audit_id = store.save_audit(replace(audit, leaked_test_ids=("test/pos/0",)))
        entries = deduplicated_entries(store, runs)
    dedup = entries[0]["deduplicated_test"]
    assert [e["id"] for e in entries] == [run_id, trial_id]
    # kept test/pos/1..3: labels 1 0 1, probs .375 .625 .875: one right
    assert (dedup["n"], dedup["left_out"], dedup["audit_id"]) == (3, 1, audit_id)
    assert dedup["accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    table = runs_table(entries)
    assert "deduplicated test [95% CI] (n)" in table.splitlines()[0]
    assert f"{1 / 3:.3f} [" in table and "(3)" in table


def test_the_audit_section_counts_each_finding() -> None:
    section = audit_section(sample_audit())
    assert section["duplicates"]["groups"] == {"exact": {"train": 0, "test": 0, "cross": 1},
                                               "near": {"train": 1, "test": 0, "cross": 0}}
    assert section["duplicates"]["conflicting"]["exact"]["cross"] == 1
    assert section["leaked_test_reviews"] == 1
    assert section["label_issues"]["train"]["candidates"] == 1
    negation, empty = section["behaviour"]
    assert (negation["failure_rate"], negation["failure_rate_ci95"]) == (0.25, [0.11, 0.47])
    assert empty["failure_rate"] is None and empty["failure_rate_ci95"] == [None, None]
    (truncation,) = section["truncation"]
    assert truncation["truncated_share"] == 0.0 and truncation["accuracy_truncated"] is None
    assert audit_section(None) is None
    text = audit_text(section)
    assert "leaked test reviews (text also in train): 1" in text and "1★" in text


def test_render_shows_the_audit_after_the_studies() -> None:
    section = audit_section(sample_audit())
    text = render({"runs": [], "studies": [], "audit": section})
    assert text.index("Studies") < text.index("Audit ") and "negation" in text
    assert "Audit" not in render({"runs": [], "studies": [], "audit": None})
