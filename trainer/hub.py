"""Whether the Hugging Face hub answers: probed once per process, then offline if it is silent."""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})  # as huggingface_hub reads HF_HUB_OFFLINE
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # name or org/name

# endpoint -> whether it answered; the probe runs once per endpoint and process.
_answered: dict[str, bool] = {}
_lock = threading.Lock()


def is_hub_id(name: str) -> bool:
    """Whether `name` would be fetched from the hub: no existing path, and shaped like org/name."""
    name = str(name)
    if not name.strip() or name.startswith((".", "~")) or Path(name).expanduser().exists():
        return False
    return HUB_ID.match(name) is not None


def endpoint() -> str:
    """The hub's address: HF_ENDPOINT (a mirror) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """Whether offline mode is on: set in the environment or in an imported huggingface_hub."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and constants.HF_HUB_OFFLINE:
        return True
    return any((os.environ.get(v) or "").upper() in TRUE_VALUES
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def answers(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether `url` answers one HEAD request within timeout_s; any HTTP status counts.

    The request runs in a daemon thread because a hanging name lookup is not bounded by the
    socket timeout; urllib honours the usual proxy variables, as the hub's own client does.
    """
    answered = threading.Event()

    def probe() -> None:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                answered.set()
        except urllib.error.HTTPError:  # 4xx/5xx: the server is there
            answered.set()
        except (OSError, ValueError):  # refused, unresolvable, timed out, malformed
            pass

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return answered.is_set()


def go_offline() -> None:
    """Offline mode for the rest of the process, for libraries imported already or later.

    huggingface_hub and datasets read HF_HUB_OFFLINE once, at import, into module constants
    that their calls consult (transformers asks huggingface_hub): set the variable for imports
    to come and the constants of the modules already imported.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


def decide(name: str, *, probe: Callable[[str, float], bool] = answers,
           timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Before `name` is fetched from the hub: probe the hub once, and go offline if it is silent.

    Offline, the libraries read their local cache at once instead of retrying for a minute.
    Nothing is probed when offline mode is on already or the endpoint was probed before.

    Args:
        name: the hub id about to be fetched (named in the notice).
        probe: answers(url, timeout_s) -> bool; injected by tests.
        timeout_s: how long the probe waits.

    Returns:
        True when the process works offline.
    """
    if is_offline():
        return True
    url = endpoint()
    with _lock:
        if url not in _answered:
            _answered[url] = probe(url, timeout_s)
            if not _answered[url]:
                go_offline()
                log.warning("the Hugging Face hub (%s) did not answer within %g s; working "
                            "offline: %s is read from the local Hugging Face cache only",
                            url, timeout_s, name)
    return not _answered[url]
