"""A real browser on a running dashboard: `streamlit run` plus headless Chromium over CDP.

    python -m tests.dashboard.browser DATABASE_URL OUT_DIR [PAGE_PATH ...]

saves a screenshot of each page path (default: every page) into OUT_DIR.
The DevTools protocol is spoken with `websockets`, which streamlit already depends on.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
PAGE_PATHS = {"overview": "/", "study": "/study", "evaluation": "/evaluation", "live": "/live",
              "data": "/data"}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")
# Ready: the app has drawn the page's title, and no script run or spinner is going on.
BUSY = ", ".join(f'[data-testid="{t}"]' for t in ("stStatusWidget", "stSpinner", "stSkeleton"))
READY_JS = f"""(() => {{
  const title = document.querySelector('[data-testid="stMain"] h1');
  return Boolean(title) && !document.querySelector('{BUSY}');
}})()"""


def chromium() -> str | None:
    """The Chromium binary, if one is installed."""
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                 "google-chrome"))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url} within {timeout_s:.0f} s") from None
            time.sleep(0.3)


@contextmanager
def dashboard(database_url: str, log: Path, *, env: dict[str, str] | None = None,
              toolbar: str | None = "minimal", script_args: tuple[str, ...] = ()
              ) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on a free port; yields its base URL.

    Args:
        database_url: SENTIMENT_DB of the server.
        log: where the server's output goes.
        env: more environment variables of the server.
        toolbar: --client.toolbarMode; None: the repository's .streamlit/config.toml decides.
        script_args: the dashboard's own arguments (after `--`).
    """
    port = free_port()
    env = {**os.environ, "SENTIMENT_DB": database_url, **(env or {})}
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"),
               "--server.headless", "true", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none",
               *(("--client.toolbarMode", toolbar) if toolbar else ()),
               *(("--", *script_args) if script_args else ())]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)


@dataclass
class Tab:
    """One browser tab driven over the DevTools protocol."""

    socket: Any
    ids: Iterator[int]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events arriving meanwhile are skipped)."""
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str, timeout_s: float = 60) -> None:
        """Load a page and wait until the app has finished drawing it."""
        self.call("Page.navigate", url=url)
        deadline, ready_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            if self.evaluate(READY_JS):
                ready_since = ready_since or time.monotonic()
                if time.monotonic() - ready_since > 1.5:  # settled: no rerun started since
                    return
            else:
                ready_since = None
            time.sleep(0.25)
        raise TimeoutError(f"{url} did not finish rendering within {timeout_s:.0f} s")

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator[Tab]:
    """Headless Chromium with a throwaway profile; yields one tab."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary; install it (apt-get install chromium)")
    port = free_port()
    # Chromium's helper processes may still flush the profile while it is being removed.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            targets = json.loads(_wait_http(f"http://127.0.0.1:{port}/json/list", 30))
            page = next(t for t in targets if t["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
                tab = Tab(ws, itertools.count(1))
                tab.call("Page.enable")
                tab.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
                yield tab
        finally:
            process.terminate()
            process.wait(timeout=20)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    url, out = argv[0], Path(argv[1])
    paths = argv[2:] or list(PAGE_PATHS.values())
    out.mkdir(parents=True, exist_ok=True)
    with dashboard(url, out / "streamlit.log") as base, browser(height=1100) as tab:
        for path in paths:
            tab.open(base + path, timeout_s=120)
            name = path.strip("/").replace("/", "_").replace("?", "_").replace("=", "-")
            tab.screenshot(out / f"{name or 'overview'}.png")
    (out / "streamlit.log").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
