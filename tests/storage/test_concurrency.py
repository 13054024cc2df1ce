"""Several processes opening and writing one database at once lose nothing."""
from __future__ import annotations

import multiprocessing

from sqlalchemy import text

from storage.models import VERSION_TABLE
from storage.store import open_store
from tests.storage import samples

RUNS_PER_WORKER = 20
SHARED_TRIALS = 3


def _worker(url: str, barrier: multiprocessing.synchronize.Barrier, worker: int) -> None:
    """Open a brand-new database together with the other worker, then write runs."""
    barrier.wait(timeout=60)
    store = open_store(url)
    for i in range(RUNS_PER_WORKER):
        spec = samples.spec("trial", study=f"worker{worker}", trial=i, split="validation")
        store.save_run(spec, samples.evaluation(), samples.predictions(n=20, prefix=f"r{i}/"))
    for trial in range(SHARED_TRIALS):  # both workers race to write the same trials
        store.save_run(samples.spec("trial", study="shared", trial=trial), samples.evaluation())
    store.close()


def test_two_processes_writing_one_new_database_lose_nothing(file_db_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_worker, args=(file_db_url, barrier, w)) for w in (0, 1)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
    assert [p.exitcode for p in workers] == [0, 0]

    with open_store(file_db_url) as store:
        for worker in (0, 1):
            assert sorted(store.trial_runs(f"worker{worker}")) == list(range(RUNS_PER_WORKER))
        assert sorted(store.trial_runs("shared")) == list(range(SHARED_TRIALS))
        assert len(store.list_runs()) == 2 * RUNS_PER_WORKER + SHARED_TRIALS
        counts = samples.row_counts(store)
        with store._engine.connect() as conn:
            versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    assert counts["sentiment_predictions"] == 2 * RUNS_PER_WORKER * 20
    assert counts["sentiment_reviews"] == RUNS_PER_WORKER * 20  # both workers wrote the same ids
    assert counts["sentiment_confusion"] == 2 * RUNS_PER_WORKER + SHARED_TRIALS
    assert len(versions) == 1
