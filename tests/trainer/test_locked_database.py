"""A locked database: commands say they wait and on what, give up in time, keep finished work."""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.store import open_store
from trainer.cli import main
from trainer.stages import UNSAVED


@contextmanager
def held_write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's transaction holding the write lock (BEGIN IMMEDIATE) of a WAL file."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.rollback()
        holder.close()


def kept_files(artifacts: Path) -> list[Path]:
    return sorted((artifacts / UNSAVED).glob("*.json"))


def test_a_baseline_that_cannot_save_says_it_waits_gives_up_and_keeps_its_result(
    tmp_path: Path, small_imdb: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, artifacts = tmp_path / "runs.db", tmp_path / "art"
    db = f"sqlite:///{path}"
    open_store(db).close()  # our tables exist; the file is in WAL mode
    args = ["--quiet", "baseline", "--data", str(small_imdb), "--db", db,
            "--artifacts", str(artifacts), "--lock-timeout", "3"]
    with caplog.at_level(logging.WARNING, logger="storage"), held_write_lock(path):
        assert main(args) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    (kept,) = kept_files(artifacts)
    assert err[0].startswith(f"error: Could not save the baseline run in {db} after waiting 3 s: "
                             "another process holds its lock (database is locked)")
    assert f"the finished run is kept in {kept}" in err[0]
    waits = [r.getMessage() for r in caplog.records if r.name.startswith("storage")]
    assert waits and waits[0].startswith(f"waiting for the database {db}: another process holds "
                                         "its lock (")
    assert waits[0].endswith("s so far; giving up after 3 s)")
    with open_store(db) as store:
        assert store.list_runs() == []
    kept_run = json.loads(kept.read_text())
    assert kept_run["spec"]["stage"] == "baseline" and len(kept_run["probs"]) == 100

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer"):
        assert main(args) == 0  # the lock is gone: the kept result is stored, not retrained
    assert any(f"stored the result kept in {kept}" in r.getMessage() for r in caplog.records)
    assert kept_files(artifacts) == []
    with open_store(db) as store:
        (run,) = store.list_runs()
    assert run.spec.stage == "baseline" and run.evaluation.n == 100
    assert run.spec.duration_s == kept_run["spec"]["duration_s"]  # the first command's training
    assert main(args) == 0  # and then it is simply done
    with open_store(db) as store:
        assert len(store.list_runs()) == 1


def test_a_kept_result_for_other_reviews_is_ignored_and_the_stage_runs(
    tmp_path: Path, small_imdb: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, artifacts = tmp_path / "runs.db", tmp_path / "art"
    db = f"sqlite:///{path}"
    args = ["--quiet", "baseline", "--data", str(small_imdb), "--db", db,
            "--artifacts", str(artifacts), "--lock-timeout", "1"]
    open_store(db).close()
    with held_write_lock(path):
        assert main(args) == 1
    (kept,) = kept_files(artifacts)
    saved = json.loads(kept.read_text())
    saved["review_ids"] = saved["review_ids"][::-1]  # as if the data had changed since
    saved["spec"]["duration_s"] = -1.0  # no run takes that long: it marks the kept result
    kept.write_text(json.dumps(saved))

    with caplog.at_level(logging.WARNING, logger="trainer"):
        assert main(args) == 0
    assert any("was kept for other reviews; ignoring it" in r.getMessage()
               for r in caplog.records)
    with open_store(db) as store:
        (run,) = store.list_runs()
    assert run.spec.duration_s >= 0  # trained again, not the kept result (a baseline can
    # train as fast as the kept one did, so equal durations proved nothing)


def test_the_lock_timeout_option_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline", "--lock-timeout", "0"]) == 1
    assert "lock_timeout must be a whole number of seconds ≥ 1, got 0" in capsys.readouterr().err
