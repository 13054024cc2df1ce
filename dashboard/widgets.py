"""Page-edge pieces every page shares: the operator's database in the sidebar, error boxes.

What a visitor sees never holds a password, a path's fate or a port's: the reason a database
cannot be read goes to the server's log, the page says only that it cannot.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from optuna.exceptions import OptunaError
from sqlalchemy.exc import SQLAlchemyError

from dashboard import resources, settings, views
from storage.errors import StorageError
from storage.store import Store
from trainer.errors import ConfigError, TrainerError

log = logging.getLogger(__name__)

CHOICE_KEY = "database"  # session state: the name of the chosen database, kept across pages
FILL_HINT = ("Run `python -m trainer run` to fill it (or `python -m trainer baseline` for a quick "
             "start).")
UNREADABLE = ("The dashboard cannot read its database; the server's log says why. If the "
              "database is new, `python -m trainer baseline` or `python -m trainer run` fills it.")
MISCONFIGURED = ("The dashboard's database settings are not valid; the server's log says why. "
                 "Its operator can fix them and restart it.")


def database_url() -> str:
    """The URL of the database this page reads, shown masked in the sidebar.

    The operator's database; where the operator listed several, the one the visitor picked by
    name (kept across pages). Nothing a visitor types becomes a URL. An invalid configuration
    stops the page with a box that names no setting.
    """
    try:
        databases = resources.databases()
    except ConfigError as e:
        log.error("dashboard: the database settings are not valid: %s", e)
        st.error(MISCONFIGURED)
        st.stop()
    state = st.session_state
    name = state.get(CHOICE_KEY)
    if name not in databases.urls:
        name = databases.default
    if databases.choosable:
        names = databases.names
        name = st.sidebar.selectbox("Database", names, index=names.index(name),
                                    key=f"{CHOICE_KEY}_choice",
                                    help="The databases this dashboard's operator allows.")
        state[CHOICE_KEY] = name
    url = databases.url(name)
    st.sidebar.caption(f"Database: {views.escape_markdown(settings.mask(url))}")
    return url


def open_database(url: str) -> Store | None:
    """The read-only Store for `url`, or None after a box that reveals nothing of the server."""
    try:
        return resources.store(url)
    except StorageError as e:
        log.warning("dashboard: cannot read the database %s: %s", settings.mask(url), e)
        st.error(UNREADABLE)
        return None


def say(kind: str, message: str) -> None:
    """Show a message that may contain user text (names, paths) without any markup; its
    `backticked` commands show as code (views.markdown_with_code)."""
    getattr(st, kind)(views.markdown_with_code(message))


@contextmanager
def page_errors(action: str) -> Iterator[None]:
    """Turn the errors a user can cause into one error box instead of a traceback.

    Args:
        action: what the page was doing, for the message ("read the study").
    """
    try:
        yield
    except TrainerError as e:
        say("error", str(e))
    except (StorageError, OptunaError, SQLAlchemyError) as e:  # the database's fate: logged
        log.warning("dashboard: could not %s: %s: %s", action, type(e).__name__, e)
        say("error", f"Could not {action}; the server's log says why. Reload the page, and tell "
                     "the dashboard's operator if it happens again.")
