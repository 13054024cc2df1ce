"""URL checks, engine settings, opening errors, and which driver errors are retried and how."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import optuna
import psycopg.errors
import pytest
from sqlalchemy import exc

from storage import StorageError
from storage.engine import RUN_KEY, is_transient, retry
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


def test_sqlite_busy_timeout_is_a_parameter_of_the_store(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout_s=2.5) as store:
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500


def test_a_write_waits_out_a_short_lock_by_retrying(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = open_store(f"sqlite:///{path}", busy_timeout_s=0.05)  # each try gives up at once
    other = sqlite3.connect(path, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for a while
    release = threading.Timer(0.2, other.rollback)
    release.start()
    try:
        run_id = store.save_run(samples.spec(), samples.evaluation())
    finally:
        release.join()
        other.close()
    assert store.get_run(run_id).spec.stage == "baseline"
    store.close()


def test_a_write_that_stays_locked_is_a_storage_error_from_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = open_store(f"sqlite:///{path}", busy_timeout_s=0.01)
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="Could not save the baseline run") as caught:
            store.save_run(samples.spec(), samples.evaluation())
    finally:
        other.close()
    assert "database is locked" in str(caught.value)
    assert isinstance(caught.value.__cause__, exc.OperationalError)
    assert is_transient(caught.value.__cause__)
    assert store.list_runs() == []
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


class Flaky:
    """A call that raises each of `errors` in turn, then returns "done"; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def locked(text: str = "database is locked") -> exc.OperationalError:
    return exc.OperationalError("UPDATE t SET x = 1", {}, sqlite3.OperationalError(text))


def recorder() -> tuple[list[float], Callable[[float], None]]:
    waits: list[float] = []
    return waits, waits.append


def test_retry_repeats_a_transient_error_then_returns() -> None:
    waits, sleep = recorder()
    call = Flaky(locked(), locked())
    assert retry(call, attempts=3, sleep=sleep) == "done"
    assert call.calls == 3
    assert len(waits) == 2


def test_retry_gives_up_after_the_attempts_raising_the_last_error() -> None:
    errors = [locked(f"database is locked ({i})") for i in range(5)]
    call = Flaky(*errors)
    waits, sleep = recorder()
    with pytest.raises(exc.OperationalError) as caught:
        retry(call, attempts=4, sleep=sleep)
    assert caught.value is errors[3]
    assert call.calls == 4
    assert len(waits) == 3  # no wait after the last attempt


@pytest.mark.parametrize("error", [
    ValueError("value too long for type character varying(8)"),
    exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: t.x")),
    StorageError("There is no run with id 3 in sqlite://."),
])
def test_retry_never_repeats_an_error_that_is_not_transient(error: Exception) -> None:
    call = Flaky(error)
    waits, sleep = recorder()
    with pytest.raises(type(error)) as caught:
        retry(call, attempts=5, sleep=sleep)
    assert caught.value is error
    assert call.calls == 1 and waits == []


def test_retry_waits_double_up_to_the_cap() -> None:
    waits, sleep = recorder()
    call = Flaky(*[locked() for _ in range(7)])
    retry(call, attempts=8, first_delay_s=0.1, max_delay_s=1.0, sleep=sleep, jitter=lambda: 0.5)
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


@pytest.mark.parametrize(("jitter", "factor"), [(0.0, 0.5), (0.5, 1.0), (0.999, 1.499)])
def test_retry_jitter_scales_each_wait_between_half_and_one_and_a_half(
    jitter: float, factor: float
) -> None:
    waits, sleep = recorder()
    retry(Flaky(locked(), locked()), attempts=3, first_delay_s=0.2, max_delay_s=0.3,
          sleep=sleep, jitter=lambda: jitter)
    assert waits == pytest.approx([0.2 * factor, 0.3 * factor])


def test_retry_tells_on_retry_about_each_failed_attempt() -> None:
    first, second = locked("database is locked (1)"), locked("database is locked (2)")
    told: list[tuple[int, BaseException]] = []
    retry(Flaky(first, second), attempts=3, sleep=lambda s: None,
          on_retry=lambda attempt, e: told.append((attempt, e)))
    assert told == [(1, first), (2, second)]


def test_retry_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1, got 0"):
        retry(Flaky(), attempts=0)


def raised_from(outer: Exception, inner: BaseException) -> Exception:
    """`outer` as `raise outer from inner` leaves it."""
    try:
        raise outer from inner
    except Exception as e:
        return e


