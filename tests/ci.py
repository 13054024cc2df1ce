"""Skip a test whose data or service is missing, except in CI, where that is a failure."""
from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """CI=true (or 1, yes, any value but empty, 0, false or no): .ci/run keeps an inherited CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> None:
    """Fail in CI, else skip: a test that needs `what` must never silently pass CI."""
    if in_ci():
        pytest.fail(f"{what} is missing, and CI must not skip tests that need it")
    pytest.skip(f"{what} is missing")
