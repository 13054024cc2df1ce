"""Shared fixtures: offline hub, the real IMDB folder, database URLs for the contract suites."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci import missing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

REPO = Path(__file__).resolve().parent.parent
IMDB_DIR = Path(os.environ.get("IMDB_TEST_DATA", REPO.parent / "shared" / "data" / "imdb"))


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    """The real IMDB parquet folder (train.parquet, test.parquet)."""
    if not (IMDB_DIR / "train.parquet").exists() or not (IMDB_DIR / "test.parquet").exists():
        missing(f"the real IMDB data at {IMDB_DIR}")
    return IMDB_DIR


@pytest.fixture(scope="session")
def small_imdb(imdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 train and 100 test real reviews, balanced, as parquet."""
    import pandas as pd

    out = tmp_path_factory.mktemp("small-imdb")
    for split, n in (("train", 100), ("test", 50)):
        frame = pd.read_parquet(imdb_dir / f"{split}.parquet")
        frame.groupby("label").head(n).to_parquet(out / f"{split}.parquet")
    return out


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL from TEST_DATABASE_URL."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        missing("TEST_DATABASE_URL (PostgreSQL)")
    return url


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Database URLs for contract suites: SQLite file, SQLite memory, PostgreSQL (own schema)."""
    if request.param == "sqlite-memory":
        return "sqlite://"
    return _file_or_postgres(request, tmp_path)


@pytest.fixture(params=["sqlite-file", "postgresql"])
def file_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that other engines and processes can open too: a SQLite file or PostgreSQL."""
    return _file_or_postgres(request, tmp_path)


def _file_or_postgres(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_schema_url")
