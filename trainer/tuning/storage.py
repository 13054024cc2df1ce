"""One study, many processes: Optuna's storage with lock retries and a heartbeat; a reader's."""
from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import json
import logging
import sqlite3
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import DateTime, Engine, bindparam, column, create_engine, inspect, table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url

from storage.engine import (
    LOCK_TIMEOUT_S,
    PG_CONNECT_TIMEOUT_S,
    SQLITE_BUSY_S,
    display_url,
    guard_immutable,
    is_connection_loss,
    is_contention,
    is_memory,
    is_opening_transient,
    is_transient,
    normalize_url,
    open_hint,
    own_sqlite_transactions,
    patiently,
    read_only_options,
    reason,
    switch_to_wal,
    wait_advice,
    wait_reason,
)
from storage.errors import StorageError
from storage.store import NotFilledError
from trainer.errors import ConfigError
from trainer.tuning.trials import FAIL_REASON

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

STALE_RETRIES = 1  # a trial whose worker died is run once more with the same parameters
# A lock wait or a busy CPU can delay a heartbeat by seconds, and SQLite keeps whole seconds:
# below GRACE_SLACK_S a tight interval would fail trials whose worker is alive.
GRACE_SLACK_S = 5
REAPED = "reaped: its worker stopped sending heartbeats"  # the fail_reason of a stale trial
# Once one call has waited the whole lock timeout in vain, the next ones wait only this long
# (until one succeeds): a worker facing an outage records what it can and exits, not after
# one full timeout per call.
HURRIED_S = 5
# Every storage call a worker makes, reads too: a reader can meet a lock while SQLite
# checkpoints or recovers its write-ahead log, and any call can meet a dropped connection.
RETRIED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_trials",
    "get_best_trial",
    # What Optuna's _CachedStorage (the storage a Study really calls) calls instead of the
    # public methods above: without these, parameters and new trials were never retried.
    "_create_new_trial",
    "_set_trial_param",
    "_get_trials",
    "_get_best_trial_id",
)
# Of those, the calls that write: on SQLite they take the write lock as they begin.
WRITES = frozenset({
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
})
_writing = threading.local()  # .on: this thread is inside one of the storage's write calls
# Optuna's table of trial user attributes (unique on trial_id, key), for the reaper's reason.
TRIAL_USER_ATTRS = table("trial_user_attributes", column("trial_id"), column("key"),
                         column("value_json"))
# Running trials that never recorded a heartbeat: their worker died between creating the trial
# and its first heartbeat (or a lost COMMIT made Optuna create it twice). Optuna never reaps them.
UNBEATEN = text(
    "SELECT t.trial_id FROM trials t WHERE t.study_id = :study AND t.state = 'RUNNING' "
    "AND t.datetime_start < :before "
    "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
).bindparams(bindparam("before", type_=DateTime()))


def writing() -> bool:
    """Whether this thread is inside a write call of a PatientRDBStorage."""
    return getattr(_writing, "on", False)


