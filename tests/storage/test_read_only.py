"""Read-only Stores: WAL and rollback-journal files, a read-only folder, a SELECT-only role."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from storage.engine import make_engine, normalize_url
from storage.errors import StorageError
from storage.migrations import revision_state
from storage.store import NotFilledError, open_store
from tests.storage import read_only, samples
from trainer.tuning.storage import optuna_reader

SIDE_FILES = {"-wal", "-shm", "-journal"}


def journal_mode(path: Path) -> str:
    """The file's journal mode from its header (byte 18: 1 rollback, 2 WAL); opens nothing."""
    return {1: "delete", 2: "wal"}[path.read_bytes()[18]]


def written_sqlite(folder: Path, journal: str) -> Path:
    folder.mkdir()
    path = folder / "runs.db"
    read_only.written_database(f"sqlite:///{path}")
    if journal == "delete":
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode = DELETE")
    assert journal_mode(path) == journal
    assert {p.name for p in folder.iterdir()} == {"runs.db"}  # the writers closed cleanly
    return path


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_read_only_store_reads_a_written_file_and_changes_nothing(tmp_path: Path,
                                                                   journal: str) -> None:
    path = written_sqlite(tmp_path / "db", journal)
    before = read_only.snapshot(path.parent)
    assert read_only.read_everything(f"sqlite:///{path}") == read_only.expected_reads()
    after = read_only.snapshot(path.parent)
    assert after["runs.db"] == before["runs.db"] and journal_mode(path) == journal
    # Reading a WAL file makes SQLite's shared-memory index (and an empty log) beside it.
    new = {name.removeprefix("runs.db") for name in set(after) - set(before)}
    assert new <= ({"-wal", "-shm"} if journal == "wal" else set())


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_read_only_folder_serves_every_read_to_a_reader_who_cannot_write(
    tmp_path: Path, journal: str
) -> None:
    path = written_sqlite(tmp_path / "db", journal)
    with read_only.read_only_folder(path.parent) as folder:
        before = read_only.snapshot(folder)
        seen = read_only.read_unprivileged(f"sqlite:///{path}", folder)
        assert read_only.snapshot(folder) == before  # no file created or changed
    assert seen.pop("probe") == "PermissionError"  # the reader really could not write there
    assert seen == read_only.expected_reads()


def test_read_only_folder_with_a_live_writer_reads_its_latest_commit(tmp_path: Path) -> None:
    path = written_sqlite(tmp_path / "db", "wal")
    url = f"sqlite:///{path}"
    with open_store(url) as writer:  # holds the file open: its log and index stay
        writer.save_run(samples.spec(model="late"), samples.evaluation())
        assert {p.name for p in path.parent.iterdir()} >= {"runs.db-wal", "runs.db-shm"}
        with read_only.read_only_folder(path.parent) as folder:
            before = read_only.snapshot(folder)
            done = read_only.run_unprivileged(["-c", (
                "import sys; from storage.store import open_store\n"
                "with open_store(sys.argv[1], read_only=True) as s:\n"
                "    print([r.spec.model for r in s.list_runs()])"), url])
            assert read_only.snapshot(folder) == before
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['tfidf-logreg', 'tfidf-logreg', 'late']"


def test_read_only_connections_refuse_every_write(file_db_url: str) -> None:
    open_store(file_db_url).close()
    engine = make_engine(normalize_url(file_db_url), read_only=True)
    try:
        with pytest.raises(exc.DBAPIError, match="(?i)read-?only"):
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE intruder (x INTEGER)"))
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert conn.scalar(text("SHOW default_transaction_read_only")) == "on"
                # The fixture's own startup options (the schema's search_path) are kept.
                assert conn.scalar(text("SHOW search_path")).startswith("t_")
    finally:
        engine.dispose()


def test_read_only_store_refuses_to_save_and_leaves_the_rows(file_db_url: str) -> None:
    with open_store(file_db_url) as writer:
        writer.save_run(samples.spec(), samples.evaluation(), samples.predictions())
    with open_store(file_db_url, read_only=True) as reader:
        with pytest.raises(StorageError, match="opened read-only"):
            reader.save_run(samples.spec(), samples.evaluation())
        with pytest.raises(StorageError, match="opened read-only"):
            reader.delete_run(1)
        assert [r.id for r in reader.list_runs()] == [1]


def _foreign_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('not ours')")
        conn.commit()


