"""URL checks, engine settings, opening errors, and which driver errors are retried and how."""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import psycopg
import psycopg.errors
import pytest
from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url

from storage import StorageError
from storage.engine import (
    LOCK_TIMEOUT_S,
    NOTICE_AFTER_S,
    NOTICE_EVERY_S,
    READ_LOCK_TIMEOUT_S,
    RUN_KEY,
    SQLITE_BUSY_S,
    is_connection_loss,
    is_contention,
    is_opening_transient,
    is_transient,
    patiently,
    retry,
    switch_to_wal,
    wait_reason,
)
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
        # short: the retry loop waits on and says so (within 5 s), not one silent statement
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_S * 1000
        assert SQLITE_BUSY_S <= 4
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()


def test_sqlite_busy_timeout_is_a_parameter_of_the_store(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout_s=2.5) as store:
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500


def test_writers_wait_for_a_lock_up_to_a_minute_and_readers_less(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with open_store(url) as writer_store, open_store(url, read_only=True) as reader:
        assert writer_store.lock_timeout_s == LOCK_TIMEOUT_S <= 60
        assert reader.lock_timeout_s == READ_LOCK_TIMEOUT_S < LOCK_TIMEOUT_S
    with open_store(url, lock_timeout_s=7) as configured:
        assert configured.lock_timeout_s == 7


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
    store = open_store(f"sqlite:///{path}", busy_timeout_s=0.01, lock_timeout_s=0.3)
    other = sqlite3.connect(path)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="Could not save the baseline run") as caught:
            store.save_run(samples.spec(), samples.evaluation())
    finally:
        other.close()
    assert "database is locked" in str(caught.value)
    assert "after waiting 0.3 s: another process holds its lock" in str(caught.value)
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
    "broken pipe from user code": BrokenPipeError(32, "Broken pipe"),
    "connection text from user code": RuntimeError("server closed the connection unexpectedly"),
    "a storage error raised from a lock: the retries gave up": raised_from(
        StorageError("Could not save the baseline run after waiting 60 s"), locked()),
    # The SQL and its parameters are the caller's text, not the driver's verdict.
    "lock text in the parameters": exc.IntegrityError(
        "INSERT", {"note": "database is locked"}, sqlite3.IntegrityError("NOT NULL failed: x")),
    "optuna commit, bad value": optuna_commit_error(sqlite3.DataError("value too long")),
    "lock hidden by from None": raised_while_handling(RuntimeError("gave up"), locked(),
                                                      hide=True),
    "a chain that loops": looping(ValueError("bad value")),
}


CLOSED = "server closed the connection unexpectedly\n\tThis probably means the server terminated"
TERMINATED = "terminating connection due to administrator command"
REFUSED = ('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
           "Connection refused\n\tIs the server running on that host and accepting connections?")


def invalidated() -> exc.OperationalError:
    """What SQLAlchemy raises when the dialect saw the connection die (is_disconnect)."""
    return exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("consuming input"),
                                connection_invalidated=True)


CONNECTION_LOSS = {
    "pg closed, raw": psycopg.OperationalError(CLOSED),
    "pg closed, wrapped": wrapped_pg(exc.OperationalError, psycopg.OperationalError(CLOSED)),
    "pg_terminate_backend 57P01, raw": psycopg.errors.AdminShutdown(TERMINATED),
    "pg_terminate_backend 57P01, wrapped": wrapped_pg(exc.OperationalError,
                                                      psycopg.errors.AdminShutdown(TERMINATED)),
    "57P01 by code alone": psycopg.errors.AdminShutdown("bye"),
    "pg starting up 57P03": psycopg.errors.CannotConnectNow("the database system is starting up"),
    "pg connection failure 08006": psycopg.errors.ConnectionFailure("lost"),
    "pg connection refused (server restarting)": wrapped_pg(exc.OperationalError,
                                                            psycopg.OperationalError(REFUSED)),
    "optuna set_user_attr, pg closed (as found)": optuna_commit_error(
        psycopg.OperationalError(CLOSED)),
    "optuna commit, pg terminated": optuna_commit_error(psycopg.errors.AdminShutdown(TERMINATED)),
    "sqlalchemy marked it invalidated": invalidated(),
    "sqlalchemy disconnection error": exc.DisconnectionError("pre-ping failed"),
}


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_lock_waits_deadlocks_serialization_and_a_racing_run_are_transient(
    error: BaseException,
) -> None:
    assert is_transient(error)
    assert is_contention(error)
    assert not is_connection_loss(error)


