"""Database engines: URL checks, SQLite pragmas and locking, driver-error classification."""
from __future__ import annotations

import json
import re
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError

ACCEPTED = "sqlite:///path/to.db or postgresql+psycopg://user@host/db"
SQLITE_BUSY_S = 30  # how long one SQLite statement waits for another writer's lock
PG_CONNECT_TIMEOUT_S = 10
RUN_KEY = "uq_sentiment_runs_study_trial_stage"


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


def make_engine(url: URL) -> Engine:
    """An engine for a normalised URL: PostgreSQL with pre-ping, SQLite tuned for many writers.

    Args:
        url: a URL that `normalize_url` returned.

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
    return _sqlite_engine(url, serializer)


def writer(engine: Engine) -> Engine:
    """The same engine and pool, but SQLite transactions start with BEGIN IMMEDIATE."""
    return engine.execution_options(sqlite_write=True)


def _sqlite_engine(url: URL, serializer: Any) -> Engine:
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
        connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False},
        json_serializer=serializer,
    )
    event.listen(engine, "connect", partial(_sqlite_on_connect, wal=not memory))
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, record: Any, *, wal: bool) -> None:
    """Per connection: our own BEGINs, busy timeout, enforced foreign keys, WAL."""
    dbapi_conn.isolation_level = None  # sqlite3 would not BEGIN before DDL or SELECT
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_S * 1000}")
    cursor.execute("PRAGMA foreign_keys = ON")
    if wal:
        switch_to_wal(cursor)
    cursor.close()


def switch_to_wal(cursor: Any, attempts: int = 40) -> None:
    """Put the file in WAL mode (persistent), retrying while another process switches it.

    Changing the journal mode needs an exclusive lock and SQLite does not always wait on the busy
    handler for it, so two processes opening one new file can see "database is locked" at once.
    """
    for attempt in range(attempts):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front, so a read-then-write never hits a stale snapshot."""
    immediate = conn.get_execution_options().get("sqlite_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_transient(e: exc.DBAPIError) -> bool:
    """Whether retrying the transaction may succeed.

    Args:
        e: what the driver raised.

    Returns:
        True for SQLite lock timeouts, PostgreSQL serialization failures and deadlocks, and a
        concurrent writer of the same (study, trial, stage).
    """
    message = str(e.orig).lower()
    if isinstance(e, exc.OperationalError) and ("locked" in message or "busy" in message):
        return True
    code = getattr(e.orig, "sqlstate", None)
    return code in ("40001", "40P01") or (code == "23505" and RUN_KEY in message)


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


def _json_default(value: Any) -> Any:
    """numpy scalars become Python numbers; anything else (paths…) its string."""
    return value.item() if hasattr(value, "item") else str(value)
