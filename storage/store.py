"""The Store: opens a database (migrated, or only read) and moves runs in and out as records."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

import pandas as pd
from alembic.util import CommandError
from sqlalchemy import Connection, delete, exc, insert, inspect, literal_column, select
from sqlalchemy import table as table_clause
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, selectinload

from storage.engine import (
    LOCK_TIMEOUT_S,
    READ_LOCK_TIMEOUT_S,
    display_url,
    is_memory,
    is_opening_transient,
    is_transient,
    make_engine,
    normalize_url,
    open_hint,
    patiently,
    reason,
    wait_advice,
    wait_reason,
    writer,
)
from storage.errors import StorageError
from storage.migrations import revision_state, upgrade
from storage.models import AUDIT_TABLES, VERSION_TABLE, AuditRow, PredictionRow, ReviewRow, RunRow
from storage.records import Audit, Evaluation, Predictions, Run, RunSpec
from storage.rows import (
    audit_child_rows,
    audit_values,
    check_audit,
    check_spec,
    child_rows,
    prediction_rows,
    review_texts,
    run_values,
    spec_of,
    to_audit,
    to_run,
)

T = TypeVar("T")
CHUNK = 5000

RUNS = RunRow.__table__
PREDICTIONS = PredictionRow.__table__
REVIEWS = ReviewRow.__table__
AUDITS = AuditRow.__table__
# Tables that a created database holds before anything is stored: the schema versions (ours,
# Optuna's) and SQLite's autoincrement counters.
BOOKKEEPING_TABLES = frozenset({VERSION_TABLE, "alembic_version", "version_info",
                                "sqlite_sequence"})
FILL_COMMAND = "`python -m trainer baseline` (a quick start) or `python -m trainer run`"


class NotFilledError(StorageError):
    """A reader found no tables of this tool: the database (or SQLite file) is not filled yet."""


def open_store(url: str, *, busy_timeout_s: float | None = None, read_only: bool = False,
               lock_timeout_s: float | None = None) -> Store:
    """Open the database at `url`: create or migrate it, or with read_only only read it.

    Args:
        url: sqlite:///path/to.db, sqlite:// (in memory) or postgresql[+psycopg]://user@host/db.
        busy_timeout_s: how long one SQLite statement waits for another writer's lock;
            None: storage.engine.SQLITE_BUSY_S.
        read_only: never create, migrate or convert anything (the dashboard, `report`).
        lock_timeout_s: how long opening, and each write, waits in all for a locked (or, for a
            write, unreachable) database, saying so after a few seconds; None: LOCK_TIMEOUT_S,
            or READ_LOCK_TIMEOUT_S when read_only.

    Returns:
        A ready Store.

    Raises:
        NotFilledError: read_only, and the database holds no tables of this tool.
        StorageError: the URL is not supported or the database cannot be opened.
    """
    return Store(url, busy_timeout_s=busy_timeout_s, read_only=read_only,
                 lock_timeout_s=lock_timeout_s)


class Store:
    """Evaluated models (runs) with their metrics, curves and predictions in one database."""

    def __init__(self, url: str, *, busy_timeout_s: float | None = None,
                 read_only: bool = False, lock_timeout_s: float | None = None) -> None:
        """Create the engine and migrate our tables to the newest revision (or, read-only, check
        that they are at it).

        Args:
            url: sqlite:///path/to.db, sqlite:// (in memory) or postgresql[+psycopg]://user@host/db.
            busy_timeout_s: how long one SQLite statement waits for another writer's lock;
                None: storage.engine.SQLITE_BUSY_S.
            read_only: open SQLite files with mode=ro and PostgreSQL in read-only
                transactions; never create, migrate or convert anything.
            lock_timeout_s: how long opening, and each write, waits in all for a locked (or,
                for a write, unreachable) database; None: LOCK_TIMEOUT_S (READ_LOCK_TIMEOUT_S
                when read_only). An attribute: a caller may change it later.

        Raises:
            NotFilledError: read_only, and the database holds no tables of this tool.
            StorageError: the URL is not supported, the database cannot be opened, or (read
                only) its tables are at another revision than this tool's.
        """
        parsed = normalize_url(url)
        self.url = parsed.render_as_string(hide_password=False)
        self.read_only = read_only
        default_wait = READ_LOCK_TIMEOUT_S if read_only else LOCK_TIMEOUT_S
        self.lock_timeout_s = default_wait if lock_timeout_s is None else lock_timeout_s
        self._shown = display_url(parsed)
        self._audit_tables = True  # False: a reader on a revision from before the audit
        if read_only and not is_memory(parsed) and parsed.get_backend_name() == "sqlite" \
                and not Path(parsed.database).is_file():
            raise NotFilledError(f"There is no database file at {parsed.database}; "
                                 f"{FILL_COMMAND} creates and fills it.")
        # A new SQLite file, and the folders made for it, is this Store's to remove again when
        # the command fails before writing anything (discard_if_unused).
        self._created = [] if read_only else _new_sqlite_paths(parsed)
        self._engine = make_engine(parsed, busy_timeout_s, read_only=read_only)
        self._writer = writer(self._engine)
        try:
            opening = self._check_revision if read_only else self._upgrade
            patiently(opening, self._shown, timeout_s=self.lock_timeout_s,
                      transient=is_opening_transient)
        except StorageError:
            self._engine.dispose()
            raise
        except CommandError as e:
            self._engine.dispose()
            raise StorageError(
                f"The tables in {self._shown} were migrated by a newer version of this tool "
                f"({e}); upgrade the tool or use another database."
            ) from e
        except exc.SQLAlchemyError as e:
            self._engine.dispose()
            if is_opening_transient(e):
                raise StorageError(self._failed("open our tables", e, self.lock_timeout_s)
                                   ) from e
            raise StorageError(
                f"Could not open the database {self._shown} ({reason(e)}); "
                f"{open_hint(parsed, read_only=read_only)}."
            ) from e

    def __repr__(self) -> str:
        return f"Store({self._shown!r})"

    def __enter__(self) -> Self:
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
        check_spec(spec)
        try:
            values = run_values(spec, evaluation)
            children = child_rows(evaluation)
        except (TypeError, ValueError) as e:
            raise StorageError(
                f"Expected numbers in the evaluation of the {spec.stage} run, found {e}."
            ) from e
        pred_rows = prediction_rows(predictions) if predictions is not None else []
        texts = review_texts(predictions) if predictions is not None else {}

        def work(conn: Connection) -> int:
            if spec.study is not None and spec.trial is not None:
                conn.execute(delete(RUNS).where(*_same_trial(spec)))
            run_id = conn.execute(insert(RUNS).values(values)).inserted_primary_key[0]
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

    def get_runs(self, run_ids: Iterable[int]) -> list[Run]:
        """The runs with these ids that exist, ordered by id (one query per 500 ids)."""
        ids = sorted(set(run_ids))
        return [run for start in range(0, len(ids), 500)
                for run in self._load(RunRow.id.in_(ids[start:start + 500]))]

    def list_runs(self, stage: str | None = None, study: str | None = None) -> list[Run]:
        """Runs ordered by id, optionally only those of one stage and/or study."""
        return self._load(*_filters(stage, study))

    def run_specs(self, stage: str | None = None, study: str | None = None
                  ) -> dict[int, RunSpec]:
        """Run id -> what was stored about it, without its metrics: a quick listing of runs.

        Ordered by id, optionally only those of one stage and/or study.
        """
        stmt = select(RunRow).where(*_filters(stage, study)).order_by(RunRow.id)
        with self._translated("read the runs"), Session(self._engine) as session:
            return {row.id: spec_of(row) for row in session.scalars(stmt)}

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

    def predictions(self, run_id: int, *, texts: bool = True) -> pd.DataFrame:
        """Per-review predictions of a run, in the order they were saved.

        Args:
            run_id: the run.
            texts: also read each review's text (most of the time for 25,000 reviews).

        Returns:
            Columns review_id, label, prob and, with texts, text (None when unknown) and
            length (NaN when unknown).

        Raises:
            StorageError: no run has this id, or the database cannot be read.
        """
        action = f"read the predictions of run {run_id}"
        with self._translated(action), self._engine.connect() as conn:
            run = conn.execute(select(RUNS.c.data_source, RUNS.c.split).where(RUNS.c.id == run_id))
            where = run.first()
            if where is None:
                raise StorageError(f"There is no run with id {run_id} in {self._shown}.")
            rows = conn.execute(select(PREDICTIONS.c.review_id, PREDICTIONS.c.label,
                                       PREDICTIONS.c.prob).where(PREDICTIONS.c.run_id == run_id)
                                .order_by(PREDICTIONS.c.id)).all()
            frame = pd.DataFrame({
                "review_id": [row.review_id for row in rows],
                "label": pd.Series([row.label for row in rows], dtype="int64"),
                "prob": pd.Series([row.prob for row in rows], dtype="float64"),
            })
            if not texts:
                return frame
            known = _review_texts_of(conn, *where, frame["review_id"].tolist())
        text = pd.Series([known.get(i) for i in frame["review_id"]], dtype=object)
        length = [math.nan if t is None else len(t) for t in text]
        return frame.assign(text=text, length=pd.Series(length, dtype=float))

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

    def discard_if_unused(self) -> bool:
        """Close; delete the SQLite file if this Store created it and nothing was written to it.

        A command that fails before writing so leaves no empty database behind. A file that
        existed before, or that holds any row of ours or of Optuna's (a study), is kept.

        Returns:
            Whether the file was deleted.
        """
        unused = bool(self._created) and not self._holds_rows()
        self.close()
        if not unused:
            return False
        file, *folders = self._created
        for suffix in ("", "-wal", "-shm", "-journal"):
            file.with_name(file.name + suffix).unlink(missing_ok=True)
        for folder in folders:  # the deepest first; one that is not empty stays, with its parents
            try:
                folder.rmdir()
            except OSError:
                break
        return True

    def _holds_rows(self) -> bool:
        """Whether any table but the version bookkeeping has a row; True when unsure."""
        try:
            with self._engine.connect() as conn:
                names = set(inspect(conn).get_table_names()) - BOOKKEEPING_TABLES
                return any(conn.execute(select(literal_column("1")).select_from(table_clause(name))
                                        .limit(1)).first() is not None for name in names)
        except exc.SQLAlchemyError:
            return True

    def _upgrade(self) -> None:
        upgrade(self._engine, self._writer)

    def _check_revision(self) -> None:
        """A reader's check that our tables are there, at this tool's revision; writes nothing."""
        state, stored = revision_state(self._engine)
        if state == "missing":
            raise NotFilledError(f"The database {self._shown} holds no tables of this tool yet; "
                                 f"{FILL_COMMAND} fills it.")
        # An older revision is read as it is: what it lacks (the audit tables before 0002)
        # reads as empty until a writing command upgrades it.
        if state == "older":
            with self._engine.connect() as conn:
                self._audit_tables = inspect(conn).has_table(AuditRow.__tablename__)
        if state == "newer":
            raise StorageError(
                f"The tables in {self._shown} were migrated by a newer version of this tool "
                f"(revision {stored}); upgrade the tool or use another database.")

    def _load(self, *where: Any, newest: bool = False) -> list[Run]:
        stmt = select(RunRow).where(*where).options(
            selectinload(RunRow.scalars),
            selectinload(RunRow.class_metrics),
            selectinload(RunRow.confusion),
            selectinload(RunRow.curves),
        )
        stmt = stmt.order_by(RunRow.id.desc()).limit(1) if newest else stmt.order_by(RunRow.id)
        with self._translated("read the runs"), Session(self._engine) as session:
            return [to_run(row) for row in session.scalars(stmt)]

    def _write(self, work: Callable[[Connection], T], action: str) -> T:
        """Run `work` in one transaction, waiting out locks and lost connections (bounded).

        A connection lost before COMMIT rolled the transaction back; one lost during COMMIT may
        have applied it, and running it again is still safe: a trial's run replaces the one
        stored under its (study, trial, stage), review texts are inserted only when missing;
        only a stage run could then be stored twice, and `find_run` takes the newest.
        """
        if self.read_only:
            raise StorageError(f"Could not {action}: {self._shown} was opened read-only; open "
                               "it with read_only=False to write.")

        def transaction() -> T:
            with self._writer.begin() as conn:
                return work(conn)

        try:
            return patiently(transaction, self._shown, timeout_s=self.lock_timeout_s)
        except exc.SQLAlchemyError as e:
            raise StorageError(self._failed(action, e, self.lock_timeout_s)) from e

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except exc.SQLAlchemyError as e:
            raise StorageError(self._failed(action, e)) from e

    def _failed(self, action: str, e: Exception, waited_s: float | None = None) -> str:
        if is_transient(e):
            after = f" after waiting {waited_s:g} s" if waited_s else ""
            return (f"Could not {action} in {self._shown}{after}: {wait_reason(e)} "
                    f"({reason(e)}); {wait_advice(e)}.")
        hint = "check that the database is reachable and was created by this tool, then retry"
        bad_value = not isinstance(e, exc.DBAPIError)  # a value the column type cannot bind
        if bad_value or isinstance(e, exc.IntegrityError | exc.DataError):
            hint = "the values given do not fit the tables; fix them and save again"
        return f"Could not {action} in {self._shown} ({reason(e)}); {hint}."

    # --- audits (python -m trainer audit) ------------------------------------------------------

    def save_audit(self, audit: Audit) -> int:
        """Store one audit and all its findings in one transaction (chunked inserts).

        Args:
            audit: what the audit found; config["fingerprint"], when set, lets `find_audit`
                find it again.

        Returns:
            The new audit's id.

        Raises:
            StorageError: the records are inconsistent or the database refused the write.
        """
        check_audit(audit)
        try:
            values = audit_values(audit)
            children = audit_child_rows(audit)
        except (TypeError, ValueError) as e:
            raise StorageError(f"Expected numbers in the audit's findings, found {e}.") from e

        def work(conn: Connection) -> int:
            audit_id = conn.execute(insert(AUDITS).values(values)).inserted_primary_key[0]
            for table, rows in children:
                _insert_many(conn, table, [{"audit_id": audit_id, **row} for row in rows])
            return int(audit_id)

        return self._write(work, "save the audit")

    def latest_audit(self, data_source: str | None = None) -> Audit | None:
        """The newest audit (of that data source when given), or None when there is none.

        Raises:
            StorageError: the database cannot be read.
        """
        where = [] if data_source is None else [AuditRow.data_source == data_source]
        return self._load_audit(*where)

    def find_audit(self, fingerprint: str) -> Audit | None:
        """The newest audit with this fingerprint, or None (to skip an audit already done).

        Raises:
            StorageError: the database cannot be read.
        """
        return self._load_audit(AuditRow.fingerprint == fingerprint)

    def _load_audit(self, *where: Any) -> Audit | None:
        if not self._audit_tables:  # a reader on tables from before the audit existed
            return None
        stmt = select(AuditRow).where(*where).order_by(AuditRow.id.desc()).limit(1)
        with self._translated("read the audit"), Session(self._engine) as session:
            row = session.scalars(stmt).first()
            if row is None:
                return None
            children = {
                kind: session.scalars(
                    select(kind).where(kind.audit_id == row.id).order_by(kind.id)).all()
                for kind in AUDIT_TABLES
            }
            return to_audit(row, children)


def _new_sqlite_paths(url: Any) -> list[Path]:
    """A SQLite file that does not exist yet, then each missing folder above it, deepest first."""
    if url.get_backend_name() != "sqlite" or is_memory(url):
        return []
    file = Path(url.database).absolute()
    if file.exists():
        return []
    return [file, *(p for p in file.parents if not p.exists())]


def _same_trial(spec: RunSpec) -> tuple[Any, ...]:
    return RUNS.c.study == spec.study, RUNS.c.trial == spec.trial, RUNS.c.stage == spec.stage


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


def _review_texts_of(
    conn: Connection, data_source: str, split: str, review_ids: list[str]
) -> dict[str, str]:
    """Texts by review id, read with one range scan of the split's texts.

    A join or IN lists would do, but PostgreSQL plans them as a scan of the whole split per
    prediction or per chunk until statistics exist (minutes for 25,000 fresh rows); one scan of
    the split cannot go wrong, and a run usually predicts most of the split it stored.
    """
    wanted = set(review_ids)
    rows = conn.execute(select(REVIEWS.c.review_id, REVIEWS.c.text).where(
        REVIEWS.c.data_source == data_source, REVIEWS.c.split == split
    ))
    return {review_id: text for review_id, text in rows if review_id in wanted}


def _filters(stage: str | None, study: str | None) -> list[Any]:
    return [c == v for c, v in ((RunRow.stage, stage), (RunRow.study, study)) if v is not None]