def _patient(method: F, *, write: bool = False) -> F:
    """`method`, waited out by storage.engine.patiently while it fails transiently.

    Each of Optuna's calls runs in one transaction, so a failed call was rolled back as a
    whole; a connection lost during COMMIT may have applied it, and running it again is then
    still safe: the attribute, intermediate-value and heartbeat writes are upserts, a repeated
    parameter is an integrity error Optuna ignores, and `set_trial_state_values` checks.
    Once the wait is over, a transient error becomes one StorageError sentence.
    """

    @functools.wraps(method)
    def wrapper(self: PatientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.patiently(functools.partial(method, self, *args, **kwargs), write=write)

    return wrapper  # type: ignore[return-value]


class PatientRDBStorage(RDBStorage):
    """RDBStorage whose calls wait out locks and dropped connections, for `lock_timeout_s`.

    Optuna already retries the creation of a trial; here every call is retried too, the
    heartbeat above all: a heartbeat lost to a lock would fail a live worker's trial. A
    trial failed for lack of heartbeats gets the fail_reason REAPED, and so does a running
    trial that never sent one (Optuna would leave it running for ever).
    """

    def __init__(self, url: str, *args: Any, lock_timeout_s: float = LOCK_TIMEOUT_S,
                 **kwargs: Any) -> None:
        """RDBStorage(url, ...), whose calls wait up to `lock_timeout_s` seconds each.

        Args:
            url: the database URL (with its password, if any).
            args, kwargs: RDBStorage's.
            lock_timeout_s: how long one call waits in all before it gives up.
        """
        self.lock_timeout_s = lock_timeout_s
        self.shown = display_url(make_url(url))
        self.out_of_reach = False  # the last call gave up; the next ones hurry
        self.reaping: set[int] = set()  # stale trials this process is about to fail
        super().__init__(url, *args, **kwargs)

    def patiently(self, call: Callable[[], Any], *, on_lost: Callable[[], object] | None = None,
                  write: bool = False) -> Any:
        """`call`, retried while it fails transiently; then one StorageError.

        Args:
            call: one of RDBStorage's calls, bound.
            on_lost: told each time an attempt lost its connection.
            write: the call writes (SQLite: its transactions begin with the write lock).

        Raises:
            StorageError: the database stayed locked or unreachable for lock_timeout_s.
        """
        def attempt() -> Any:
            outer = writing()
            _writing.on = write or outer
            try:
                return call()
            except Exception as e:
                if on_lost is not None and is_connection_loss(e):
                    on_lost()
                raise
            finally:
                _writing.on = outer

        timeout = min(HURRIED_S, self.lock_timeout_s) if self.out_of_reach else self.lock_timeout_s
        try:
            result = patiently(attempt, self.shown, timeout_s=timeout)
        except Exception as e:
            if not is_transient(e):
                raise
            self.out_of_reach = True
            driver = e.__cause__ if isinstance(e, optuna.exceptions.OptunaError) else e
            raise StorageError(
                f"Could not use the Optuna study storage in {self.shown} after waiting "
                f"{timeout:g} s: {wait_reason(e)} ({reason(driver or e)}); {wait_advice(e)}."
            ) from e
        self.out_of_reach = False
        return result

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        """RDBStorage's, patient; a finish whose COMMIT was lost but applied counts as done, and
        so does a worker failing its own trial that a reaper failed first (its heartbeat came
        late). A reaper that finds the trial failed already is told so, as Optuna expects:
        it must not queue the trial's retry a second time."""
        lost: list[bool] = []
        reaping = trial_id in self.reaping
        self.reaping.discard(trial_id)

        def call() -> bool:
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                stored = RDBStorage.get_trial(self, trial_id).state
                if stored == state and (lost or (state == TrialState.FAIL and not reaping)):
                    return True
                raise

        return self.patiently(call, on_lost=lambda: lost.append(True), write=True)

    def record_heartbeat(self, trial_id: int) -> None:
        """RDBStorage's, patient; one that still fails is logged, not raised: an exception
        would end the heartbeat thread, and the next beat may well get through."""
        try:
            self.patiently(functools.partial(RDBStorage.record_heartbeat, self, trial_id),
                           write=True)
        except StorageError as e:
            log.warning("a heartbeat was not recorded: %s", e)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Running trials whose heartbeat is older than the grace period, or that never sent one.

        A trial without a heartbeat counts once its start is older than the grace period: its
        worker sends the first heartbeat as the trial starts.
        """
        def call() -> list[int]:
            stale = RDBStorage._get_stale_trial_ids(self, study_id)
            before = datetime.datetime.now() - datetime.timedelta(seconds=self.grace_period or 0)
            with self.engine.connect() as conn:
                rows = conn.execute(UNBEATEN, {"study": study_id, "before": before})
                unbeaten = [int(trial_id) for (trial_id,) in rows]
            return stale + [trial_id for trial_id in unbeaten if trial_id not in stale]

        ids = self.patiently(call)
        self.reaping = set(ids)
        return ids

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """The retry callback, after storing REAPED as the failed trial's fail_reason."""
        retry_stale = super().get_heartbeat_stale_trial_callback()
        if retry_stale is None:
            return None

        def callback(study: optuna.Study, trial: FrozenTrial) -> None:
            self.set_fail_reason_of_finished(study.study_name, trial.number,
                                             trial.user_attrs.get(FAIL_REASON) or REAPED)
            retry = copy.copy(trial)  # the retry must not inherit why its original failed
            retry.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != FAIL_REASON}
            retry_stale(study, retry)

        return callback

    def set_fail_reason_of_finished(self, study_name: str, number: int, why: str) -> None:
        """Store the fail_reason of a trial that is already finished (Optuna refuses to).

        Args:
            study_name: the trial's study.
            number: the trial's number.
            why: why it failed.
        """
        study_id = self.get_study_id_from_name(study_name)
        trial_id = self.get_trial_id_from_study_id_trial_number(study_id, number)
        make = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = make(TRIAL_USER_ATTRS).values(trial_id=trial_id, key=FAIL_REASON,
                                             value_json=json.dumps(why))
        stmt = stmt.on_conflict_do_update(index_elements=["trial_id", "key"],
                                          set_={"value_json": stmt.excluded.value_json})

        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt)

        self.patiently(write, write=True)


