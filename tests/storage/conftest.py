"""A Store on every backend of the contract suite."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.store import Store, open_store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = open_store(db_url)
    yield opened
    opened.close()
