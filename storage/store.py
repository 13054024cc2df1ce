"""The Store: SQLite/PostgreSQL engines, migrations on open, and run records in and out."""
from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, and_, create_engine, delete, event, exc, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError
from storage.models import (
    VERSION_TABLE,
    ClassMetricsRow,
    ConfusionRow,
    CurveRow,
    PredictionRow,
    ReviewRow,
    RunRow,
    ScalarRow,
)
from storage.records import STAGES, ClassMetrics, Curve, Evaluation, Predictions, Run, RunSpec

T = TypeVar("T")
ACCEPTED = "sqlite:///path/to.db or postgresql+psycopg://user@host/db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_S = 30
PG_CONNECT_TIMEOUT_S = 10
PG_MIGRATION_LOCK = 0x53454E54  # any constant shared by every process migrating this database
WRITE_ATTEMPTS = 6
CHUNK = 5000
RUN_KEY = "uq_sentiment_runs_study_trial_stage"

RUNS = RunRow.__table__
PREDICTIONS = PredictionRow.__table__
REVIEWS = ReviewRow.__table__


def open_store(url: str) -> Store:
    """Open (and create or migrate) the database at `url`.

    Args:
        url: sqlite:///path/to.db, sqlite:// (in memory) or postgresql[+psycopg]://user@host/db.

    Returns:
        A ready Store.

    Raises:
        StorageError: the URL is not supported or the database cannot be opened.
    """
    return Store(url)


