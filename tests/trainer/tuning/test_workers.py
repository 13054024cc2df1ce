"""Many worker processes on one study: nothing lost, nothing duplicated, a killed worker recovered.

The workers are real processes with the real storage path (Optuna's RDBStorage and our Store on
SQLite or PostgreSQL); only the training is faked, passed to tune/work as their train_model, so
a trial takes a fraction of a second.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from storage.engine import SQLITE_BUSY_S
from storage.store import open_store
from tests.storage.test_engines import tagged, terminate
from tests.trainer.tuning import fake_training
from trainer.config import Config
from trainer.tuning import study as tuning
from trainer.tuning.storage import REAPED, optuna_storage
from trainer.tuning.trials import EPOCH_METRICS, FAIL_REASON

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
WAIT_S = 240  # generous limits for a loaded 2-core machine; no assertion is about time

WORKER = r'''
"""One worker process: fake-fast training passed in, the real study and storage around it."""
import functools, json, os, sys

args = json.loads(sys.argv[1])
sys.path.insert(0, args["repo"])

import optuna  # noqa: E402

from storage.errors import StorageError  # noqa: E402
from storage.store import open_store  # noqa: E402
from tests.trainer.tuning.fake_training import reviews, train_model  # noqa: E402
from trainer.config import Config  # noqa: E402
from trainer.errors import TrainerError  # noqa: E402
from trainer.tuning import study as tuning  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
config = Config(**args["config"])
training = functools.partial(train_model, epoch_s=args["epoch_s"],
                             stall_after=args["stall_after"], marks=args["marks"])
pruner = tuning.make_pruner() if args.get("pruner") == "median" else optuna.pruners.NopPruner()
train, validation = reviews(16, "train"), reviews(args.get("validation", 12), "validation")


def top_up(store, target):
    """One trial at a time until the study has `target` finished trials and none left running
    or waiting: the first ask fails the trials of killed workers, the next run their retries."""
    for _ in range(target):
        states = [t.state for t in tuning.open_study(config, create=False).get_trials(
            deepcopy=False)]
        if sum(s.is_finished() for s in states) >= target and all(
                s.is_finished() for s in states):
            return
        tuning.work(config, train, validation, store, n_trials=1, progress=False,
                    train_model=training, pruner=pruner)


try:
    store = open_store(config.db, lock_timeout_s=config.lock_timeout)
    if args["mode"] == "top_up":
        top_up(store, args["n_trials"])
    else:
        run = tuning.tune if args["mode"] == "tune" else tuning.work
        run(config, train, validation, store, n_trials=args["n_trials"], progress=False,
            train_model=training, pruner=pruner)
except (TrainerError, StorageError) as e:  # as the command line does: one line, exit 1
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
# With the training passed in nothing needs torch: eight workers on two cores would otherwise
# spend their time importing it rather than on the storage path these tests are about.
assert "torch" not in sys.modules, "a worker whose training is passed in imported torch"
print("worker done", os.getpid(), flush=True)
'''


class Workers:
    """Starts worker processes and cleans up any left behind."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.script = tmp_path / "worker.py"
        self.script.write_text(WORKER)
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.procs: list[subprocess.Popen] = []

    def start(self, config: Config, *, n_trials: int, mode: str = "work", epoch_s: float = 0.0,
              stall_after: int = 0, pruner: str = "none") -> subprocess.Popen:
        args = {"repo": str(REPO), "config": config.to_json(), "n_trials": n_trials,
                "mode": mode, "epoch_s": epoch_s, "stall_after": stall_after,
                "marks": str(self.marks), "pruner": pruner}
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, str(self.script), json.dumps(args)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp_path)
        self.procs.append(proc)
        return proc

    def wait_all(self) -> None:
        """Every worker ends by itself with exit code 0."""
        for i, proc in enumerate(self.procs):
            code = proc.wait(timeout=WAIT_S)
            assert code == 0, (self.tmp_path / f"worker-{i}.log").read_text()

    def wait_for_trial(self) -> None:
        """Until some worker has started training a trial (it is past opening the study)."""
        deadline = time.monotonic() + WAIT_S
        while not any(self.marks.glob("*-trial-*")):
            assert all(p.poll() is None for p in self.procs), "a worker exited early"
            assert time.monotonic() < deadline, "no worker ever started a trial"
            time.sleep(0.05)

    def wait_for_mark(self, proc: subprocess.Popen, epoch: int) -> None:
        mark = self.marks / f"{proc.pid}-epoch-{epoch}"
        deadline = time.monotonic() + WAIT_S
        while not mark.exists():
            assert proc.poll() is None, f"the worker exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "the worker never finished its first epoch"
            time.sleep(0.1)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.kill_all()


