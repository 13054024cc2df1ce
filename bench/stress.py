"""Stress: N worker processes × M trials of one study per backend, with faults; checks and figures.

    python -m bench stress --workers 16 --trials 50 [--backends sqlite,postgresql] [--kill 2]
        [--no-terminate] [--heartbeat 5] [--out FILE]

Each worker is a real process on the real storage path (Optuna's RDBStorage through
trainer.tuning.storage.optuna_storage, our Store's per-trial rows) with the median pruner; only
the training is faked (tests/trainer/tuning/fake_training.py, whose accuracy follows the
learning rate, so trials differ and some are pruned), so the figure is the storage path's
throughput.

Faults, mid-run: `--kill` workers are SIGKILLed (at 25% and 50% of the trials started, ...;
each one as it starts training a trial), and on PostgreSQL every connection of the study's
workers is terminated once (at 40%) with pg_terminate_backend: all backends of the test
database whose application_name is this run's tag (every worker connects with it), so other
users of a shared server keep theirs.
A killed worker's quota is made up by restarting it at once with the trials it still owed (its
quota minus the trials it had started; the one it was running is reaped by the heartbeat and
queued again for whoever asks next); once every worker has ended, one last worker runs what the
reaper queued after the others had finished, if anything. Were a worker killed after asking
for a trial but before training it, it would owe one less than counted ("extra_trials").

Checked at the end (the figure's "checks", and exit 1 if one fails): every trial is COMPLETE,
PRUNED or FAIL and every FAIL has a fail_reason; trial numbers are 0..n-1 without a duplicate;
every COMPLETE trial has its stored evaluation (accuracy = the trial's value); every worker that
was not killed exited 0; the study holds its workers × trials finished trials; some were pruned.
SQLite lives in a temporary folder; PostgreSQL (TEST_DATABASE_URL, else the local server) in a
fresh schema that is dropped afterwards. Prints one JSON object per backend.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")
STUDY = "stress"
WAIT_S = 1800  # a run that has not ended by then is stopped and its workers count as failed
POLL_S = 0.2
KILL_POLL_S = 0.005  # how closely a victim is watched for the start of its next trial
KILL_AT = (0.25, 0.5, 0.6, 0.7)  # fractions of the trials started at which workers are killed
TERMINATE_AT = 0.4
VALIDATION = 40  # reviews each trial is scored on: fine enough steps for the pruner's median


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=8, help="worker processes")
    parser.add_argument("--trials", type=int, default=5, help="trials per worker")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: sqlite, postgresql")
    parser.add_argument("--heartbeat", type=int, default=5, help="seconds; 0 turns it off")
    parser.add_argument("--kill", type=int, default=2,
                        help=f"workers SIGKILLed mid-run (at most {len(KILL_AT)}); 0: none")
    parser.add_argument("--no-terminate", action="store_true",
                        help="do not terminate the PostgreSQL connections mid-run")
    parser.add_argument("--seed", type=int, default=0, help="picks the workers to kill")
    parser.add_argument("--out", default=None, help="also write the JSON lines to this file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stress benchmark on each backend and print one JSON object per backend.

    Args:
        argv: the options (see add_arguments); sys.argv[1:] when None.

    Returns:
        0, or 1 when a backend could not be measured or one of its checks failed.
    """
    parser = argparse.ArgumentParser(prog="python -m bench stress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or args.workers < 1 or args.trials < 1 or not 0 <= args.kill <= len(KILL_AT) \
            or args.kill >= args.workers or (args.kill and not args.heartbeat):
        parser.error(f"expected --backends from {list(BACKENDS)}, --workers/--trials of at "
                     f"least 1, --kill from 0 to {len(KILL_AT)} and below --workers, and a "
                     f"heartbeat when killing; found backends {backends}, {args.workers} "
                     f"workers, {args.trials} trials, --kill {args.kill}, --heartbeat "
                     f"{args.heartbeat}")
    figures, code = [], 0
    for backend in backends:
        faults = Faults(kills=args.kill, terminate=backend == "postgresql" and not
                        args.no_terminate, seed=args.seed)
        try:
            figures.append(stress(backend, args.workers, args.trials, args.heartbeat, faults))
        except Exception as e:  # noqa: BLE001 - one backend down must not hide the other
            print(f"stress_{backend}: could not run ({type(e).__name__}: {e})", file=sys.stderr)
            code = 1
        else:
            print(json.dumps(figures[-1]), flush=True)
            code = code or int(not figures[-1]["ok"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(json.dumps(f) + "\n" for f in figures),
                                  encoding="utf-8")
    return code


@dataclass
class Faults:
    """What to break mid-run, and what was seen of it."""

    kills: int = 0
    terminate: bool = False
    seed: int = 0
    killed: list[dict[str, Any]] = field(default_factory=list)
    terminated: dict[str, Any] | None = None
    top_up_trials: int = 0


def stress(backend: str, n_workers: int, n_trials: int, heartbeat: int,
           faults: Faults | None = None) -> dict[str, Any]:
    """Run `n_workers` processes × `n_trials` trials of one fresh study on `backend`.

    Args:
        backend: "sqlite" or "postgresql".
        n_workers: worker processes, started together.
        n_trials: trials each worker runs.
        heartbeat: the study's heartbeat in seconds.
        faults: workers to kill and whether to terminate the connections; None: no faults.

    Returns:
        The figure: trials/s (finished trials over the wall time from the first worker's start
        to the last one's end, process start-up and the faults included), the trial counts,
        what the faults did and how long recovery took, and the checks.

    Raises:
        StorageError: the database cannot be opened.
    """
    faults = faults or Faults()
    tag = f"stress-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix=f"stress-{backend}-") as tmp, \
            _database(backend, Path(tmp)) as url:
        worker_url = _tagged(url, tag) if backend == "postgresql" else url
        run = Run(_config(worker_url, Path(tmp), heartbeat), Path(tmp), n_trials)
        _prepare(run.config)
        started = time.perf_counter()
        run.start_all(n_workers)
        _break_and_wait(run, n_workers * n_trials, faults, url, tag, heartbeat)
        wall = time.perf_counter() - started
        states, checks = _check(run, url, n_workers * n_trials)
        logs = run.logs()
    finished = states["complete"] + states["pruned"] + states["failed"]
    return {
        "name": f"stress_{backend}", "unit": "trials/s", "ours": round(finished / wall, 4),
        "peer": None, "ratio": None, "higher_is_better": True, "device": cpu_name(),
        "workers": n_workers, "trials": n_workers * n_trials, **states,
        "lost": max(0, n_workers * n_trials - finished),
        "extra_trials": max(0, finished - n_workers * n_trials), "wall_s": round(wall, 2),
        "worker_errors": len(run.failed_workers()), "killed": faults.killed,
        "terminated": faults.terminated, "top_up_trials": faults.top_up_trials,
        "wait_notices": logs.count("waiting for the database"),
        "checks": checks, "ok": all(checks.values()),
    }


@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path
    n_trials: int
    killed: bool = False


class Run:
    """The worker processes of one backend's run, their logs and progress marks."""

    def __init__(self, config: Any, folder: Path, n_trials: int) -> None:
        from tests.trainer.tuning.test_workers import WORKER  # the tests' worker process

        self.config, self.folder, self.n_trials = config, folder, n_trials
        self.script, self.marks = folder / "worker.py", folder / "marks"
        self.script.write_text(WORKER, encoding="utf-8")
        self.marks.mkdir()
        self.workers: list[Worker] = []

    def start(self, n_trials: int, mode: str = "work") -> Worker:
        args = {"repo": str(REPO), "config": self.config.to_json(), "n_trials": n_trials,
                "mode": mode, "epoch_s": 0.0, "stall_after": 0, "marks": str(self.marks),
                "pruner": "median", "validation": VALIDATION}
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        log = self.folder / f"worker-{len(self.workers)}.log"
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen([sys.executable, str(self.script), json.dumps(args)],
                                    stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.folder)
        self.workers.append(Worker(proc, log, n_trials))
        return self.workers[-1]

    def start_all(self, n: int) -> None:
        for _ in range(n):
            self.start(self.n_trials)

    def started(self, pid: int | None = None) -> int:
        """Trials started (by one process, or by all)."""
        return sum(1 for _ in self.marks.glob(f"{pid if pid else '*'}-trial-*"))

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def wait(self, deadline: float) -> None:
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def failed_workers(self) -> list[Worker]:
        return [w for w in self.workers if not w.killed and w.proc.returncode != 0]

    def logs(self) -> str:
        return "".join(w.log.read_text(encoding="utf-8", errors="replace") for w in self.workers)


def _break_and_wait(run: Run, target: int, faults: Faults, url: str, tag: str,
                    heartbeat: int) -> None:
    """Kill and terminate at their moments, restart the killed, then top the study up."""
    rng = random.Random(faults.seed)
    kill_at = list(KILL_AT[:faults.kills])
    terminate_at = TERMINATE_AT if faults.terminate else None
    watch: list[tuple[str, float, dict[str, Any]]] = []  # recoveries still being timed
    begun = time.monotonic()
    deadline = begun + WAIT_S
    while run.alive() and time.monotonic() < deadline:
        progress = run.started() / target
        if kill_at and progress >= kill_at[0]:
            kill_at.pop(0)
            watch.append(("kill", time.monotonic(), _kill_one(run, rng, faults)))
        if terminate_at is not None and progress >= terminate_at:
            terminate_at = None
            seen = {w.proc.pid: run.started(w.proc.pid) for w in run.alive()}
            faults.terminated = {"at_trials_started": run.started(),
                                 "connections": _terminate(url, tag), "recovered_s": None}
            watch.append(("terminate", time.monotonic(), {**faults.terminated, "seen": seen}))
        watch = [w for w in watch if not _recovered(run, faults, *w)]
        time.sleep(POLL_S)
    run.wait(deadline)
    if faults.killed:  # the reaper acts on the next ask after the grace period
        last_kill = max(k["at_s"] for k in faults.killed)
        time.sleep(max(0.0, last_kill + 2 * heartbeat + 3 - time.monotonic()))
    top_up = run.start(target, mode="top_up")
    run.wait(time.monotonic() + WAIT_S)
    for kind, since, info in watch:  # not seen recovering before the workers ended
        _recovered(run, faults, kind, since, info)
    for k in faults.killed:
        k["at_s"] = round(k["at_s"] - begun, 1)
        k.pop("fails_before")
    faults.top_up_trials = run.started(top_up.proc.pid)


def _kill_one(run: Run, rng: random.Random, faults: Faults) -> dict[str, Any]:
    """SIGKILL a running original worker as it starts training a trial; start its replacement.

    Killed then, the trials it asked for are exactly those it started, so its replacement owes
    the rest; its running trial is reaped and queued again.
    """
    candidates = [w for w in run.alive()
                  if w.n_trials == run.n_trials and run.started(w.proc.pid) < w.n_trials - 1]
    victim = rng.choice(candidates or run.alive())
    before = run.started(victim.proc.pid)
    deadline = time.monotonic() + 60
    while run.started(victim.proc.pid) == before and victim.proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(KILL_POLL_S)
    started = run.started(victim.proc.pid)
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    victim.killed = True
    owed = victim.n_trials - started
    if owed > 0:
        run.start(owed)
    info = {"pid": victim.proc.pid, "trials_started": started, "restarted_with": owed,
            "at_s": time.monotonic(), "fails_before": _reaped(run), "reaped_after_s": None}
    faults.killed.append(info)
    return info


def _recovered(run: Run, faults: Faults, kind: str, since: float, info: dict[str, Any]
               ) -> bool:
    """Whether the fault is over, timing it: the killed worker's trial reaped (FAIL, REAPED),
    or every worker that was running at the termination has started a new trial (or ended)."""
    if kind == "kill":
        if _reaped(run) <= info["fails_before"]:
            return False
        info["reaped_after_s"] = round(time.monotonic() - since, 2)
        return True
    alive = {w.proc.pid for w in run.alive()}
    if any(run.started(pid) <= n for pid, n in info["seen"].items() if pid in alive):
        return False
    assert faults.terminated is not None
    faults.terminated["recovered_s"] = round(time.monotonic() - since, 2)
    return True


def _reaped(run: Run) -> int:
    """Trials failed as REAPED so far (a light query beside the workers)."""
    from sqlalchemy import create_engine, text

    from trainer.tuning.storage import REAPED

    engine = create_engine(_untagged(run.config.db))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM trial_user_attributes WHERE key = 'fail_reason' "
                "AND value_json = :reaped"), {"reaped": json.dumps(REAPED)}).scalar() or 0)
    finally:
        engine.dispose()