class Store:
    """Evaluated models (runs) with their metrics, curves and predictions in one database."""

    def __init__(self, url: str) -> None:
        """Create the engine and migrate our tables to the newest revision.

        Args:
            url: sqlite:///path/to.db, sqlite:// (in memory) or postgresql[+psycopg]://user@host/db.

        Raises:
            StorageError: the URL is not supported or the database cannot be opened.
        """
        parsed = normalize_url(url)
        self.url = parsed.render_as_string(hide_password=False)
        self._shown = parsed.render_as_string(hide_password=True)
        self._engine = _make_engine(parsed)
        self._writer = self._engine.execution_options(sqlite_write=True)
        try:
            _migrate(self._engine, self._writer)
        except CommandError as e:
            self._engine.dispose()
            raise StorageError(
                f"The tables in {self._shown} were migrated by a newer version of this tool "
                f"({e}); upgrade the tool or use another database."
            ) from e
        except exc.SQLAlchemyError as e:
            self._engine.dispose()
            raise StorageError(
                f"Could not open the database {self._shown} ({_reason(e)}); check that the server "
                f"is running, the file is a SQLite database, and the URL looks like {ACCEPTED}."
            ) from e

    def __repr__(self) -> str:
        return f"Store({self._shown!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def save_run(
        self, spec: RunSpec, evaluation: Evaluation, predictions: Predictions | None = None
    ) -> int:
        """Store one evaluated model and all its rows in one transaction.

        A run with the same (study, trial, stage) is replaced in that same transaction.

        Args:
            spec: what was evaluated.
            evaluation: what was measured.
            predictions: per-review predictions; their texts are stored once per review.

        Returns:
            The new run's id.

        Raises:
            StorageError: the records are inconsistent or the database refused the write.
        """
        _check_spec(spec)
        run_values = _run_values(spec, evaluation)
        children = _child_rows(evaluation)
        pred_rows = _prediction_rows(predictions) if predictions is not None else []
        texts = _review_texts(predictions) if predictions is not None else {}

        def work(conn: Connection) -> int:
            if spec.study is not None and spec.trial is not None:
                conn.execute(delete(RUNS).where(*_same_trial(spec)))
            run_id = conn.execute(insert(RUNS).values(run_values)).inserted_primary_key[0]
            for table, rows in children:
                _insert_many(conn, table, [{"run_id": run_id, **row} for row in rows])
            _insert_missing_reviews(conn, spec, texts)
            _insert_many(conn, PREDICTIONS, [{"run_id": run_id, **row} for row in pred_rows])
            return int(run_id)

        return self._write(work, f"save the {spec.stage} run")

    def get_run(self, run_id: int) -> Run:
        """The run with this id.

        Raises:
            StorageError: no run has this id, or the database cannot be read.
        """
        runs = self._load(RunRow.id == run_id)
        if not runs:
            raise StorageError(f"There is no run with id {run_id} in {self._shown}.")
        return runs[0]

    def list_runs(self, stage: str | None = None, study: str | None = None) -> list[Run]:
        """Runs ordered by id, optionally only those of one stage and/or study."""
        where = []
        if stage is not None:
            where.append(RunRow.stage == stage)
        if study is not None:
            where.append(RunRow.study == study)
        return self._load(*where)

    def find_run(self, stage: str, config_hash: str) -> Run | None:
        """The newest run of `stage` with this config hash, or None (to skip finished stages)."""
        runs = self._load(RunRow.stage == stage, RunRow.config_hash == config_hash, newest=True)
        return runs[0] if runs else None

    def trial_runs(self, study: str) -> dict[int, Run]:
        """Trial number -> stored "trial" run of this study."""
        runs = self.list_runs(stage="trial", study=study)
        return {run.spec.trial: run for run in runs if run.spec.trial is not None}

    def studies(self) -> list[str]:
        """Names of the studies that have stored runs, sorted."""
        stmt = select(RUNS.c.study).where(RUNS.c.study.is_not(None)).distinct()
        with self._translated("list the studies"), self._engine.connect() as conn:
            return sorted(conn.scalars(stmt))

    def predictions(self, run_id: int) -> pd.DataFrame:
        """Per-review predictions of a run, in the order they were saved.

        Returns:
            Columns review_id, label, prob, text (None when unknown), length (NaN when unknown).

        Raises:
            StorageError: no run has this id, or the database cannot be read.
        """
        with self._translated(f"read the predictions of run {run_id}"):
            with self._engine.connect() as conn:
                if conn.scalar(select(RUNS.c.id).where(RUNS.c.id == run_id)) is None:
                    raise StorageError(f"There is no run with id {run_id} in {self._shown}.")
                rows = conn.execute(_predictions_query(run_id)).all()
        texts = pd.Series([row.text for row in rows], dtype=object)
        return pd.DataFrame({
            "review_id": [row.review_id for row in rows],
            "label": pd.Series([row.label for row in rows], dtype="int64"),
            "prob": pd.Series([row.prob for row in rows], dtype="float64"),
            "text": texts,
            "length": pd.Series([math.nan if t is None else len(t) for t in texts], dtype=float),
        })

    def delete_run(self, run_id: int) -> None:
        """Delete a run and (by cascade) all its rows; review texts stay for other runs.

        Raises:
            StorageError: no run has this id, or the database refused the delete.
        """
        def work(conn: Connection) -> None:
            if conn.execute(delete(RUNS).where(RUNS.c.id == run_id)).rowcount == 0:
                raise StorageError(f"There is no run with id {run_id} in {self._shown}.")

        self._write(work, f"delete run {run_id}")

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def _load(self, *where: Any, newest: bool = False) -> list[Run]:
        stmt = select(RunRow).where(*where).options(
            selectinload(RunRow.scalars),
            selectinload(RunRow.class_metrics),
            selectinload(RunRow.confusion),
            selectinload(RunRow.curves),
        )
        stmt = stmt.order_by(RunRow.id.desc()).limit(1) if newest else stmt.order_by(RunRow.id)
        with self._translated("read the runs"), Session(self._engine) as session:
            return [_to_run(row) for row in session.scalars(stmt)]

    def _write(self, work: Callable[[Connection], T], action: str) -> T:
        """Run `work` in one transaction, retrying transient lock/serialization failures."""
        delay = 0.05
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._writer.begin() as conn:
                    return work(conn)
            except exc.DBAPIError as e:
                if attempt == WRITE_ATTEMPTS or not _transient(e):
                    raise StorageError(self._failed(action, e)) from e
            except exc.SQLAlchemyError as e:
                raise StorageError(self._failed(action, e)) from e
            time.sleep(delay * (1 + random.random()))
            delay *= 2
        raise AssertionError("unreachable")

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except exc.SQLAlchemyError as e:
            raise StorageError(self._failed(action, e)) from e

    def _failed(self, action: str, e: Exception) -> str:
        return (
            f"Could not {action} in {self._shown} ({_reason(e)}); check that the database is "
            "reachable and was created by this tool, then try again."
        )


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