def make_config(url: str, tmp_path: Path, heartbeat: int) -> Config:
    return Config(db=url, model="fake", study="shared-study", max_length=16, seed=0,
                  artifacts=str(tmp_path / "artifacts"), heartbeat=heartbeat,
                  search_space={"num_train_epochs": {"low": 1, "high": 2}})


def count(study: optuna.Study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {state: sum(t.state == state for t in trials) for state in TrialState}


def test_eight_workers_finish_forty_trials_without_loss_or_duplicates(
    file_db_url: str, tmp_path: Path, workers: Workers
) -> None:
    config = make_config(file_db_url, tmp_path, heartbeat=5)
    tuning.open_study(config, create=True)
    for _ in range(8):
        workers.start(config, n_trials=5)
    workers.wait_all()

    study = tuning.open_study(config, create=False)
    states = count(study)
    assert states[TrialState.COMPLETE] == 40
    assert states[TrialState.FAIL] == states[TrialState.RUNNING] == 0
    assert states[TrialState.WAITING] == 0
    numbers = sorted(t.number for t in study.get_trials(deepcopy=False))
    assert numbers == list(range(40))
    store = open_store(file_db_url)
    rows = store.list_runs(stage="trial", study=config.study)
    assert sorted(r.spec.trial for r in rows) == numbers  # one row per trial, none lost
    complete = {t.number: t for t in study.get_trials(deepcopy=False)}
    for row in rows:
        assert row.spec.config["params"] == complete[row.spec.trial].params
        assert row.evaluation.scalars["accuracy"] == complete[row.spec.trial].value
    store.close()


def test_a_killed_worker_s_trial_fails_and_is_retried_once_with_the_same_params(
    file_db_url: str, tmp_path: Path, workers: Workers
) -> None:
    config = make_config(file_db_url, tmp_path, heartbeat=1)
    study = tuning.open_study(config, create=True)
    victim = workers.start(config, n_trials=1, epoch_s=0.2, stall_after=1)
    workers.wait_for_mark(victim, epoch=1)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=WAIT_S)
    (killed,) = study.get_trials(deepcopy=False)
    assert killed.state == TrialState.RUNNING  # nobody has noticed yet
    wait_until_stale(study, killed)

    rescuer = workers.start(config, n_trials=2)  # its first ask fails the stale trial
    assert rescuer.wait(timeout=WAIT_S) == 0, (tmp_path / "worker-1.log").read_text()

    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE,
                                         TrialState.COMPLETE]
    assert trials[0].user_attrs[FAIL_REASON] == REAPED
    retry = trials[1]
    assert FAIL_REASON not in retry.user_attrs  # it completed: nothing to explain
    assert retry.system_attrs["failed_trial"] == killed.number
    assert retry.params == killed.params
    assert retry.user_attrs[EPOCH_METRICS][-1]["epoch"] == retry.params["num_train_epochs"]
    assert "failed_trial" not in trials[2].system_attrs  # retried once, not again
    store = open_store(file_db_url)
    rows = {r.spec.trial: r for r in store.list_runs(stage="trial", study=config.study)}
    assert sorted(rows) == [0, 1, 2]  # no orphan: every row belongs to one trial of the study
    assert rows[killed.number].spec.config["epoch"] == 1  # the retry overwrote nothing of it
    assert rows[killed.number].spec.artifact is None
    assert rows[retry.number].evaluation.scalars["accuracy"] == retry.value
    store.close()


def wait_until_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Wait (no assertion on how long) until the killed trial's heartbeat is past the grace."""
    storage = optuna_storage(study._storage._backend.url, heartbeat=1)
    deadline = time.monotonic() + WAIT_S
    while trial._trial_id not in storage._get_stale_trial_ids(study._study_id):
        assert time.monotonic() < deadline, "the killed trial never became stale"
        time.sleep(0.2)


def test_ctrl_c_in_a_tune_process_leaves_no_running_trial(
    file_db_url: str, tmp_path: Path, workers: Workers
) -> None:
    config = make_config(file_db_url, tmp_path, heartbeat=60)
    tuner = workers.start(config, n_trials=3, mode="tune", stall_after=1)
    workers.wait_for_mark(tuner, epoch=1)
    tuner.send_signal(signal.SIGINT)
    assert tuner.wait(timeout=WAIT_S) != 0

    study = tuning.open_study(config, create=False)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL
    assert "interrupted" in trial.user_attrs[FAIL_REASON]
    store = open_store(file_db_url)
    assert sorted(store.trial_runs(config.study)) == [0]
    store.close()


# --- a database that drops its connections or stays locked for a while -------------------


