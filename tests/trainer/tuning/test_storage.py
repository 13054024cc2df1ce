"""Optuna's storage for many workers: a busy timeout passed in, lock waits retried."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import optuna

from trainer.tuning.storage import optuna_storage


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

