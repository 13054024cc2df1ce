"""Programmatic Alembic migrations: schema matches the models and coexists with Optuna's."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect, text

from storage.migrations import alembic_config
from storage.models import TABLE_PREFIX, VERSION_TABLE, Base, RunRow
from storage.records import Audit
from storage.rows import run_values
from storage.store import Store, open_store
from tests.storage import samples


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    return type_ != "table" or bool(name and name.startswith(TABLE_PREFIX))


def test_migrated_schema_matches_the_models(store: Store) -> None:
    with store._engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "include_name": _ours}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_our_version_table_holds_the_head_revision(store: Store) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with store._engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [
            head
        ]
        tables = inspect(conn).get_table_names()
    assert "alembic_version" not in tables
    assert all(name.startswith(TABLE_PREFIX) for name in tables)


MakeStorage = Callable[[], optuna.storages.RDBStorage]
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def optuna_storage(file_db_url: str) -> Iterator[MakeStorage]:
    """Opens Optuna storages on the shared URL, each disposed after the test."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened: list[optuna.storages.RDBStorage] = []

    def make() -> optuna.storages.RDBStorage:
        opened.append(optuna.storages.RDBStorage(file_db_url))
        return opened[-1]

    yield make
    for storage in opened:
        storage.engine.dispose()


def _optimize(storage: optuna.storages.RDBStorage, trials: int) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=trials)
    return study


def _version_tables(store: Store) -> dict[str, list[str]]:
    with store._engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
            for table in ("alembic_version", VERSION_TABLE)
        }


def test_store_opens_after_optuna_created_its_tables(
    file_db_url: str, optuna_storage: MakeStorage
) -> None:
    _optimize(optuna_storage(), trials=2)
    with open_store(file_db_url) as store:
        store.save_run(samples.spec("trial", study="s", trial=0), samples.evaluation())
        versions = _version_tables(store)
    assert versions[VERSION_TABLE] == [HEAD]
    assert len(versions["alembic_version"]) == 1 and versions["alembic_version"] != [HEAD]
    assert len(_optimize(optuna_storage(), trials=1).trials) == 3


def test_optuna_opens_after_the_store_created_its_tables(
    file_db_url: str, optuna_storage: MakeStorage
) -> None:
    with open_store(file_db_url) as store:
        store.save_run(samples.spec("baseline"), samples.evaluation())
    assert len(_optimize(optuna_storage(), trials=2).trials) == 2
    with open_store(file_db_url) as reopened:
        assert len(reopened.list_runs()) == 1
        assert _version_tables(reopened)[VERSION_TABLE] == [HEAD]


def _migrate(url: str, action: Callable[..., None], revision: str) -> None:
    """Run an Alembic command on `url` the way the Store does (a connection handed over)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            action(config, revision)
    finally:
        engine.dispose()


def test_a_database_at_0001_upgrades_to_the_audit_tables_keeping_its_runs(
    file_db_url: str,
) -> None:
    _migrate(file_db_url, command.upgrade, "0001")
    engine = create_engine(file_db_url)
    with engine.begin() as conn:
        assert "sentiment_audits" not in inspect(conn).get_table_names()
        run_id = conn.execute(insert(RunRow.__table__).values(
            run_values(samples.spec(), samples.evaluation()))).inserted_primary_key[0]
    engine.dispose()

    with open_store(file_db_url) as store:
        with store._engine.connect() as conn:
            stored = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
            assert stored.all() == [HEAD] == ["0002"]
        assert [run.id for run in store.list_runs()] == [run_id]
        audit_id = store.save_audit(Audit(samples.spec().data_source, (), (), (), (), (), ()))
        assert store.latest_audit().id == audit_id
        with store._engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "include_name": _ours}
            )
            assert compare_metadata(context, Base.metadata) == []


def test_the_audit_revision_downgrades_to_0001(file_db_url: str) -> None:
    open_store(file_db_url).close()
    _migrate(file_db_url, command.downgrade, "0001")
    engine = create_engine(file_db_url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert "sentiment_runs" in tables
    assert not {name for name in tables if name.startswith("sentiment_audit")}