def every_trial_ended_with_a_reason(study: optuna.Study, store_url: str) -> list[FrozenTrial]:
    """The invariants of a run that met faults; returns the trials."""
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicate, no gap
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL), t
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get(FAIL_REASON), t
    with open_store(store_url) as store:
        rows = store.trial_runs(study.study_name)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert rows[t.number].evaluation.scalars["accuracy"] == t.value
    return trials


class Terminator(threading.Thread):
    """pg_terminate_backend on every connection of the workers (tagged by application_name),
    a few times while they run; counts what it terminated."""

    def __init__(self, url: str, tag: str, rounds: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.tag, self.rounds, self.every_s = url, tag, rounds, every_s
        self.terminated = 0

    def run(self) -> None:
        for _ in range(self.rounds):
            time.sleep(self.every_s)
            self.terminated += terminate(self.url, self.tag)


def test_workers_survive_their_postgresql_connections_being_terminated(
    pg_schema_url: str, tmp_path: Path, workers: Workers
) -> None:
    tag = f"w-{uuid.uuid4().hex[:8]}"
    url = tagged(pg_schema_url, tag)
    config = make_config(url, tmp_path, heartbeat=2)
    tuning.open_study(config, create=True)
    for _ in range(3):
        workers.start(config, n_trials=6, epoch_s=0.05)
    terminator = Terminator(url, tag, rounds=6, every_s=0.7)
    terminator.start()
    workers.wait_all()  # each exits 0: every dropped call was waited out
    terminator.join()
    assert terminator.terminated > 0

    study = tuning.open_study(make_config(pg_schema_url, tmp_path, heartbeat=2), create=False)
    trials = every_trial_ended_with_a_reason(study, pg_schema_url)
    assert len(trials) >= 18  # the quota, plus any reaped trial's retry


def test_workers_wait_out_a_sqlite_database_locked_for_seconds(
    tmp_path: Path, workers: Workers
) -> None:
    path = tmp_path / "locked.db"
    config = make_config(f"sqlite:///{path}", tmp_path, heartbeat=0)
    tuning.open_study(config, create=True)
    for _ in range(2):
        workers.start(config, n_trials=4, epoch_s=0.05)
    workers.wait_for_trial()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writes for longer than a busy timeout
    time.sleep(SQLITE_BUSY_S + 3)
    holder.rollback()
    holder.close()
    workers.wait_all()

    logs = " ".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "waiting for the database sqlite:///" in logs  # they said what they waited for
    study = tuning.open_study(config, create=False)
    trials = every_trial_ended_with_a_reason(study, config.db)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8


def test_a_worker_facing_a_persistent_outage_exits_with_one_line(
    tmp_path: Path, workers: Workers
) -> None:
    path = tmp_path / "locked.db"
    config = replace(make_config(f"sqlite:///{path}", tmp_path, heartbeat=0), lock_timeout=3)
    tuning.open_study(config, create=True)
    holder = sqlite3.connect(path, isolation_level=None)
    worker = workers.start(config, n_trials=3, epoch_s=0.5)
    workers.wait_for_trial()
    holder.execute("BEGIN IMMEDIATE")  # from now on, nobody else writes
    try:
        assert worker.wait(timeout=WAIT_S) == 1
    finally:
        holder.rollback()
        holder.close()
    lines = (tmp_path / "worker-0.log").read_text().strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], lines  # it ends with one error line ...
    assert errors[0].startswith("error: Could not ")
    assert "after waiting 3 s: another process holds its lock" in errors[0]
    assert "Traceback" not in " ".join(lines)  # ... and no traceback
    assert any(line.startswith("waiting for the database") for line in lines)


def test_the_median_pruner_stops_trials_of_the_fake_training(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = Config(db=sqlite_url, model="fake", study="pruned", max_length=16, seed=0,
                    artifacts=str(tmp_path / "artifacts"), heartbeat=0,
                    search_space={"num_train_epochs": {"low": 2, "high": 2}})
    with open_store(sqlite_url) as store:
        study = tuning.tune(config, fake_training.reviews(16, "train"),
                            fake_training.reviews(40, "validation"), store, n_trials=12,
                            progress=False, train_model=fake_training.train_model)
    states = count(study)
    assert states[TrialState.PRUNED] > 0
    assert states[TrialState.COMPLETE] > 0
    values = [t.value for t in study.get_trials(deepcopy=False) if t.value is not None]
    assert len(set(values)) > 1  # the parameters matter: the trials differ


def test_the_fake_skill_follows_the_learning_rate() -> None:
    assert fake_training.skill({"learning_rate": 10 ** fake_training.BEST_LOG_LR}) == 1.0
    assert fake_training.skill({"learning_rate": 1e-6}) < fake_training.skill(
        {"learning_rate": 1e-5}) < 1.0


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"
