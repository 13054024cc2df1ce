"""The dashboard's data functions polling once a second while 8 workers write: nothing lost."""
from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st

from dashboard import resources, views
from dashboard import study_views as sv
from storage.store import open_store
from tests.trainer.tuning.test_workers import Workers, make_config

pytestmark = pytest.mark.slow

POLL_S = 1.0
# The caches that hold data; the two that hold connections (store, optuna_storage) stay, as
# they do in a running dashboard, so each poll reads the database afresh over the same pool.
DATA_CACHES = ("runs", "trial_runs", "run_studies", "predictions", "study_names", "study",
               "study_trials", "importances", "model_choices")


@pytest.fixture
def url(file_db_url: str) -> Iterator[str]:
    """A SQLite file or a fresh PostgreSQL schema; the dashboard's cached connections closed."""
    st.cache_data.clear()
    st.cache_resource.clear()
    db = file_db_url
    open_store(db).close()  # our tables exist before the dashboard opens them
    yield db
    resources.store(db).close()
    resources.optuna_storage(db).engine.dispose()
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.kill_all()


def read_dashboard(url: str, name: str) -> dict[str, Any]:
    """What the overview, study and evaluation pages read and compute, as they do it."""
    latest = views.latest_by_stage(r for stage in views.COMPARED_STAGES
                                   for r in resources.runs(url, stage))
    views.runs_frame(latest.values())
    seen: dict[str, Any] = {"studies": resources.study_names(url),
                            "run_studies": resources.run_studies(url)}
    if name not in seen["studies"]:
        return seen
    direction, trials = resources.study_trials(url, name)
    table = sv.trials_table(trials)
    kinds = sv.param_kinds(trials)
    complete_count = int((table["state"] == "COMPLETE").sum())
    history = sv.history_frame(table, direction)
    assert len(history) == complete_count and history["value"].notna().all()
    assert set(sv.intermediate_frame(trials)["number"]) <= set(table["number"])
    assert set(sv.duration_frame(table)["number"]) <= set(table["number"])
    for frame in (sv.parallel_frame(table, kinds), sv.slices_frame(table, kinds)):
        assert frame["number"].nunique() == (complete_count if len(frame) else 0)
    rows = resources.trial_runs(url, name)
    metrics = sv.trial_metrics_frame(rows)
    complete = tuple(int(n) for n in table.loc[table["state"] == "COMPLETE", "number"])
    for target in ("objective", "f1_negative"):
        if target == "objective" or target in metrics:
            resources.importances(url, name, "PED-ANOVA", target, complete)
    # A running trial's row is replaced each epoch, so only a finished one's id stays valid
    # between the two reads.
    finished = [n for n in complete if n in rows]
    if finished:
        run = rows[max(finished)]
        views.at_threshold(resources.predictions(url, run.id), 0.5)
    resources.model_choices(url)
    return {**seen, "states": sv.state_counts(table), "rows": sorted(rows),
            "numbers": sorted(int(n) for n in table["number"])}


class Poller:
    """Calls read_dashboard with every data cache cleared; keeps what it saw and what failed."""

    def __init__(self, url: str, study: str) -> None:
        self.url, self.study = url, study
        self.seen: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def poll(self) -> dict[str, Any] | None:
        for name in DATA_CACHES:
            getattr(resources, name).clear()
        try:
            self.seen.append(read_dashboard(self.url, self.study))
        except Exception:  # noqa: BLE001 - every failure is collected and asserted on
            self.errors.append(traceback.format_exc())
            return None
        return self.seen[-1]


def test_dashboard_polling_during_eight_workers_loses_no_trial(
    url: str, tmp_path: Path, workers: Workers
) -> None:
    config = make_config(url, tmp_path, heartbeat=5)
    from trainer.tuning import study as tuning

    tuning.open_study(config, create=True)
    poller = Poller(url, config.study)
    for _ in range(8):
        workers.start(config, n_trials=5)
    while any(proc.poll() is None for proc in workers.procs):
        poller.poll()
        time.sleep(POLL_S)
    during = len(poller.seen) + len(poller.errors)
    workers.wait_all()  # every worker ended by itself with exit code 0
    final = poller.poll()

    assert not poller.errors, poller.errors[0]
    assert during >= 1  # the first poll starts while the workers do
    assert final is not None and final["studies"] == [config.study]
    assert final["states"]["COMPLETE"] == 40
    assert final["states"]["FAIL"] == final["states"]["RUNNING"] == 0
    assert final["numbers"] == final["rows"] == list(range(40))
    assert final["run_studies"] == [config.study]
    progress = [(s["states"]["COMPLETE"], len(s["rows"])) for s in poller.seen if "rows" in s]
    for before, after in itertools.pairwise(progress):
        assert after[0] >= before[0] and after[1] >= before[1]  # nothing seen ever vanishes
    with open_store(url) as store:
        assert len(store.list_runs(stage="trial", study=config.study)) == 40


def test_evaluation_page_shows_a_trial_whose_row_was_just_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.dashboard import builders

    st.cache_data.clear()
    st.cache_resource.clear()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    reviews = builders.synthetic_reviews(40)
    with open_store(url) as store:
        for trial in (0, 1):  # trial 1 is running: epoch 1 stored
            builders.save_stage(store, "trial", reviews, 1.0, seed=trial, model="tiny",
                                study="live", trial=trial, split="validation", n_bootstrap=0)
    monkeypatch.setenv("SENTIMENT_DB", url)
    app = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    at.switch_page("app_pages/evaluation.py").run()
    at.radio(key="eval_source").set_value("a tuning trial").run()
    assert not at.exception and not at.error  # trial 0 shown; the trial list is now cached
    with open_store(url) as store:  # the worker stores trial 1's next epoch
        builders.save_stage(store, "trial", reviews, 1.5, seed=7, model="tiny", study="live",
                            trial=1, split="validation", n_bootstrap=0)
    at.selectbox(key="eval_trial").set_value(1).run()
    assert not at.exception
    assert not at.error, at.error[0].value