@pytest.mark.parametrize("error", CONNECTION_LOSS.values(), ids=CONNECTION_LOSS.keys())
def test_a_dropped_terminated_or_refused_connection_is_transient_but_not_contention(
    error: BaseException,
) -> None:
    assert is_transient(error)
    assert is_connection_loss(error)
    assert not is_contention(error)
    assert wait_reason(error) == "the connection to it was lost or refused"


NEVER_CONNECTED = ("pg connection refused (server restarting)", "pg starting up 57P03")


@pytest.mark.parametrize("name", CONNECTION_LOSS.keys())
def test_opening_waits_for_a_dropped_connection_but_not_for_one_never_made(name: str) -> None:
    assert is_opening_transient(CONNECTION_LOSS[name]) == (name not in NEVER_CONNECTED)


def test_opening_waits_for_a_lock() -> None:
    assert is_opening_transient(locked())
    assert not is_opening_transient(ValueError("value too long"))


@pytest.mark.parametrize("error", NOT_TRANSIENT.values(), ids=NOT_TRANSIENT.keys())
def test_errors_that_would_fail_again_are_not_transient(error: BaseException | None) -> None:
    assert not is_transient(error)
    assert not is_connection_loss(error)


def test_the_wait_reason_names_a_lock_or_a_conflict() -> None:
    assert wait_reason(locked()) == "another process holds its lock"
    assert wait_reason(psycopg.errors.DeadlockDetected(DEADLOCK)) == (
        "a concurrent transaction got in the way")


class Clock:
    """A fake clock that `sleep` moves forward; each call may also cost `per_call` seconds."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class SlowLock:
    """A call that is locked until `free_at` on the clock, each try costing `busy_s` seconds."""

    def __init__(self, clock: Clock, busy_s: float, free_at: float = float("inf")) -> None:
        self.clock, self.busy_s, self.free_at, self.calls = clock, busy_s, free_at, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.clock.now >= self.free_at:
            return "done"
        self.clock.now += self.busy_s  # SQLite's busy timeout, spent inside the statement
        raise locked()


def test_retry_with_a_time_bound_gives_up_once_the_time_has_passed() -> None:
    clock = Clock()
    call = SlowLock(clock, busy_s=1.0)
    with pytest.raises(exc.OperationalError):
        retry(call, attempts=None, timeout_s=10, max_delay_s=1.0, sleep=clock.sleep,
              clock=clock, jitter=lambda: 0.5)
    assert 10 <= clock.now - 100 <= 10 + 1.0  # the bound, overshot by one attempt at most
    assert sum(clock.waits) + call.calls * 1.0 == pytest.approx(clock.now - 100)


def test_retry_cuts_the_last_wait_to_what_is_left() -> None:
    clock = Clock()
    call = SlowLock(clock, busy_s=0.0)
    with pytest.raises(exc.OperationalError):
        retry(call, attempts=None, timeout_s=3.0, first_delay_s=2.0, max_delay_s=2.0,
              sleep=clock.sleep, clock=clock, jitter=lambda: 0.5)
    assert clock.waits == pytest.approx([2.0, 1.0])


def test_retry_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="attempts or timeout_s"):
        retry(Flaky(), attempts=None)


def test_retry_takes_the_transient_test_it_is_given() -> None:
    lost = psycopg.OperationalError(CLOSED)
    with pytest.raises(psycopg.OperationalError):
        retry(Flaky(lost), attempts=3, sleep=lambda s: None, transient=is_contention)
    assert retry(Flaky(lost), attempts=3, sleep=lambda s: None) == "done"


def test_patiently_says_what_it_waits_for_after_two_seconds_then_every_ten() -> None:
    clock, told = Clock(), []
    call = SlowLock(clock, busy_s=1.0, free_at=100 + 40)
    result = patiently(call, "sqlite:///runs/x.db", timeout_s=60, notify=told.append,
                       sleep=clock.sleep, clock=clock)
    assert result == "done"
    assert told[0].startswith("waiting for the database sqlite:///runs/x.db: another process "
                              "holds its lock (")
    assert told[0].endswith(" s so far; giving up after 60 s)")
    so_far = [float(line.split("(")[1].split(" s so far")[0]) for line in told]
    assert NOTICE_AFTER_S <= so_far[0] < 5  # within 5 s of starting to wait
    assert all(b - a >= NOTICE_EVERY_S for a, b in zip(so_far, so_far[1:], strict=False))
    assert len(told) == 4  # about 2, 12, 22 and 32 s into a 40 s wait


def test_patiently_is_silent_about_a_short_wait() -> None:
    clock, told = Clock(), []
    call = SlowLock(clock, busy_s=0.2, free_at=100 + 1)
    assert patiently(call, "sqlite://", notify=told.append, sleep=clock.sleep,
                     clock=clock) == "done"
    assert told == []


def test_patiently_gives_up_with_the_last_error_after_the_bound() -> None:
    clock, told = Clock(), []
    with pytest.raises(exc.OperationalError, match="database is locked"):
        patiently(SlowLock(clock, busy_s=1.0), "sqlite://", timeout_s=5, notify=told.append,
                  sleep=clock.sleep, clock=clock)
    assert clock.now - 100 <= 5 + 1.0
    assert len(told) == 1


def rollback_journal_locked(path: Path) -> sqlite3.Connection:
    """Another process's connection holding BEGIN EXCLUSIVE on a rollback-journal file."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_opening_a_locked_database_says_so_and_gives_up_after_the_lock_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "x.db"
    open_store(f"sqlite:///{path}").close()
    holder = rollback_journal_locked(path)
    try:
        with caplog.at_level(logging.WARNING, logger="storage.engine"), \
                pytest.raises(StorageError) as caught:
            open_store(f"sqlite:///{path}", lock_timeout_s=3)
    finally:
        holder.close()
    message = str(caught.value)
    assert message.startswith(f"Could not open our tables in sqlite:///{path} after waiting 3 s:")
    assert "another process holds its lock (database is locked)" in message
    assert "\n" not in message
    waits = [r.getMessage() for r in caplog.records]
    assert waits and waits[0].startswith(f"waiting for the database sqlite:///{path}: another "
                                         "process holds its lock (")
    assert waits[0].endswith("giving up after 3 s)")


