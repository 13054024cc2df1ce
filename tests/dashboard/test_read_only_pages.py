"""Every page on a database in a read-only folder, served by a process that cannot write there."""
from __future__ import annotations

import gc
import json
from pathlib import Path

from tests.dashboard import builders
from tests.dashboard.conftest import APP, PAGES
from tests.storage import read_only

# Renders every page with AppTest, as `streamlit run` would for a visitor, and says what it saw.
PAGE_READER = """
import json, os, sys
from streamlit.testing.v1 import AppTest

os.environ["SENTIMENT_DB"] = sys.argv[1]
seen = {}
for page in sys.argv[3].split(","):
    at = AppTest.from_file(sys.argv[2], default_timeout=180)
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    seen[page] = {"exceptions": len(at.exception), "errors": [e.value for e in at.error],
                  "metrics": len(at.metric), "tables": len(at.dataframe),
                  "models": [o for s in at.selectbox if s.key == "live_model" for o in s.options]}
print(json.dumps(seen))
"""


def test_every_page_reads_a_read_only_folder_without_writing(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "runs.db"
    builders.populated(f"sqlite:///{path}", tmp_path / "artifacts", n_reviews=120, n_trials=4)
    gc.collect()  # the study's own Optuna engine closes: the file is left as a writer leaves it
    assert sorted(p.name for p in folder.iterdir()) == ["runs.db"]
    assert path.read_bytes()[18] == 2  # WAL, as this tool writes it
    with read_only.read_only_folder(folder):
        before = read_only.snapshot(folder)
        done = read_only.run_unprivileged(["-c", PAGE_READER, f"sqlite:///{path}", str(APP),
                                           ",".join(PAGES)], timeout_s=600)
        assert read_only.snapshot(folder) == before  # no file created or changed
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for page in PAGES:
        assert seen[page]["exceptions"] == 0 and seen[page]["errors"] == [], (page, seen[page])
    assert seen["overview"]["metrics"] == 3 and seen["evaluation"]["metrics"] == 7
    assert seen["study"]["tables"] >= 1
    assert "baseline" in seen["live"]["models"][0]