def _terminate(url: str, tag: str) -> int:
    """pg_terminate_backend on every backend of the test database with this run's tag."""
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql", query={}).render_as_string(
        hide_password=False)
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s "
            "AND pid <> pg_backend_pid()", [tag]).fetchall()
    return sum(1 for (done,) in rows if done)


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


def _tagged(url: str, tag: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={tag}"


def _untagged(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    query = {k: v for k, v in parsed.query.items() if k != "application_name"}
    return parsed.set(drivername="postgresql+psycopg", query=query).render_as_string(
        hide_password=False)


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


def _check(run: Run, url: str, target: int) -> tuple[dict[str, int], dict[str, bool]]:
    """Trial states and the invariants, read with connections of the bench's own."""
    import optuna
    from optuna.trial import TrialState

    from storage.store import open_store
    from trainer.tuning.storage import optuna_storage
    from trainer.tuning.trials import FAIL_REASON

    storage = optuna_storage(_untagged(run.config.db), 0)
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    with open_store(_untagged(run.config.db)) as store:
        rows = store.trial_runs(STUDY)
    by_state = Counter(t.state for t in trials)
    fails = [t for t in trials if t.state == TrialState.FAIL]
    finished = [t for t in trials if t.state.is_finished()]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    reasons = Counter(str(t.user_attrs.get(FAIL_REASON, "")).split(":")[0] for t in fails)
    states = {"complete": by_state[TrialState.COMPLETE], "pruned": by_state[TrialState.PRUNED],
              "failed": by_state[TrialState.FAIL], "running": by_state[TrialState.RUNNING],
              "waiting": by_state[TrialState.WAITING], "rows": len(rows),
              "fail_reasons": dict(reasons)}
    checks = {
        "every_trial_finished": len(finished) == len(trials),
        "every_fail_has_a_reason": all(t.user_attrs.get(FAIL_REASON) for t in fails),
        "numbers_without_duplicate_or_gap": sorted(t.number for t in trials)
        == list(range(len(trials))),
        "every_complete_has_its_evaluation": all(
            t.number in rows and rows[t.number].evaluation.scalars["accuracy"] == t.value
            for t in complete),
        "surviving_workers_exited_0": not run.failed_workers(),
        "study_reached_its_trials": len(finished) >= target,
        "some_pruned": by_state[TrialState.PRUNED] > 0,
        "no_traceback_in_worker_logs": "Traceback" not in run.logs(),
    }
    for w in run.failed_workers():
        tail = w.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        print(f"worker {w.proc.pid} exited with {w.proc.returncode}:\n{tail}", file=sys.stderr)
    return states, checks


if __name__ == "__main__":
    sys.exit(main())
