"""The dashboard's cached run list: new runs appear, deleted ones go, old ones are not re-read."""
from __future__ import annotations

from pathlib import Path

from dashboard import resources
from storage.store import open_store
from tests.storage import samples


def test_the_run_list_reads_only_new_runs_and_forgets_deleted_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with open_store(url) as writer:
        first = writer.save_run(samples.spec("baseline"), samples.evaluation())
        second = writer.save_run(samples.spec("trial", study="s", trial=0), samples.evaluation())
        assert [r.id for r in resources.runs(url)] == [first, second]
        kept = resources.runs(url)[0]
        third = writer.save_run(samples.spec("trial", study="s", trial=1), samples.evaluation())
        writer.delete_run(second)
        resources.runs.clear()  # what FRESH_S does in a running dashboard
        listed = resources.runs(url)
        assert [r.id for r in listed] == [first, third]
        assert listed[0] is kept  # read once, never again
        assert resources.stored_run(url, first) is kept  # one cache of runs for both
        assert [r.id for r in resources.runs(url, "trial", "s")] == [third]
        assert list(resources.trial_runs(url, "s")) == [1]
    resources.store.clear()
