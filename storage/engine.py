"""Database engines: URL checks, SQLite pragmas and locking, transient errors and their retry."""
from __future__ import annotations

import json
import logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError

ACCEPTED = "sqlite:///path/to.db or postgresql+psycopg://user@host/db"
# How long one SQLite statement waits for another writer's lock. Short on purpose: `patiently`
# then waits on in a loop that says what it is waiting for, up to its own bound.
SQLITE_BUSY_S = 2
LOCK_TIMEOUT_S = 60  # how long one operation waits in all for a locked or unreachable database
READ_LOCK_TIMEOUT_S = 10  # a reader (the dashboard, `report`) gives up sooner: pages must not hang
NOTICE_AFTER_S = 2  # a wait that has lasted this long is reported (well within 5 s) ...
NOTICE_EVERY_S = 10  # ... and again this often while it lasts
PG_CONNECT_TIMEOUT_S = 10
RUN_KEY = "uq_sentiment_runs_study_trial_stage"
RETRY_ATTEMPTS = 6
RETRY_FIRST_DELAY_S = 0.05  # the first wait; each later one doubles, up to RETRY_MAX_DELAY_S
RETRY_MAX_DELAY_S = 2.0
# PostgreSQL serialization failure and deadlock: the transaction was rolled back, run it again.
TRANSIENT_SQLSTATES = ("40001", "40P01")
TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "deadlock detected",
    "could not serialize access",
)
# A lost connection: the server ended it (57P01 pg_terminate_backend, 57P02 crash, 57P03 not
# accepting connections yet) or it broke (class 08); a restarting server refuses connections.
CONNECTION_SQLSTATES = ("57P01", "57P02", "57P03")
CONNECTION_MESSAGES = (
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "connection refused",
    "the connection is closed",
    "the connection is lost",
    "consuming input failed",
    "could not receive data from server",
    "could not send data to server",
    "ssl connection has been closed unexpectedly",
    "connection reset by peer",
    "broken pipe",
    "no connection to the server",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
)
DRIVER_MODULES = ("psycopg", "psycopg2", "sqlite3", "sqlalchemy")  # whose errors name connections
# A connection that was never made: a wrong host or port, or a server that is down or starting.
CONNECT_FAILURES = ("connection refused", "connection failed", "could not connect",
                    "could not translate host name", "timeout expired",
                    "the database system is starting up")
CHAIN_LIMIT = 10  # links of __cause__/__context__ that is_transient follows
SECRET_WORDS = ("password", "passwd", "secret", "token")  # query parameters shown as MASK
MASK = "***"

T = TypeVar("T")
log = logging.getLogger(__name__)


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
    raise StorageError(f"The database URL {display_url(parsed)!r} is not supported; "
                       f"use {ACCEPTED}.")


def display_url(url: URL) -> str:
    """The URL as messages and pages may show it: the password, and any parameter named like
    one (libpq also takes password=… in the query), as ***."""
    query = {key: (MASK if any(word in key.lower() for word in SECRET_WORDS) else value)
             for key, value in url.query.items()}
    shown = url.set(query=query).render_as_string(hide_password=True)
    return shown.replace(quote(MASK, safe=""), MASK)


def make_engine(url: URL, busy_timeout_s: float | None = None, *, read_only: bool = False
                ) -> Engine:
    """An engine for a normalised URL: PostgreSQL with pre-ping, SQLite tuned for many writers.

    Args:
        url: a URL that `normalize_url` returned.
        busy_timeout_s: how long one SQLite statement waits for another writer's lock;
            None: SQLITE_BUSY_S. PostgreSQL ignores it.
        read_only: every connection only reads (`read_only_options`): nothing is created,
            no folder, no file, no WAL switch.

    Returns:
        The engine; `writer(engine)` gives the variant to use for write transactions.

    Raises:
        StorageError: the folder of a SQLite file cannot be created.
    """
    serializer = partial(json.dumps, default=_json_default)
    if read_only and not is_memory(url):
        busy = SQLITE_BUSY_S if busy_timeout_s is None else busy_timeout_s
        engine = create_engine(url, json_serializer=serializer, **read_only_options(url, busy))
        if url.get_backend_name() == "sqlite":
            event.listen(engine, "begin", _sqlite_begin)  # one snapshot per transaction
        return guard_immutable(engine)
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


