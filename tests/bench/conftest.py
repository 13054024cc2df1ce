"""Bench fixtures: the trainer suite's tiny random BERT classifier."""
from __future__ import annotations

import pytest

from tests.trainer.conftest import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BERT sentiment classifier (NEGATIVE/POSITIVE) saved as safetensors."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))
