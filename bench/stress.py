"""Stress: N worker processes × M trials of one study per backend; trials/s and lost trials.

    python -m bench stress --workers 8 --trials 5 [--backends sqlite,postgresql] [--out FILE]

Each worker is a real process on the real storage path (Optuna's RDBStorage through
trainer.tuning.storage.optuna_storage, our Store's per-trial rows); only the training is faked,
exactly as tests/trainer/tuning/test_workers.py fakes it, so the figure is the storage path's
throughput.
SQLite lives in a temporary folder; PostgreSQL (TEST_DATABASE_URL, else the local server) in a
fresh schema that is dropped afterwards. Prints one JSON object per backend.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
STUDY = "stress"
WAIT_S = 900  # a worker that has not ended by then is killed and its trials count as lost


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=8, help="worker processes")
    parser.add_argument("--trials", type=int, default=5, help="trials per worker")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: sqlite, postgresql")
    parser.add_argument("--heartbeat", type=int, default=5, help="seconds; 0 turns it off")
    parser.add_argument("--out", default=None, help="also write the JSON lines to this file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stress benchmark on each backend and print one JSON object per backend.

    Args:
        argv: the options (see add_arguments); sys.argv[1:] when None.

    Returns:
        0, or 1 when a backend could not be measured or a worker failed.
    """
    parser = argparse.ArgumentParser(prog="python -m bench stress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or args.workers < 1 or args.trials < 1:
        parser.error(f"expected --backends from {list(BACKENDS)} and --workers/--trials of at "
                     f"least 1, found backends {backends}, {args.workers} workers, "
                     f"{args.trials} trials")
    figures, code = [], 0
    for backend in backends:
        try:
            figures.append(stress(backend, args.workers, args.trials, args.heartbeat))
        except Exception as e:  # noqa: BLE001 - one backend down must not hide the other
            print(f"stress_{backend}: could not run ({type(e).__name__}: {e})", file=sys.stderr)
            code = 1
        else:
            print(json.dumps(figures[-1]), flush=True)
            code = code or int(figures[-1]["worker_errors"] > 0)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(json.dumps(f) + "\n" for f in figures),
                                  encoding="utf-8")
    return code


def stress(backend: str, n_workers: int, n_trials: int, heartbeat: int) -> dict[str, Any]:
    """Run `n_workers` processes × `n_trials` trials of one fresh study on `backend`.

    Args:
        backend: "sqlite" or "postgresql".
        n_workers: worker processes, started together.
        n_trials: trials each worker runs.
        heartbeat: the study's heartbeat in seconds.

    Returns:
        The figure: trials/s (complete trials over the wall time from the first worker's start
        to the last one's end, process start-up included) and the trial counts.

    Raises:
        StorageError: the database cannot be opened.
    """
    with tempfile.TemporaryDirectory(prefix=f"stress-{backend}-") as tmp, \
            _database(backend, Path(tmp)) as url:
        config = _config(url, Path(tmp), heartbeat)
        _prepare(config)
        started = time.perf_counter()
        errors = _run_workers(config, n_workers, n_trials, Path(tmp))
        wall = time.perf_counter() - started
        counts = _count(config)
    expected = n_workers * n_trials
    return {
        "name": f"stress_{backend}", "unit": "trials/s",
        "ours": round(counts["complete"] / wall, 4), "peer": None, "ratio": None,
        "higher_is_better": True, "device": cpu_name(), "workers": n_workers,
        "trials": expected, **counts, "lost": expected - counts["complete"],
        "wall_s": round(wall, 2), "worker_errors": errors,
    }


@contextmanager
def _database(backend: str, folder: Path) -> Iterator[str]:
    """A URL for an empty database: a SQLite file in `folder`, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'stress.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG
    plain = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"stress_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _config(url: str, folder: Path, heartbeat: int) -> Any:
    from trainer.config import Config

    return Config(db=url, model="fake", study=STUDY, max_length=16, seed=0,
                  artifacts=str(folder / "artifacts"), heartbeat=heartbeat,
                  search_space={"num_train_epochs": {"low": 1, "high": 2}})


def _prepare(config: Any) -> None:
    """Create our tables and the study first, as `python -m trainer tune` would."""
    import optuna

    from storage.store import open_store
    from trainer.tuning import study as tuning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    open_store(config.db).close()
    tuning.open_study(config, create=True)


def _run_workers(config: Any, n_workers: int, n_trials: int, folder: Path) -> int:
    """Start the workers together and wait for all; returns how many did not exit with 0."""
    from tests.trainer.tuning.test_workers import WORKER  # the fake-fast training the tests use

    script, marks = folder / "worker.py", folder / "marks"
    script.write_text(WORKER, encoding="utf-8")
    marks.mkdir()
    args = {"repo": str(REPO), "config": config.to_json(), "n_trials": n_trials,
            "mode": "work", "epoch_s": 0.0, "stall_after": 0, "marks": str(marks)}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = []
    for i in range(n_workers):
        with open(folder / f"worker-{i}.log", "w", encoding="utf-8") as log:
            procs.append(subprocess.Popen([sys.executable, str(script), json.dumps(args)],
                                          stdout=log, stderr=subprocess.STDOUT, env=env,
                                          cwd=folder))
    return sum(_finished_badly(proc, folder / f"worker-{i}.log") for i, proc in enumerate(procs))


def _finished_badly(proc: subprocess.Popen, log: Path) -> bool:
    try:
        code = proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        print(f"worker {proc.pid} exited with {code}:\n{tail}", file=sys.stderr)
    return code != 0


def _count(config: Any) -> dict[str, int]:
    """Trial states of the study and our stored per-trial rows."""
    import optuna
    from optuna.trial import TrialState

    from storage.store import open_store
    from trainer.tuning.storage import optuna_storage

    storage = optuna_storage(config.db, 0)
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    states = [t.state for t in trials]
    with open_store(config.db) as store:
        rows = len(store.list_runs(stage="trial", study=STUDY))
    storage.engine.dispose()
    return {"complete": states.count(TrialState.COMPLETE), "failed": states.count(TrialState.FAIL),
            "running": states.count(TrialState.RUNNING), "rows": rows}


if __name__ == "__main__":
    sys.exit(main())