for _name in RETRIED:
    setattr(PatientRDBStorage, _name, _patient(getattr(RDBStorage, _name),
                                               write=_name in WRITES))


def grace_period(heartbeat: int) -> int:
    """Seconds without a heartbeat after which a running trial counts as dead (about 2x)."""
    return max(2 * heartbeat, heartbeat + GRACE_SLACK_S)


def optuna_storage(
    url: str, heartbeat: int, *, busy_timeout_s: float | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> RDBStorage:
    """Optuna's storage in the same database as our Store, ready for many workers.

    SQLite runs in WAL mode with a busy timeout; every call waits out a transient lock or a
    dropped connection for up to `lock_timeout_s`, saying so after a few seconds. With a
    heartbeat, a running trial whose worker stops beating for `grace_period(heartbeat)`
    seconds is marked FAIL (fail_reason REAPED) by the next worker that asks for a trial, and
    queued once more with the same parameters under a new number.

    Args:
        url: sqlite:///path/to.db or postgresql[+psycopg]://user@host/db.
        heartbeat: seconds between heartbeats of a running trial; 0 turns the heartbeat off.
        busy_timeout_s: how long one SQLite statement waits for another writer's lock before
            it fails and the call is retried; None: storage.engine.SQLITE_BUSY_S.
        lock_timeout_s: how long opening, and each call, waits in all.

    Returns:
        The storage.

    Raises:
        ConfigError: the URL is an in-memory SQLite database, which cannot hold a study.
        StorageError: the URL is malformed or the database cannot be opened.
    """
    parsed = normalize_url(url)
    shown = parsed.render_as_string(hide_password=True)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"the database {shown} is in memory and would forget the study when the process "
            "ends; pass a file such as --db sqlite:///runs/sentiment.db"
        )
    busy = SQLITE_BUSY_S if busy_timeout_s is None else busy_timeout_s
    if sqlite:
        _prepare_sqlite(Path(parsed.database), busy, lock_timeout_s)
    connect_args = {"timeout": busy} if sqlite else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    engine_kwargs: dict[str, Any] = {"connect_args": connect_args, "pool_pre_ping": not sqlite}

    def create() -> RDBStorage:
        with warnings.catch_warnings():  # heartbeat and retry are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = PatientRDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat or None,
                grace_period=grace_period(heartbeat) if heartbeat else None,
                heartbeat_stale_trial_callback=_stale_callback(heartbeat),
                lock_timeout_s=lock_timeout_s,
            )
        if sqlite:
            own_sqlite_transactions(storage.engine, writing)
        return storage

    try:  # a connection never made is a wrong URL or a server that is down: said at once
        return patiently(create, shown, timeout_s=lock_timeout_s,
                         transient=is_opening_transient)
    except Exception as e:  # sqlalchemy, the driver and Optuna's own errors alike
        if isinstance(e, (ConfigError, StorageError)):
            raise
        after = f" after waiting {lock_timeout_s:g} s" if is_opening_transient(e) else ""
        raise StorageError(
            f"Could not open the Optuna study storage in {shown}{after} ({reason(e)}); check "
            "that the database is reachable and no other process holds its lock, and that the "
            "URL looks like sqlite:///path/to.db or postgresql+psycopg://user@host/db."
        ) from e


