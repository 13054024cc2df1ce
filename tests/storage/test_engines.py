"""URL checks, engine settings and the errors a user can cause when opening a database."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc

from storage import StorageError
from storage.store import Store, open_store
from tests.storage import samples


@pytest.mark.parametrize("url", [
    "foo://x",
    "mysql://user@host/db",
    "sqlite+aiosqlite:///x.db",
    "not a url",
    "postgresql://user@host:notaport/db",
])
def test_unsupported_or_malformed_urls_name_the_accepted_forms(url: str) -> None:
    with pytest.raises(StorageError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "sqlite:///path/to.db" in message and "postgresql+psycopg://" in message
    assert url.split(":")[0] in message


def test_unreachable_server_is_a_storage_error_from_the_driver_error() -> None:
    with pytest.raises(StorageError, match=r"127\.0\.0\.1") as caught:
        open_store("postgresql://postgres:s3cret@127.0.0.1:1/test")
    assert isinstance(caught.value.__cause__, exc.OperationalError)
    assert "s3cret" not in str(caught.value)


def test_plain_postgresql_url_uses_psycopg3(pg_schema_url: str) -> None:
    plain = pg_schema_url.replace("postgresql+psycopg://", "postgresql://")
    with open_store(plain) as store:
        assert store.url.startswith("postgresql+psycopg://")
        assert store.save_run(samples.spec(), samples.evaluation()) > 0


def test_sqlite_file_in_missing_folders_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "runs.db"
    with open_store(f"sqlite:///{path}") as store:
        store.save_run(samples.spec(), samples.evaluation())
    assert path.exists()
    with open_store(f"sqlite:///{path}") as reopened:  # migrations are idempotent
        assert len(reopened.list_runs()) == 1


def test_sqlite_folder_that_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="folder") as caught:
        open_store(f"sqlite:///{tmp_path / 'file' / 'runs.db'}")
    assert isinstance(caught.value.__cause__, OSError)


def test_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is a text file, not SQLite " * 200)
    with pytest.raises(StorageError, match="not a database") as caught:
        open_store(f"sqlite:///{path}")
    assert isinstance(caught.value.__cause__, exc.DatabaseError)


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_database_is_shared_by_the_store(url: str) -> None:
    store = open_store(url)
    run_id = store.save_run(samples.spec(), samples.evaluation(), samples.predictions())
    assert store.get_run(run_id).id == run_id
    assert len(store.predictions(run_id)) == 4
    store.close()


def test_store_is_a_context_manager(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        assert "x.db" in repr(store)
