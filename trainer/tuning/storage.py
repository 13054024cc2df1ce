"""One study, many processes: Optuna's storage with lock retries and a heartbeat."""
from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from storage.engine import (
    PG_CONNECT_TIMEOUT_S,
    SQLITE_BUSY_S,
    normalize_url,
    reason,
    retry,
    switch_to_wal,
)
from storage.errors import StorageError
from trainer.errors import ConfigError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ATTEMPTS = 8  # tries of one storage call that hit a transient lock or serialization failure
STALE_RETRIES = 1  # a trial whose worker died is run once more with the same parameters
# A lock wait or a busy CPU can delay a heartbeat by seconds, and SQLite keeps whole seconds:
# below GRACE_SLACK_S a tight interval would fail trials whose worker is alive.
GRACE_SLACK_S = 5
# Every storage call a worker makes, reads too: a reader can meet a lock while SQLite
# checkpoints or recovers its write-ahead log.
_RETRIED = (
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
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
)


def _patient(method: F) -> F:
    """`method`, retried by storage.engine.retry while it fails transiently.

    A failed call was rolled back as a whole, so running it again cannot apply it twice.
    """

    def logged(attempt: int, error: BaseException) -> None:
        log.debug("%s: transient database error (%s), retrying", method.__name__, error)

    @functools.wraps(method)
    def wrapper(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        call = functools.partial(method, self, *args, **kwargs)
        return retry(call, attempts=ATTEMPTS, on_retry=logged)

    return wrapper  # type: ignore[return-value]


class PatientRDBStorage(RDBStorage):
    """RDBStorage whose calls are retried when the database reports a transient lock.

    Optuna already retries the creation of a trial; here every other call is retried too,
    the heartbeat above all: a heartbeat lost to a lock would fail a live worker's trial.
    """


for _name in _RETRIED:
    setattr(PatientRDBStorage, _name, _patient(getattr(RDBStorage, _name)))


def grace_period(heartbeat: int) -> int:
    """Seconds without a heartbeat after which a running trial counts as dead (about 2x)."""
    return max(2 * heartbeat, heartbeat + GRACE_SLACK_S)


def optuna_storage(
    url: str, heartbeat: int, *, busy_timeout_s: float = SQLITE_BUSY_S
) -> RDBStorage:
    """Optuna's storage in the same database as our Store, ready for many workers.

    SQLite runs in WAL mode with a busy timeout, and every call retries a transient
    "database is locked". With a heartbeat, a running trial whose worker
    stops beating for `grace_period(heartbeat)` seconds is marked FAIL by the next worker that
    asks for a trial, and queued once more with the same parameters under a new number.

    Args:
        url: sqlite:///path/to.db or postgresql[+psycopg]://user@host/db.
        heartbeat: seconds between heartbeats of a running trial; 0 turns the heartbeat off.
        busy_timeout_s: how long one SQLite statement waits for another writer's lock before
            it fails and the call is retried.

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
    if sqlite:
        _prepare_sqlite(Path(parsed.database), busy_timeout_s)
    connect_args = {"timeout": busy_timeout_s} if sqlite else {
        "connect_timeout": PG_CONNECT_TIMEOUT_S
    }
    engine_kwargs: dict[str, Any] = {"connect_args": connect_args, "pool_pre_ping": not sqlite}
    try:
        with warnings.catch_warnings():  # heartbeat and retry are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return PatientRDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat or None,
                grace_period=grace_period(heartbeat) if heartbeat else None,
                heartbeat_stale_trial_callback=_stale_callback(heartbeat),
            )
    except Exception as e:  # sqlalchemy, the driver and Optuna's own errors alike
        if isinstance(e, (ConfigError, StorageError)):
            raise
        raise StorageError(
            f"Could not open the Optuna study storage in {shown} ({reason(e)}); check that the "
            "database is reachable and the URL looks like sqlite:///path/to.db or "
            "postgresql+psycopg://user@host/db."
        ) from e


def _prepare_sqlite(path: Path, busy_timeout_s: float) -> None:
    """Create the file's folder and switch the file to WAL, so readers never block a writer.

    The Store does the same; this covers a process that opens the study first. WAL is a
    property of the file, so one connection that sets it is enough.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path, timeout=busy_timeout_s)) as conn:
            switch_to_wal(conn.cursor())
    except (OSError, sqlite3.Error) as e:  # opening the storage below reports it clearly
        log.debug("could not switch %s to WAL: %s", path, e)


def _stale_callback(heartbeat: int) -> RetryHeartbeatStaleTrialCallback | None:
    if not heartbeat:
        return None
    return RetryHeartbeatStaleTrialCallback(max_retry=STALE_RETRIES)