def optuna_commit_error(driver: Exception) -> Exception:
    """What Optuna's RDBStorage raises when SQLAlchemy reports `driver` during a commit."""
    wrapped = raised_from(exc.OperationalError("COMMIT", {}, driver), driver)
    return raised_from(optuna.exceptions.StorageInternalError("An exception is raised during "
                                                              "the commit."), wrapped)


def wrapped_pg(kind: type[exc.DBAPIError], driver: psycopg.Error) -> exc.DBAPIError:
    return kind("INSERT INTO sentiment_runs ...", {}, driver)


def raised_while_handling(outer: Exception, inner: Exception, *, hide: bool = False
                          ) -> Exception:
    """`outer` raised in an `except` block for `inner` (its `__context__`), or `from None`."""
    try:
        try:
            raise inner
        except Exception:
            if hide:
                raise outer from None
            raise outer
    except Exception as e:
        return e


def looping(error: Exception) -> Exception:
    error.__cause__ = error
    return error


def commit_failed_because_locked() -> Exception:
    error = RuntimeError("commit failed")
    error.__cause__ = sqlite3.OperationalError("database is locked")
    return error


DEADLOCK = "deadlock detected\nDETAIL: Process 1 waits for ShareLock on transaction 2"
SERIALIZE = "could not serialize access due to concurrent update"
DUPLICATE_RUN = f'duplicate key value violates unique constraint "{RUN_KEY}"'
TRANSIENT = {
    "sqlite locked, wrapped": locked(),
    "sqlite table locked, wrapped": locked("database table is locked"),
    "sqlite busy, wrapped": locked("database is busy"),
    "sqlite locked, raw": sqlite3.OperationalError("database is locked"),
    "sqlite table locked, raw": sqlite3.OperationalError("database table is locked: t"),
    "pg deadlock, raw": psycopg.errors.DeadlockDetected(DEADLOCK),
    "pg deadlock, wrapped": wrapped_pg(exc.OperationalError,
                                       psycopg.errors.DeadlockDetected(DEADLOCK)),
    "pg serialization, raw": psycopg.errors.SerializationFailure(SERIALIZE),
    "pg serialization, wrapped": wrapped_pg(exc.OperationalError,
                                            psycopg.errors.SerializationFailure(SERIALIZE)),
    "pg 40001 by code alone": psycopg.errors.SerializationFailure("restart transaction"),
    "pg 40P01 by code alone": psycopg.errors.DeadlockDetected("restart transaction"),
    "pg duplicate run, wrapped": wrapped_pg(exc.IntegrityError,
                                            psycopg.errors.UniqueViolation(DUPLICATE_RUN)),
    "deadlock in a plain message": RuntimeError("ERROR: deadlock detected"),
    "serialization in a plain message": RuntimeError("ERROR: could not serialize access"),
    "optuna commit, sqlite locked": optuna_commit_error(sqlite3.OperationalError(
        "database is locked")),
    "optuna commit, pg deadlock": optuna_commit_error(psycopg.errors.DeadlockDetected(DEADLOCK)),
    "caused by a raw sqlite lock": commit_failed_because_locked(),
    "raised while handling a lock": raised_while_handling(RuntimeError("rollback failed"),
                                                          locked()),
}
NOT_TRANSIENT = {
    "nothing": None,
    "value too long": ValueError("value too long for type character varying"),
    "sqlite unique": exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError(
        "UNIQUE constraint failed: sentiment_runs.study")),
    "sqlite no such table": exc.OperationalError("SELECT", {}, sqlite3.OperationalError(
        "no such table: sentiment_runs")),
    "pg duplicate of another key": wrapped_pg(exc.IntegrityError, psycopg.errors.UniqueViolation(
        'duplicate key value violates unique constraint "pk"')),
    "pg connection refused": wrapped_pg(exc.OperationalError, psycopg.OperationalError(
        "connection refused")),
    # The SQL and its parameters are the caller's text, not the driver's verdict.
    "lock text in the parameters": exc.IntegrityError(
        "INSERT", {"note": "database is locked"}, sqlite3.IntegrityError("NOT NULL failed: x")),
    "optuna commit, bad value": optuna_commit_error(sqlite3.DataError("value too long")),
    "lock hidden by from None": raised_while_handling(RuntimeError("gave up"), locked(),
                                                      hide=True),
    "a chain that loops": looping(ValueError("bad value")),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_lock_waits_deadlocks_serialization_and_a_racing_run_are_transient(
    error: BaseException,
) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", NOT_TRANSIENT.values(), ids=NOT_TRANSIENT.keys())
def test_errors_that_would_fail_again_are_not_transient(error: BaseException | None) -> None:
    assert not is_transient(error)
