"""Page-edge pieces every page shares: the database picker and friendly error boxes."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from optuna.exceptions import OptunaError
from sqlalchemy.exc import SQLAlchemyError

from dashboard import resources, views
from storage.engine import reason
from storage.errors import StorageError
from storage.store import Store
from trainer.errors import TrainerError

URL_KEY = "database_url"
FILL_HINT = ("Run `python -m trainer run` to fill it (or `python -m trainer baseline` for a quick "
             "start), or type another database URL in the sidebar.")


def _remember_url() -> None:
    typed = st.session_state.get(f"{URL_KEY}_input", "").strip()
    st.session_state[URL_KEY] = typed or resources.default_url()


def database_url() -> str:
    """The sidebar's database URL (SENTIMENT_DB by default); kept when the page changes."""
    state = st.session_state
    if URL_KEY not in state:
        state[URL_KEY] = resources.default_url()
    st.sidebar.text_input(
        "Database URL", value=state[URL_KEY], key=f"{URL_KEY}_input", on_change=_remember_url,
        help="sqlite:///path/to.db or postgresql+psycopg://user@host/db (default: $SENTIMENT_DB)")
    return state[URL_KEY]


def open_database(url: str) -> Store | None:
    """The Store for `url`, or None after telling the user what to do."""
    missing = views.missing_sqlite_file(url)
    if missing is not None:
        st.info(f"There is no database at {views.escape_markdown(missing)} yet. {FILL_HINT}")
        return None
    try:
        return resources.store(url)
    except StorageError as e:
        st.error(views.escape_markdown(str(e)))
        return None


def say(kind: str, message: str) -> None:
    """Show a message that may contain user text (names, paths) without any markup."""
    getattr(st, kind)(views.escape_markdown(message))


@contextmanager
def page_errors(action: str) -> Iterator[None]:
    """Turn the errors a user can cause into one error box instead of a traceback.

    Args:
        action: what the page was doing, for the message ("read the study").
    """
    try:
        yield
    except (StorageError, TrainerError) as e:
        say("error", str(e))
    except (OptunaError, SQLAlchemyError) as e:
        say("error", f"Could not {action} ({reason(e)}). Check that the database is reachable and "
                     "was written by this tool, then reload the page.")