def _make_engine(url: URL) -> Engine:
    serializer = partial(json.dumps, default=_json_default)
    if url.get_backend_name() == "postgresql":
        connect_args = {} if "connect_timeout" in url.query else {
            "connect_timeout": PG_CONNECT_TIMEOUT_S
        }
        return create_engine(
            url, pool_pre_ping=True, connect_args=connect_args, json_serializer=serializer
        )
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
        connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False},
        poolclass=StaticPool if memory else None,
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
        cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front, so a read-then-write never hits a stale snapshot."""
    immediate = conn.get_execution_options().get("sqlite_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _migrate(engine: Engine, writer: Engine) -> None:
    """Upgrade our tables to head under a lock; a concurrent creator is waited for, not raced."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    head = ScriptDirectory.from_config(config).get_current_head()
    for attempt in range(2):
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            if context.get_current_revision() == head:
                return
        try:
            with writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return
        except exc.DBAPIError as e:
            # Another process created the tables between our check and our lock: re-check.
            if attempt or "already exists" not in str(e.orig).lower():
                raise


def _transient(e: exc.DBAPIError) -> bool:
    """Lock waits, serialization failures, or a concurrent writer of the same trial."""
    message = str(e.orig).lower()
    if isinstance(e, exc.OperationalError) and ("locked" in message or "busy" in message):
        return True
    code = getattr(e.orig, "sqlstate", None)
    return code in ("40001", "40P01") or (code == "23505" and RUN_KEY in message)


def _reason(e: Exception) -> str:
    cause = getattr(e, "orig", None) or e
    return " ".join(str(cause).split()) or type(cause).__name__


def _json_default(value: Any) -> Any:
    """numpy scalars become Python numbers; anything else (paths…) its string."""
    return value.item() if hasattr(value, "item") else str(value)


def _check_spec(spec: RunSpec) -> None:
    if spec.stage not in STAGES:
        raise StorageError(
            f"Expected the run stage to be one of {list(STAGES)}, found {spec.stage!r}."
        )


def _same_trial(spec: RunSpec) -> tuple[Any, ...]:
    return RUNS.c.study == spec.study, RUNS.c.trial == spec.trial, RUNS.c.stage == spec.stage


def _run_values(spec: RunSpec, evaluation: Evaluation) -> dict[str, Any]:
    return {
        "stage": spec.stage,
        "model": spec.model,
        "split": spec.split,
        "data_source": spec.data_source,
        "config": dict(spec.config),
        "config_hash": spec.config_hash,
        "study": spec.study,
        "trial": None if spec.trial is None else int(spec.trial),
        "warnings": [str(w) for w in spec.warnings],
        "artifact": spec.artifact,
        "duration_s": None if spec.duration_s is None else float(spec.duration_s),
        "n": int(evaluation.n),
        "created_at": datetime.now(UTC),
    }


