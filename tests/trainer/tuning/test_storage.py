"""Optuna's storage for many workers: bounded lock waits, dropped connections, reaped trials."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy import event, exc

from storage.errors import StorageError
from tests.storage.test_engines import tagged, terminated_once_before
from trainer.tuning.storage import REAPED, PatientRDBStorage, optuna_storage
from trainer.tuning.trials import FAIL_REASON


def test_busy_timeout_is_a_parameter_of_the_optuna_storage(tmp_path: Path) -> None:
    storage = optuna_storage(f"sqlite:///{tmp_path / 'x.db'}", 0, busy_timeout_s=0.25)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    storage.engine.dispose()


def test_a_locked_sqlite_database_is_waited_out_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    storage = optuna_storage(f"sqlite:///{path}", 0, busy_timeout_s=0.05)  # each try gives up
    study = optuna.create_study(storage=storage, study_name="s")
    other = sqlite3.connect(path, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for a while
    release = threading.Timer(0.5, other.rollback)
    release.start()
    try:
        study.set_user_attr("written", "despite the lock")
    finally:
        release.join()
        other.close()
    assert study.user_attrs["written"] == "despite the lock"



# --- waits that end, reasons that stay, connections that drop ---------------------------


def test_a_call_that_stays_locked_is_one_storage_error_naming_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    storage = optuna_storage(f"sqlite:///{path}", 0, busy_timeout_s=0.05, lock_timeout_s=0.3)
    study = optuna.create_study(storage=storage, study_name="s")
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError) as caught:
            study.set_user_attr("written", "never")
    finally:
        other.close()
    message = str(caught.value)
    assert "after waiting 0.3 s: another process holds its lock (database is locked)" in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, optuna.exceptions.StorageInternalError)
    storage.engine.dispose()


def test_opening_a_locked_study_storage_gives_up_after_the_lock_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # rollback journal: nobody may even read
    try:
        with caplog.at_level(logging.WARNING, logger="storage.engine"), \
                pytest.raises(StorageError, match="after waiting 3 s") as caught:
            optuna_storage(f"sqlite:///{path}", 0, lock_timeout_s=3)
    finally:
        holder.close()
    assert "another process holds its lock" in str(caught.value)
    assert any(r.getMessage().startswith(f"waiting for the database sqlite:///{path}: another "
                                         "process holds its lock") for r in caplog.records)


def test_a_finish_whose_lost_commit_had_applied_counts_as_done(tmp_path: Path) -> None:
    storage = optuna_storage(f"sqlite:///{tmp_path / 'x.db'}", 0)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    finishing, lost = [], []

    def flushed(session: Any, context: Any) -> None:
        finishing[:] = [o for o in session.dirty if type(o).__name__ == "TrialModel"]

    def drop_after_commit(session: Any) -> None:  # the COMMIT went through, its answer did not
        if finishing and not lost:
            lost.append(True)
            raise exc.OperationalError("COMMIT", {}, psycopg.OperationalError(
                "server closed the connection unexpectedly"))

    event.listen(storage.scoped_session, "after_flush", flushed)
    event.listen(storage.scoped_session, "after_commit", drop_after_commit)
    try:
        study.tell(trial, 0.75)
    finally:
        event.remove(storage.scoped_session, "after_commit", drop_after_commit)
        event.remove(storage.scoped_session, "after_flush", flushed)
    assert lost
    (done,) = study.get_trials(deepcopy=False)
    assert (done.state, done.value) == (TrialState.COMPLETE, 0.75)


def stale_storage(url: str) -> PatientRDBStorage:
    """A storage whose trials go stale one second after their last heartbeat."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return PatientRDBStorage(
            url, heartbeat_interval=1, grace_period=1,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_reaped_trial_says_why_and_its_retry_does_not_inherit_the_reason(
    tmp_path: Path,
) -> None:
    storage = stale_storage(f"sqlite:///{tmp_path / 'x.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(dead._trial_id)  # its worker beat once, then died
    dead.set_user_attr("epoch_metrics", [{"epoch": 1}])
    never = study.ask()  # its worker died before its first heartbeat: Optuna never reaps it
    time.sleep(2.5)  # past the one-second grace in SQLite's whole seconds
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in (dead.number, never.number):
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs[FAIL_REASON] == REAPED
    assert trials[alive.number].state == TrialState.RUNNING
    retries = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [dead.number, never.number]
    for retry in retries:
        assert FAIL_REASON not in retry.user_attrs
    (retry_of_dead,) = [t for t in retries if t.system_attrs["failed_trial"] == dead.number]
    assert retry_of_dead.params == trials[dead.number].params
    assert retry_of_dead.user_attrs["epoch_metrics"] == [{"epoch": 1}]


def test_the_postgresql_study_storage_pings_its_pooled_connections(pg_schema_url: str) -> None:
    storage = optuna_storage(pg_schema_url, 0)
    assert storage.engine.pool._pre_ping
    storage.engine.dispose()


def test_set_user_attr_whose_connection_is_terminated_is_run_again(pg_schema_url: str) -> None:
    tag = f"t-{uuid.uuid4().hex[:8]}"
    url = tagged(pg_schema_url, tag)
    storage = optuna_storage(url, 0)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    # What two of fourteen workers died of: StorageInternalError from set_user_attr's commit.
    with terminated_once_before(storage.engine, url, tag, "INSERT INTO TRIAL_USER_ATTRIBUTES"
                                ) as hit:
        trial.set_user_attr("epoch_metrics", [{"epoch": 1}])
    assert len(hit) == 2
    trial.report(0.5, 1)
    study.tell(trial, 0.5)
    (done,) = study.get_trials(deepcopy=False)
    assert done.user_attrs["epoch_metrics"] == [{"epoch": 1}]
    assert done.state == TrialState.COMPLETE
    storage.engine.dispose()


def test_two_workers_never_both_pop_one_queued_trial_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first, second = optuna_storage(url, 0), optuna_storage(url, 0)
    study = optuna.create_study(storage=first, study_name="s")
    study.enqueue_trial({"x": 0.5})  # a queued retry, as the heartbeat reaper leaves one
    (queued,) = study.get_trials(deepcopy=False)
    other: list[bool] = []
    racer = threading.Thread(target=lambda: other.append(
        second.set_trial_state_values(queued._trial_id, TrialState.RUNNING)))

    def the_other_worker_pops_it_meanwhile(conn: Any, cursor: Any, statement: str,
                                           *args: Any) -> None:
        if statement.startswith("UPDATE trials") and not racer.is_alive() and not other:
            racer.start()  # between the first worker's read of the trial and its write
            racer.join(timeout=1.0)  # done at once, unless the first holds the write lock

    event.listen(first.engine, "before_cursor_execute", the_other_worker_pops_it_meanwhile)
    try:
        mine = first.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
    finally:
        event.remove(first.engine, "before_cursor_execute", the_other_worker_pops_it_meanwhile)
    racer.join()
    assert sorted([mine, *other]) == [False, True]  # exactly one of them runs the trial
    first.engine.dispose()
    second.engine.dispose()