def is_memory(url: URL) -> bool:
    """Whether the URL names an in-memory SQLite database (gone when its process ends)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def read_only_options(url: URL, busy_timeout_s: float = SQLITE_BUSY_S) -> dict[str, Any]:
    """`create_engine` keyword arguments whose every connection can only read.

    SQLite: the file opened with mode=ro and query_only, never created and never switched to
    WAL (`connect_read_only`). PostgreSQL: every transaction starts READ ONLY
    (default_transaction_read_only=on in the connection's startup options).

    Args:
        url: a file or server URL that `normalize_url` returned.
        busy_timeout_s: how long one SQLite statement waits for a writer's lock.

    Returns:
        Keyword arguments for `sqlalchemy.create_engine(url, ...)`; pass the engine made with
        them through `guard_immutable`.
    """
    if url.get_backend_name() == "postgresql":
        given = url.query.get("options")
        options = " ".join([*([given] if isinstance(given, str) else given or ()),
                            "-c default_transaction_read_only=on"])
        connect_args: dict[str, Any] = {"options": options}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        return {"connect_args": connect_args, "pool_pre_ping": True}
    return {"creator": partial(connect_read_only, url.database, busy_timeout_s)}


class ImmutableConnection(sqlite3.Connection):
    """A sqlite3 connection opened `immutable` by connect_read_only, and how the file (and its
    write-ahead log) looked then."""

    path: Path
    seen: tuple[int, ...]


def guard_immutable(engine: Engine) -> Engine:
    """Make the engine's pool drop an `immutable` connection once the file or its write-ahead
    log changed (a writer has opened it since), so that the next one reads what it wrote.

    Args:
        engine: an engine whose connections come from connect_read_only (others are left be).

    Returns:
        The same engine.
    """
    event.listen(engine, "checkout", _check_immutable)
    return engine


def _check_immutable(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    if isinstance(dbapi_conn, ImmutableConnection) and \
            _file_state(dbapi_conn.path) != dbapi_conn.seen:
        raise exc.DisconnectionError("a writer changed the file: open it afresh")


def _file_state(path: Path) -> tuple[int, ...]:
    """Size and modification time of a SQLite file and of its write-ahead log (-1: none)."""
    state: list[int] = []
    for file in (path, Path(f"{path}-wal")):
        try:
            info = file.stat()
            state += [info.st_size, info.st_mtime_ns]
        except OSError:
            state += [-1, -1]
    return tuple(state)


def connect_read_only(path: str, busy_timeout_s: float = SQLITE_BUSY_S) -> sqlite3.Connection:
    """A sqlite3 connection that only reads the file at `path` and never creates it.

    A WAL file whose writers have all closed has no -shm index, and a reader that cannot
    write the folder cannot make one ("attempt to write a readonly database"). Such a file,
    with no write-ahead log beside it, holds every commit, and is opened `immutable`: no writer
    has it open, since a writer makes the index and the log; once one does, `guard_immutable`
    has the pool open the file afresh.

    Args:
        path: the SQLite file.
        busy_timeout_s: how long one statement waits for a writer's lock.

    Returns:
        The connection, in autocommit mode (the engine issues BEGIN), with query_only on.

    Raises:
        sqlite3.Error: the file is missing, is not a database, or cannot be read.
    """
    target = Path(path).absolute()
    uri = f"file:{quote(str(target))}?mode=ro"

    def connect(suffix: str = "", factory: type = sqlite3.Connection) -> sqlite3.Connection:
        return sqlite3.connect(uri + suffix, uri=True, timeout=busy_timeout_s,
                               check_same_thread=False, isolation_level=None, factory=factory)

    conn = connect()
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header (and WAL index)
    except sqlite3.OperationalError as e:
        conn.close()
        text = str(e).lower()
        no_index = "readonly" in text or "unable to open" in text
        seen = _file_state(target)
        if not no_index or not target.is_file() or os.access(target.parent, os.W_OK) \
                or seen[2] > 0:  # a log with content holds commits the file does not
            raise
        conn = connect("&immutable=1", ImmutableConnection)
        conn.path, conn.seen = target, seen
    conn.execute("PRAGMA query_only = ON")
    return conn


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


def switch_to_wal(cursor: Any, *, timeout_s: float = 0.0) -> None:
    """Put the file in WAL mode (persistent), retrying while another process holds its lock.

    Changing the journal mode needs an exclusive lock and SQLite does not always wait on the busy
    handler for it, so two processes opening one new file can see "database is locked" at once.

    Args:
        cursor: a cursor of a sqlite3 connection to the file.
        timeout_s: how long to keep trying in all, saying so after NOTICE_AFTER_S; 0: one try,
            for a caller whose own `patiently` loop retries (a connection being opened).

    Raises:
        sqlite3.OperationalError: the file stayed locked, or another failure.
    """
    def switch() -> None:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode = WAL")

    if timeout_s <= 0:
        switch()
        return
    path = cursor.connection.execute("PRAGMA database_list").fetchone()[2]
    patiently(switch, f"sqlite:///{path}", timeout_s=timeout_s, transient=is_contention)


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front, so a read-then-write never hits a stale snapshot."""
    immediate = conn.get_execution_options().get("sqlite_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def own_sqlite_transactions(engine: Engine, immediate: Callable[[], bool]) -> None:
    """Make a SQLite engine someone else created (Optuna's) begin its transactions itself.

    sqlite3 left to itself runs a SELECT outside any transaction and BEGINs only before the
    UPDATE, so a read-then-write (Optuna popping a queued trial, failing a stale one) can act
    on what another process changed in between: two workers then run one retried trial. Here
    a transaction for which `immediate()` is true begins with BEGIN IMMEDIATE (the write lock,
    waited for on the busy timeout), any other with BEGIN (one snapshot; a write on it that
    another commit overtook is "database is locked", which the caller's retry runs again).
    Pooled connections are dropped so that every one gets this.

    Args:
        engine: an engine on a SQLite file.
        immediate: whether the transaction now beginning (in this thread) will write.
    """
    def on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None

    def begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate() else "BEGIN")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", begin)
    engine.dispose()


def is_transient(error: BaseException | None) -> bool:
    """Whether running the failed transaction again may succeed: contention or a lost connection.

    Follows the chain of causes, so an error raised from a driver error (SQLAlchemy's wrapper,
    Optuna's StorageInternalError) counts as what the driver said; a StorageError in the chain
    is a verdict (the retries already gave up) and is never transient.

    A transaction whose connection was lost before COMMIT was rolled back by the server, so
    running it again applies it once. A connection lost during COMMIT leaves it unknown
    whether the commit applied: the calls retried this way are idempotent (upserts, replace by
    key) or check for it themselves (trainer.tuning.storage).

    Args:
        error: what was raised: a SQLAlchemy error, a sqlite3/psycopg error, or any exception.

    Returns:
        True for `is_contention` and `is_connection_loss` errors.
    """
    return _judged(error, lambda link: _contended(link) or _disconnected(link))


def is_contention(error: BaseException | None) -> bool:
    """Whether another transaction was in the way: it will likely pass once that one ends.

    Returns:
        True for SQLite lock timeouts, PostgreSQL serialization failures and deadlocks, and a
        concurrent writer of the same (study, trial, stage).
    """
    return _judged(error, _contended)


def is_connection_loss(error: BaseException | None) -> bool:
    """Whether the connection to the server was lost (dropped, terminated, or refused).

    Returns:
        True for "server closed the connection unexpectedly", "terminating connection due to
        administrator command" (SQLSTATE 57P01), other 57P0x and class 08 errors, "connection
        refused" while a server restarts, and errors SQLAlchemy marked as a disconnect.
    """
    return _judged(error, _disconnected)


def is_opening_transient(error: BaseException | None) -> bool:
    """Whether opening a database may succeed if tried again: contention, or a connection that
    was made and then dropped. A connection never made is a wrong URL or a server that is down:
    said at once, not waited for.
    """
    if is_contention(error):
        return True
    return is_connection_loss(error) and not _judged(
        error, lambda link: any(text in str(_driver(link)).lower() for text in CONNECT_FAILURES))


def wait_reason(error: BaseException | None) -> str:
    """What a transient error says the database is doing, for "waiting for the database …: …"."""
    if is_connection_loss(error):
        return "the connection to it was lost or refused"
    if _judged(error, _locked):
        return "another process holds its lock"
    return "a concurrent transaction got in the way"


def wait_advice(error: BaseException | None) -> str:
    """What to do once a wait for the database gave up, for the end of an error sentence."""
    if is_connection_loss(error):
        return "check that the database server is up and reachable, then run the command again"
    return "run the command again once the other process has finished"


def retry(
    call: Callable[[], T],
    *,
    attempts: int | None = RETRY_ATTEMPTS,
    timeout_s: float | None = None,
    first_delay_s: float = RETRY_FIRST_DELAY_S,
    max_delay_s: float = RETRY_MAX_DELAY_S,
    transient: Callable[[BaseException], bool] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    jitter: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, BaseException], object] | None = None,
) -> T:
    """Call `call` until it returns, waiting longer after each transient failure.

    The waits double from `first_delay_s` up to `max_delay_s`, each scaled by 0.5 + jitter()
    so that processes which failed together do not retry together. Only a call that failed as
    a whole (a rolled-back transaction) is safe to repeat.

    Args:
        call: the work, without arguments.
        attempts: calls at most, the first included; None: as many as `timeout_s` allows.
        timeout_s: give up once this many seconds have passed since the first call (the last
            wait is cut to what is left); None: no time bound. One attempt may itself wait
            (SQLite's busy timeout), so the whole can exceed it by one attempt.
        first_delay_s: the wait after the first failure, before jitter.
        max_delay_s: the longest wait, before jitter.
        transient: which errors are worth another attempt; None: is_transient.
        sleep: waits that many seconds (tests pass a recorder).
        jitter: a number in [0, 1) per wait.
        clock: seconds, for `timeout_s` (tests pass a fake).
        on_retry: told (attempt that failed, its error) before each wait, to log it.

    Returns:
        What `call` returned.

    Raises:
        ValueError: `attempts` is below 1, or neither `attempts` nor `timeout_s` bounds it.
        Exception: the error of the last attempt, or the first error that is not transient.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if attempts is None and timeout_s is None:
        raise ValueError("retry needs attempts or timeout_s, got neither")
    transient = is_transient if transient is None else transient
    start, delay, attempt = clock(), min(first_delay_s, max_delay_s), 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as e:
            left = None if timeout_s is None else timeout_s - (clock() - start)
            if attempt == attempts or (left is not None and left <= 0) or not transient(e):
                raise
            if on_retry is not None:
                on_retry(attempt, e)
        wait = delay * (0.5 + jitter())
        sleep(wait if left is None else min(wait, left))
        delay = min(2 * delay, max_delay_s)


def patiently(
    call: Callable[[], T],
    shown: str,
    *,
    timeout_s: float = LOCK_TIMEOUT_S,
    transient: Callable[[BaseException], bool] | None = None,
    notify: Callable[[str], object] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`call`, retried while it fails transiently for up to `timeout_s` seconds, saying so.

    Once the wait has lasted NOTICE_AFTER_S, and every NOTICE_EVERY_S after, `notify` gets one
    line: "waiting for the database URL: another process holds its lock (4 s so far; giving
    up after 60 s)".

    Args:
        call: one whole transaction (or the opening of a database), without arguments.
        shown: the database URL as users may see it (password hidden).
        timeout_s: the bound on the whole wait.
        transient: which errors to wait out; None: is_transient.
        notify: gets each line; None: this module's logger, at WARNING.
        sleep: waits that many seconds (tests pass a recorder).
        clock: seconds (tests pass a fake).

    Returns:
        What `call` returned.

    Raises:
        Exception: the last error once `timeout_s` has passed, or the first that is not
            transient.
    """
    notify = log.warning if notify is None else notify
    start = clock()
    told: list[float] = []

    def tell(attempt: int, error: BaseException) -> None:
        waited = clock() - start
        if waited >= NOTICE_AFTER_S and (not told or waited - told[-1] >= NOTICE_EVERY_S):
            told.append(waited)
            notify(waiting_line(shown, error, waited, timeout_s))

    return retry(call, attempts=None, timeout_s=timeout_s, transient=transient, sleep=sleep,
                 clock=clock, on_retry=tell)


