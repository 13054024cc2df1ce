"""Dashboard fixtures: empty, missing, small, hostile and 1,000-trial databases; a page opener."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import resources
from storage.store import open_store
from tests.dashboard import builders

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
PAGES = ("overview", "study", "evaluation", "live", "data")
PAGE_TIMEOUT_S = 120  # generous: the first run imports scipy, optuna and altair on 2 cores


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Streamlit's caches are process-wide; each test starts without another test's entries."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def _sqlite(directory: Path, name: str) -> str:
    return f"sqlite:///{directory / name}"


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database with our tables and nothing in them."""
    url = _sqlite(tmp_path_factory.mktemp("empty"), "empty.db")
    open_store(url).close()
    return url


@pytest.fixture
def missing_db(tmp_path: Path) -> str:
    """A SQLite URL whose file does not exist."""
    return _sqlite(tmp_path, "nowhere.db")


@pytest.fixture(scope="session")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three stages (a real saved baseline), a 12-trial study with a running trial."""
    folder = tmp_path_factory.mktemp("small")
    return builders.populated(_sqlite(folder, "small.db"), folder / "artifacts")


@pytest.fixture(scope="session")
def xss_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Like small_db, but a review, the study and a model are named with script/img payloads."""
    folder = tmp_path_factory.mktemp("xss")
    return builders.populated(_sqlite(folder, "xss.db"), folder / "artifacts", xss=True)


@pytest.fixture(scope="session")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1,000-trial study (60 trial runs stored) and three stages on 2,000 reviews."""
    folder = tmp_path_factory.mktemp("big")
    return builders.thousand_trials(_sqlite(folder, "big.db"), folder / "artifacts",
                                    builders.synthetic_reviews(2000), trial_runs=60)


@pytest.fixture
def open_page(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], AppTest]:
    """open_page(url, page) -> the AppTest after rendering that page with SENTIMENT_DB=url.

    Each call is a server started afresh: the databases, resolved once per process, are
    resolved again.
    """

    def run(url: str, page: str) -> AppTest:
        monkeypatch.setenv("SENTIMENT_DB", url)
        resources.databases.clear()
        at = AppTest.from_file(str(APP), default_timeout=PAGE_TIMEOUT_S)
        at.run()
        if page != "overview":
            at.switch_page(f"app_pages/{page}.py").run()
        return at

    return run
