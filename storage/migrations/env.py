"""Alembic environment for our tables only; Optuna's tables and `alembic_version` stay alone."""
from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from storage.models import TABLE_PREFIX, VERSION_TABLE, Base


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate compares only `sentiment_*` tables, never Optuna's."""
    return type_ != "table" or bool(name and name.startswith(TABLE_PREFIX))


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=_ours,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    # The Store hands over a connection already inside a locked transaction.
    _run(connection)
else:
    # A developer running `alembic -x` by hand: sqlalchemy.url comes from the Config.
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
