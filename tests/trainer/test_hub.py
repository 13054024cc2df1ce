"""The hub probe: a silent or closed endpoint is decided within the timeout, then offline."""
from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from trainer import hub

CACHED_MODEL = "tiny-org/tiny-bert"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A URL whose server accepts connections but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def answering_server() -> Iterator[str]:
    """A URL whose server answers every request with 404."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off, as for a user who never set it; restored afterwards."""
    import datasets.config
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)


def test_a_closed_port_does_not_answer() -> None:
    assert not hub.answers(f"http://127.0.0.1:{closed_port()}", 3.0)


def test_a_server_that_never_answers_is_given_up_after_the_timeout(silent_server: str) -> None:
    started = time.monotonic()
    assert not hub.answers(silent_server, 0.5)
    assert time.monotonic() - started < 3  # bounded by the timeout, not the server


def test_any_http_answer_counts_as_reachable(answering_server: str) -> None:
    assert hub.answers(answering_server, 3.0)


def test_a_silent_hub_turns_offline_mode_on_for_every_library(
    online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert hub.decide("org/name") is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub.is_offline()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert datasets.config.HF_HUB_OFFLINE is True


def test_an_answering_hub_is_probed_once_and_stays_online(
    online: None, monkeypatch: pytest.MonkeyPatch, answering_server: str
) -> None:
    calls = []

    def probe(url: str, timeout_s: float) -> bool:
        calls.append(url)
        return hub.answers(url, timeout_s)

    monkeypatch.setenv("HF_ENDPOINT", answering_server + "/")
    assert hub.decide("org/name", probe=probe) is False
    assert hub.decide("org/other", probe=probe) is False
    assert calls == [answering_server]
    assert not hub.is_offline()


def test_nothing_is_probed_when_offline_mode_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def probe(url: str, timeout_s: float) -> bool:
        raise AssertionError("probed although offline mode was set")

    assert hub.decide("org/name", probe=probe) is True


def test_only_names_that_are_no_local_path_are_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "org").mkdir()
    assert hub.is_hub_id("stanfordnlp/imdb") and hub.is_hub_id("distilbert-base-uncased")
    assert not hub.is_hub_id(str(tmp_path / "org"))
    assert not any(hub.is_hub_id(n) for n in ("./imdb", "~/imdb", "a/b/c", "", "/abs/path"))


def unreachable_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment without offline mode, the hub at a closed port, an empty cache."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", "--quiet", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_no_retry_and_no_line_twice(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert not [line for line in lines if "retry" in line.lower()], lines
    assert len(lines) == len(set(lines)), lines


def test_unreachable_hub_is_one_paragraph_without_retries_and_leaves_no_database(
    tmp_path: Path,
) -> None:
    done = run_cli(["baseline"], tmp_path, unreachable_env(tmp_path))
    assert done.returncode == 1, done.stderr
    assert_no_retry_and_no_line_twice(done.stderr)
    notice, error = done.stderr.strip().splitlines()
    assert "did not answer within 3 s; working offline" in notice
    assert error.startswith("error: the Hugging Face hub could not be reached for "
                            "stanfordnlp/imdb")
    assert "--data DIR" in error
    assert not (tmp_path / "runs").exists()  # no empty runs/sentiment.db


def cache_model(model_dir: str, hf_home: Path, repo_id: str = CACHED_MODEL) -> None:
    """Lay a model folder out as the Hugging Face cache holds a download of `repo_id`."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.mark.slow
def test_a_cached_hub_model_loads_offline_without_retries(
    tmp_path: Path, tiny_model_dir: str, small_imdb: Path
) -> None:
    env = unreachable_env(tmp_path)
    cache_model(tiny_model_dir, Path(env["HF_HOME"]))
    done = run_cli(["pretrained", "--model", CACHED_MODEL, "--data", str(small_imdb),
                    "--test-size", "10", "--max-length", "32",
                    "--db", f"sqlite:///{tmp_path / 's.db'}"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert_no_retry_and_no_line_twice(done.stderr)
    assert f"working offline: {CACHED_MODEL} is read from the local" in done.stderr
    assert "pretrained" in done.stdout and CACHED_MODEL in done.stdout