@pytest.mark.parametrize(("make", "error"), [
    (None, NotFilledError),  # no file at all
    (lambda p: p.write_bytes(b""), NotFilledError),  # an empty file
    (_foreign_sqlite, NotFilledError),  # a SQLite database of something else
    (lambda p: p.write_text("just some notes\n" * 200), StorageError),  # not a database
])
def test_a_file_without_our_tables_names_the_command_and_is_left_as_it_was(
    tmp_path: Path, make, error: type
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "x.db"
    if make is not None:
        make(path)
    before = read_only.snapshot(folder)
    with pytest.raises(error) as caught:
        open_store(f"sqlite:///{path}", read_only=True)
    with pytest.raises(error):
        optuna_reader(f"sqlite:///{path}")
    assert read_only.snapshot(folder) == before  # unchanged, and no -wal, -shm or -journal
    message = str(caught.value)
    if error is NotFilledError:
        assert "python -m trainer baseline" in message and "python -m trainer run" in message
    else:
        assert "file is not a database" in message and "this tool wrote" in message


def test_a_postgresql_schema_without_our_tables_is_named_and_stays_empty(
    pg_schema_url: str
) -> None:
    with pytest.raises(NotFilledError, match="python -m trainer baseline"):
        open_store(pg_schema_url, read_only=True)
    with pytest.raises(NotFilledError, match="python -m trainer tune"):
        optuna_reader(pg_schema_url)
    assert read_only.table_names(pg_schema_url) == []


def test_a_revision_newer_than_this_tool_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    open_store(url).close()
    engine = make_engine(normalize_url(url), read_only=True)
    assert revision_state(engine)[0] == "head"
    engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")  # no WAL index to change beside it
        conn.execute("UPDATE sentiment_alembic_version SET version_num = 'ffffffffffff'")
        conn.commit()
    assert revision_state(engine) == ("newer", "ffffffffffff")
    engine.dispose()
    before = read_only.snapshot(tmp_path)
    with pytest.raises(StorageError, match="newer version of this tool.*upgrade the tool"):
        open_store(url, read_only=True)
    assert read_only.snapshot(tmp_path) == before


def test_a_reader_reads_tables_from_before_the_audit_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    read_only.written_database(url)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # back to revision 0001 by hand
        conn.execute("PRAGMA journal_mode = DELETE")
        audit_tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%audit%'")]
        assert audit_tables
        for name in audit_tables:
            conn.execute(f'DROP TABLE "{name}"')
        conn.execute("UPDATE sentiment_alembic_version SET version_num = '0001'")
        conn.commit()
    before = read_only.snapshot(tmp_path)
    with open_store(url, read_only=True) as store:
        assert len(store.list_runs()) == 2
        assert store.latest_audit() is None
    assert read_only.snapshot(tmp_path) == before  # not upgraded by a reader
    with open_store(url) as store:  # a writer upgrades it
        assert store.latest_audit() is None
    engine = make_engine(normalize_url(url), read_only=True)
    assert revision_state(engine)[0] == "head"
    engine.dispose()


def test_a_select_only_postgresql_role_reads_everything(pg_schema_url: str) -> None:
    import psycopg

    read_only.written_database(pg_schema_url)
    tables = read_only.table_names(pg_schema_url)
    with read_only.select_only_role(pg_schema_url) as role_url:
        plain = role_url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
        with psycopg.connect(plain) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'CREATE TABLE "{read_only.search_path_schema(pg_schema_url)}".x (a int)')
        assert read_only.read_everything(role_url) == read_only.expected_reads()
        with open_store(role_url, read_only=True) as store:
            assert read_only.RO_PASSWORD not in repr(store)
    assert read_only.table_names(pg_schema_url) == tables


def test_a_reader_of_a_read_only_folder_sees_what_a_writer_saved_later(tmp_path: Path) -> None:
    path = written_sqlite(tmp_path / "db", "wal")
    url = f"sqlite:///{path}"
    reader = ("import sys; from storage.store import open_store\n"
              "store = open_store(sys.argv[1], read_only=True)\n"
              "for _ in range(2):\n"
              "    print(len(store.list_runs()), flush=True)\n"
              "    sys.stdin.readline()\n")
    with read_only.read_only_folder(path.parent):
        process = subprocess.Popen(
            read_only.unprivileged([sys.executable, "-c", reader, url]), cwd=read_only.REPO,
            env={**os.environ, "PYTHONPATH": str(read_only.REPO)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = process.stdout.readline().strip()
            with open_store(url) as writer:  # root may write here; it checkpoints on closing
                writer.save_run(samples.spec(model="later"), samples.evaluation())
            process.stdin.write("\n")
            process.stdin.flush()
            second = process.stdout.readline().strip()
            process.stdin.write("\n")
            process.stdin.flush()
            assert process.wait(timeout=60) == 0, process.stderr.read()[-2000:]
        finally:
            process.kill()
    assert (first, second) == ("2", "3")  # the pooled connection did not keep the old file