def _child_rows(evaluation: Evaluation) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Rows of the per-run tables, without run_id; numpy numbers become Python numbers."""
    (tn, fp), (fn, tp) = evaluation.confusion
    return [
        (ScalarRow.__table__, [
            {"name": name, "value": float(value)} for name, value in evaluation.scalars.items()
        ]),
        (ClassMetricsRow.__table__, [
            {"class_name": name, "precision": float(m.precision), "recall": float(m.recall),
             "f1": float(m.f1), "support": int(m.support)}
            for name, m in evaluation.per_class.items()
        ]),
        (ConfusionRow.__table__, [{"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}]),
        (CurveRow.__table__, [
            {"kind": kind, "x": list(c.x), "y": list(c.y), "w": list(c.w)}
            for kind, c in evaluation.curves.items()
        ]),
    ]


def _prediction_rows(predictions: Predictions) -> list[dict[str, Any]]:
    ids, labels, probs = predictions.review_ids, predictions.labels, predictions.probs
    texts = predictions.texts
    if len(labels) != len(ids) or len(probs) != len(ids) or (texts is not None and len(texts) != len(ids)):
        raise StorageError(
            f"Expected one label, probability (and text) per review, found {len(ids)} review "
            f"ids, {len(labels)} labels, {len(probs)} probabilities and "
            f"{'no' if texts is None else len(texts)} texts."
        )
    try:
        return [
            {"review_id": str(r), "label": int(lab), "prob": float(p)}
            for r, lab, p in zip(ids, labels, probs, strict=True)
        ]
    except (TypeError, ValueError) as e:
        raise StorageError(f"Expected integer labels and float probabilities, found {e}.") from e


def _review_texts(predictions: Predictions) -> dict[str, Any]:
    if predictions.texts is None:
        return {}
    return dict(zip(map(str, predictions.review_ids), predictions.texts, strict=True))


def _insert_many(conn: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """executemany in chunks: one round of parameters per chunk, never one ORM object per row."""
    for start in range(0, len(rows), CHUNK):
        conn.execute(insert(table), rows[start:start + CHUNK])


def _insert_missing_reviews(conn: Connection, spec: RunSpec, texts: dict[str, Any]) -> None:
    """Insert only the texts not stored yet; ON CONFLICT covers a concurrent writer."""
    if not texts:
        return
    known = set(conn.scalars(select(REVIEWS.c.review_id).where(
        REVIEWS.c.data_source == spec.data_source, REVIEWS.c.split == spec.split
    )))
    rows = [
        {"data_source": spec.data_source, "split": spec.split, "review_id": rid, "text": text}
        for rid, text in texts.items() if rid not in known
    ]
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = make(REVIEWS).on_conflict_do_nothing(
        index_elements=[REVIEWS.c.data_source, REVIEWS.c.split, REVIEWS.c.review_id]
    )
    for start in range(0, len(rows), CHUNK):
        conn.execute(stmt, rows[start:start + CHUNK])


def _predictions_query(run_id: int) -> Any:
    joined = PREDICTIONS.join(RUNS, RUNS.c.id == PREDICTIONS.c.run_id).outerjoin(
        REVIEWS,
        and_(
            REVIEWS.c.data_source == RUNS.c.data_source,
            REVIEWS.c.split == RUNS.c.split,
            REVIEWS.c.review_id == PREDICTIONS.c.review_id,
        ),
    )
    columns = (PREDICTIONS.c.review_id, PREDICTIONS.c.label, PREDICTIONS.c.prob, REVIEWS.c.text)
    return select(*columns).select_from(joined).where(
        PREDICTIONS.c.run_id == run_id
    ).order_by(PREDICTIONS.c.id)


def _nan(value: float | None) -> float:
    """SQLite stores NaN as NULL: NULL reads back as NaN."""
    return math.nan if value is None else value


def _to_run(row: RunRow) -> Run:
    spec = RunSpec(
        stage=row.stage, model=row.model, split=row.split, data_source=row.data_source,
        config=dict(row.config or {}), config_hash=row.config_hash, study=row.study,
        trial=row.trial, warnings=tuple(row.warnings or ()), artifact=row.artifact,
        duration_s=row.duration_s,
    )
    c = row.confusion
    evaluation = Evaluation(
        n=row.n,
        scalars={s.name: _nan(s.value) for s in row.scalars},
        per_class={
            m.class_name: ClassMetrics(_nan(m.precision), _nan(m.recall), _nan(m.f1), m.support)
            for m in row.class_metrics
        },
        confusion=((c.tn, c.fp), (c.fn, c.tp)) if c else ((0, 0), (0, 0)),
        curves={cv.kind: Curve(tuple(cv.x), tuple(cv.y), tuple(cv.w)) for cv in row.curves},
    )
    return Run(id=row.id, spec=spec, created_at=row.created_at, evaluation=evaluation)
