"""Alembic migrations of our tables, run when a writing Store opens; readers only compare."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, exc

from storage.models import VERSION_TABLE

HERE = Path(__file__).resolve().parent
PG_LOCK = 0x53454E54  # one advisory-lock key shared by every process migrating a database


def alembic_config() -> Config:
    """An Alembic Config built in code (there is no alembic.ini) pointing at this folder.

    To write a new revision, set `sqlalchemy.url` on it to a database at head and call
    `alembic.command.revision(config, "what changed", autogenerate=True)`.
    """
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("path_separator", "os")
    return config


def current_revision(engine: Engine) -> str | None:
    """Our revision stored in the database (in `sentiment_alembic_version`), or None."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head_revision() -> str:
    """The newest revision these migrations know."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def revision_state(engine: Engine) -> tuple[str, str | None]:
    """How the database's tables compare with these migrations; reads only, changes nothing.

    Returns:
        (state, stored revision): state is "head", "missing" (no revision stored: our tables
        are not there), "older" (a revision before head) or "newer" (a revision these
        migrations do not know, written by a newer version of the tool).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
    """
    script = ScriptDirectory.from_config(alembic_config())
    stored = current_revision(engine)
    if stored is None:
        return "missing", None
    if stored == script.get_current_head():
        return "head", stored
    known = {revision.revision for revision in script.walk_revisions()}
    return ("older" if stored in known else "newer"), stored


def upgrade(engine: Engine, writer: Engine) -> None:
    """Upgrade our tables to head, serialised by a lock so concurrent openers wait, not race.

    Args:
        engine: the Store's engine, used for the quick "already at head?" check.
        writer: the same engine with options that make SQLite take its write lock on BEGIN.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database refused the migration.
        alembic.util.CommandError: the database holds a revision these migrations do not know.
    """
    config = alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    for attempt in range(2):
        if current_revision(engine) == head:
            return
        try:
            with writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK})")
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return
        except exc.DBAPIError as e:
            # Another process created the tables between our check and our lock: re-check.
            if attempt or "already exists" not in str(e.orig).lower():
                raise