def waiting_line(shown: str, error: BaseException | None, waited_s: float, timeout_s: float
                 ) -> str:
    """The line a long wait prints: what it waits for, why, how long so far and at most."""
    return (f"waiting for the database {shown}: {wait_reason(error)} ({waited_s:.0f} s so far; "
            f"giving up after {timeout_s:g} s)")


def open_hint(url: URL, *, read_only: bool = False) -> str:
    """What to check when a database cannot be opened, for the end of an error sentence."""
    if url.get_backend_name() == "postgresql":
        return (
            "check that the PostgreSQL server is running, the database exists, and the URL "
            "looks like postgresql+psycopg://user@host/db"
        )
    if read_only:
        return "check that the path names a SQLite database file this tool wrote"
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


def _judged(error: BaseException | None, check: Callable[[BaseException], bool]) -> bool:
    """Whether a link of the error's chain passes `check`, before any StorageError link."""
    for link in _chain(error):
        if isinstance(link, StorageError):
            return False
        if check(link):
            return True
    return False


def _driver(error: BaseException) -> BaseException:
    """The driver error inside SQLAlchemy's wrapper, else the error itself."""
    return getattr(error, "orig", None) or error


def _contended(error: BaseException) -> bool:
    """One link: a lock, serialization failure, deadlock or racing writer of one run."""
    driver = _driver(error)
    message = str(driver).lower()
    code = getattr(driver, "sqlstate", None)
    if code in TRANSIENT_SQLSTATES or (code == "23505" and RUN_KEY in message):
        return True
    return _locked(error) or any(text in message for text in TRANSIENT_MESSAGES)


def _locked(error: BaseException) -> bool:
    driver = _driver(error)
    message = str(driver).lower()
    operational = isinstance(error, exc.OperationalError | sqlite3.OperationalError)
    return (operational and ("locked" in message or "busy" in message)) or (
        "database is locked" in message or "database table is locked" in message)


def _disconnected(error: BaseException) -> bool:
    """One link: a connection the server ended, that broke, or that a restarting server refused.

    Messages count only from the driver (or SQLAlchemy): "broken pipe" from user code is not
    a database connection.
    """
    if isinstance(error, exc.DisconnectionError) or getattr(error, "connection_invalidated",
                                                            False):
        return True
    driver = _driver(error)
    code = getattr(driver, "sqlstate", None) or ""
    if code in CONNECTION_SQLSTATES or code.startswith("08"):
        return True
    if type(driver).__module__.split(".")[0] not in DRIVER_MODULES:
        return False
    message = str(driver).lower()
    return any(text in message for text in CONNECTION_MESSAGES)


def _json_default(value: Any) -> Any:
    """numpy scalars become Python numbers; anything else (paths…) its string."""
    return value.item() if hasattr(value, "item") else str(value)
