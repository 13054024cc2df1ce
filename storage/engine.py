"""Database engines: URL checks, SQLite pragmas and locking, transient errors and their retry."""
from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError

ACCEPTED = "sqlite:///path/to.db or postgresql+psycopg://user@host/db"
SQLITE_BUSY_S = 30  # how long one SQLite statement waits for another writer's lock
PG_CONNECT_TIMEOUT_S = 10
RUN_KEY = "uq_sentiment_runs_study_trial_stage"
RETRY_ATTEMPTS = 6
RETRY_FIRST_DELAY_S = 0.05  # the first wait; each later one doubles, up to RETRY_MAX_DELAY_S
RETRY_MAX_DELAY_S = 2.0
WAL_ATTEMPTS = 40
# PostgreSQL serialization failure and deadlock: the transaction was rolled back, run it again.
TRANSIENT_SQLSTATES = ("40001", "40P01")
TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "deadlock detected",
    "could not serialize access",
)
CHAIN_LIMIT = 10  # links of __cause__/__context__ that is_transient follows

T = TypeVar("T")


def normalize_url(url: str) -> URL:
    """Parse a database URL, mapping plain postgresql:// to psycopg 3.

    Raises:
        StorageError: the URL is malformed or names an unsupported database.
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError, TypeError) as e:
        shown = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))
        raise StorageError(f"{shown!r} is not a valid database URL; use {ACCEPTED}.") from e
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    raise StorageError(f"The database URL {shown!r} is not supported; use {ACCEPTED}.")


def make_engine(url: URL, busy_timeout_s: float | None = None) -> Engine:
    """An engine for a normalised URL: PostgreSQL with pre-ping, SQLite tuned for many writers.

    Args:
        url: a URL that `normalize_url` returned.
        busy_timeout_s: how long one SQLite statement waits for another writer's lock;
            None: SQLITE_BUSY_S. PostgreSQL ignores it.

    Returns:
        The engine; `writer(engine)` gives the variant to use for write transactions.

    Raises:
        StorageError: the folder of a SQLite file cannot be created.
    """
    serializer = partial(json.dumps, default=_json_default)
    if url.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        if "connect_timeout" in url.query:
            connect_args = {}
        return create_engine(
            url, pool_pre_ping=True, connect_args=connect_args, json_serializer=serializer
        )
    busy = SQLITE_BUSY_S if busy_timeout_s is None else busy_timeout_s
    return _sqlite_engine(url, serializer, busy)


def writer(engine: Engine) -> Engine:
    """The same engine and pool, but SQLite transactions start with BEGIN IMMEDIATE."""
    return engine.execution_options(sqlite_write=True)


def _sqlite_engine(url: URL, serializer: Any, busy_timeout_s: float) -> Engine:
    memory = url.database in (None, "", ":memory:")
    if not memory:
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"Could not create the folder for the SQLite file {url.database} ({e}); "
                "choose a path you can write to."
            ) from e
    engine = create_engine(
        url,
        # One in-memory database must be shared by every session of the Store.
        poolclass=StaticPool if memory else None,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
        json_serializer=serializer,
    )
    on_connect = partial(_sqlite_on_connect, wal=not memory, busy_timeout_s=busy_timeout_s)
    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_on_connect(
    dbapi_conn: Any, record: Any, *, wal: bool, busy_timeout_s: float
) -> None:
    """Per connection: our own BEGINs, busy timeout, enforced foreign keys, WAL."""
    dbapi_conn.isolation_level = None  # sqlite3 would not BEGIN before DDL or SELECT
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
    cursor.execute("PRAGMA foreign_keys = ON")
    if wal:
        switch_to_wal(cursor)
    cursor.close()


def switch_to_wal(cursor: Any, attempts: int = WAL_ATTEMPTS) -> None:
    """Put the file in WAL mode (persistent), retrying while another process switches it.

    Changing the journal mode needs an exclusive lock and SQLite does not always wait on the busy
    handler for it, so two processes opening one new file can see "database is locked" at once.

    Args:
        cursor: a cursor of a sqlite3 connection to the file.
        attempts: tries before the last "database is locked" is raised.

    Raises:
        sqlite3.OperationalError: the file stayed locked, or another failure.
    """
    def switch() -> None:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")

    retry(switch, attempts=attempts, max_delay_s=0.5)


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front, so a read-then-write never hits a stale snapshot."""
    immediate = conn.get_execution_options().get("sqlite_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_transient(error: BaseException | None) -> bool:
    """Whether running the failed transaction again may succeed.

    Follows the chain of causes, so an error raised from a driver error (SQLAlchemy's wrapper,
    Optuna's StorageInternalError) counts as what the driver said.

    Args:
        error: what was raised: a SQLAlchemy error, a sqlite3/psycopg error, or any exception.

    Returns:
        True for SQLite lock timeouts, PostgreSQL serialization failures and deadlocks, and a
        concurrent writer of the same (study, trial, stage).
    """
    return any(_transient_link(link) for link in _chain(error))


def retry(
    call: Callable[[], T],
    *,
    attempts: int = RETRY_ATTEMPTS,
    first_delay_s: float = RETRY_FIRST_DELAY_S,
    max_delay_s: float = RETRY_MAX_DELAY_S,
    sleep: Callable[[float], object] = time.sleep,
    jitter: Callable[[], float] = random.random,
    on_retry: Callable[[int, BaseException], object] | None = None,
) -> T:
    """Call `call` until it returns, waiting longer after each transient failure.

    The waits double from `first_delay_s` up to `max_delay_s`, each scaled by 0.5 + jitter()
    so that processes which failed together do not retry together. Only a call that failed as
    a whole (a rolled-back transaction) is safe to repeat.

    Args:
        call: the work, without arguments.
        attempts: calls at most, the first included.
        first_delay_s: the wait after the first failure, before jitter.
        max_delay_s: the longest wait, before jitter.
        sleep: waits that many seconds (tests pass a recorder).
        jitter: a number in [0, 1) per wait.
        on_retry: told (attempt that failed, its error) before each wait, to log it.

    Returns:
        What `call` returned.

    Raises:
        ValueError: `attempts` is below 1.
        Exception: the error of the last attempt, or the first error that is not transient.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    delay = min(first_delay_s, max_delay_s)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as e:
            if attempt == attempts or not is_transient(e):
                raise
            if on_retry is not None:
                on_retry(attempt, e)
        sleep(delay * (0.5 + jitter()))
        delay = min(2 * delay, max_delay_s)
    raise AssertionError("unreachable")


def open_hint(url: URL) -> str:
    """What to check when a database cannot be opened, for the end of an error sentence."""
    if url.get_backend_name() == "postgresql":
        return (
            "check that the PostgreSQL server is running, the database exists, and the URL "
            "looks like postgresql+psycopg://user@host/db"
        )
    return "check that the path names a SQLite database file (or a new one) you can write to"


def reason(e: Exception) -> str:
    """The driver's own message on one line, for the end of a StorageError sentence."""
    cause = getattr(e, "orig", None) or e
    return " ".join(str(cause).split()) or type(cause).__name__


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error, then what it was raised from or while handling, up to CHAIN_LIMIT links."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen and len(seen) < CHAIN_LIMIT:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def _transient_link(error: BaseException) -> bool:
    """One link of the chain; SQLAlchemy's wrapper is judged by the driver error it holds."""
    driver = getattr(error, "orig", None) or error
    message = str(driver).lower()
    code = getattr(driver, "sqlstate", None)
    if code in TRANSIENT_SQLSTATES or (code == "23505" and RUN_KEY in message):
        return True
    operational = isinstance(error, exc.OperationalError | sqlite3.OperationalError)
    if operational and ("locked" in message or "busy" in message):
        return True
    return any(text in message for text in TRANSIENT_MESSAGES)


def _json_default(value: Any) -> Any:
    """numpy scalars become Python numbers; anything else (paths…) its string."""
    return value.item() if hasattr(value, "item") else str(value)