def test_switching_a_locked_file_to_wal_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = rollback_journal_locked(path)
    conn = sqlite3.connect(path, timeout=0.05)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            switch_to_wal(conn.cursor(), timeout_s=0.5)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            switch_to_wal(conn.cursor())  # one try: the caller's loop waits
    finally:
        conn.close()
        holder.close()


# --- PostgreSQL connections that drop ----------------------------------------------------


def tagged(url: str, tag: str) -> str:
    """The URL with an application_name, so a test terminates only its own backends."""
    return f"{url}&application_name={tag}" if "?" in url else f"{url}?application_name={tag}"


def terminate(url: str, tag: str) -> int:
    """pg_terminate_backend on every backend of the test database with this application_name.

    Only the test database's backends, never this connection's own; waits until they are gone.
    """
    plain = make_url(url).set(drivername="postgresql", query={}).render_as_string(
        hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s "
            "AND pid <> pg_backend_pid()", [tag]).fetchall()
    return len(rows)


@contextlib.contextmanager
def terminated_once_before(engine: object, url: str, tag: str, sql: str) -> Iterator[list[str]]:
    """Terminate the connection the first time `engine` is about to run a statement like `sql`.

    Yields the statements like `sql` that were run: two when the first was run again.
    """
    fired: list[str] = []

    def before(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith(sql):
            fired.append(statement)
            if len(fired) == 1:
                terminate(url, tag)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", before)


def test_a_dead_pooled_postgresql_connection_is_discarded(pg_schema_url: str) -> None:
    tag = f"t-{uuid.uuid4().hex[:8]}"
    url = tagged(pg_schema_url, tag)
    with open_store(url) as store:
        store.save_run(samples.spec(), samples.evaluation())
        assert terminate(url, tag) >= 1  # the pooled, idle connection
        store.save_run(samples.spec(), samples.evaluation())
        assert len(store.list_runs()) == 2


def test_a_write_whose_connection_is_terminated_mid_transaction_is_run_again_once(
    pg_schema_url: str,
) -> None:
    tag = f"t-{uuid.uuid4().hex[:8]}"
    url = tagged(pg_schema_url, tag)
    with open_store(url) as store:
        with terminated_once_before(store._engine, url, tag, "INSERT INTO SENTIMENT_RUNS") as hit:
            run_id = store.save_run(samples.spec(), samples.evaluation(), samples.predictions())
        assert len(hit) == 2  # the first attempt lost its connection, the second went through
        runs = store.list_runs()
        assert [r.id for r in runs] == [run_id]  # applied once: the lost attempt rolled back
        assert len(store.predictions(run_id)) == 4
        with store._engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM sentiment_runs")).scalar() == 1