# Optuna's tables a reader needs, and the two that Optuna writes a row into when it opens a
# database without one (_VersionManager: version_info, and alembic_version stamped).
OPTUNA_TABLES = ("studies", "trials", "version_info", "alembic_version")
OPTUNA_STAMPS = ("version_info", "alembic_version")


def optuna_reader(url: str, *, busy_timeout_s: float = SQLITE_BUSY_S) -> RDBStorage:
    """Optuna's storage for readers (the dashboard, `report`): it creates nothing, migrates
    nothing and never switches SQLite to WAL; its connections cannot write.

    RDBStorage is opened with skip_table_creation and skip_compatibility_check over read-only
    connections (storage.engine.read_only_options), and only once Optuna's tables hold the rows
    it would otherwise write on opening. Its calls retry transient locks like the writers'.

    Args:
        url: sqlite:///path/to.db or postgresql[+psycopg]://user@host/db.
        busy_timeout_s: how long one SQLite statement waits for a writer's lock.

    Returns:
        The storage; dispose of `storage.engine` when done.

    Raises:
        NotFilledError: no study was ever created in the database (Optuna's tables are not
            there), or the SQLite file does not exist.
        ConfigError: the URL is an in-memory SQLite database.
        StorageError: the URL is malformed or the database cannot be read.
    """
    parsed = normalize_url(url)
    shown = display_url(parsed)
    if is_memory(parsed):
        raise ConfigError(f"the database {shown} is in memory and holds no study; pass a file "
                          "such as --db sqlite:///runs/sentiment.db")
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
        raise NotFilledError(f"There is no database file at {parsed.database}; "
                             "`python -m trainer tune` (or `run`) creates a study in it.")
    options = read_only_options(parsed, busy_timeout_s)
    try:
        if not optuna_tables_ready(create_engine(parsed, **options)):
            raise NotFilledError(f"The database {shown} holds no Optuna study yet; "
                                 "`python -m trainer tune` (or `run`) creates one.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = PatientRDBStorage(parsed.render_as_string(hide_password=False),
                                        engine_kwargs=options, skip_table_creation=True,
                                        skip_compatibility_check=True)
        guard_immutable(storage.engine)
        return storage
    except (StorageError, ConfigError):
        raise
    except Exception as e:  # sqlalchemy, the driver and Optuna's own errors alike
        raise StorageError(
            f"Could not read the Optuna studies in {shown} ({reason(e)}); "
            f"{open_hint(parsed, read_only=True)}."
        ) from e


def optuna_tables_ready(engine: Engine) -> bool:
    """Whether Optuna's tables are there with the rows Optuna writes when it opens a database.

    Args:
        engine: an engine on the database; disposed of here.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
    """
    try:
        with engine.connect() as conn:
            if not set(OPTUNA_TABLES) <= set(inspect(conn).get_table_names()):
                return False
            return all(conn.execute(text(f"SELECT 1 FROM {table}")).first() is not None
                       for table in OPTUNA_STAMPS)
    finally:
        engine.dispose()


def _prepare_sqlite(path: Path, busy_timeout_s: float, lock_timeout_s: float) -> None:
    """Create the file's folder and switch the file to WAL, so readers never block a writer.

    The Store does the same; this covers a process that opens the study first. WAL is a
    property of the file, so one connection that sets it is enough.

    Raises:
        StorageError: the file stayed locked for `lock_timeout_s` (waited for with notices).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=busy_timeout_s)) as conn:
            switch_to_wal(conn.cursor(), timeout_s=lock_timeout_s)
    except sqlite3.OperationalError as e:
        if not is_contention(e):
            log.debug("could not switch %s to WAL: %s", path, e)  # the opening reports it
            return
        raise StorageError(
            f"Could not open the Optuna study storage in sqlite:///{path} after waiting "
            f"{lock_timeout_s:g} s: {wait_reason(e)} ({e}); {wait_advice(e)}."
        ) from e
    except (OSError, sqlite3.Error) as e:  # opening the storage below reports it clearly
        log.debug("could not switch %s to WAL: %s", path, e)


def _stale_callback(heartbeat: int) -> RetryHeartbeatStaleTrialCallback | None:
    if not heartbeat:
        return None
    return RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES)
