"""Many worker processes on one study: nothing lost, nothing duplicated, a killed worker recovered.

The workers are real processes with the real storage path (Optuna's RDBStorage and our Store on
SQLite or PostgreSQL); only the training is faked, passed to tune/work as their train_model, so
a trial takes a fraction of a second.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from storage.store import open_store
from trainer.config import Config
from trainer.tuning import study as tuning
from trainer.tuning.storage import optuna_storage
from trainer.tuning.trials import EPOCH_METRICS, FAIL_REASON

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
WAIT_S = 240  # generous limits for a loaded 2-core machine; no assertion is about time

WORKER = r'''
"""One worker process: fake-fast training passed in, the real study and storage around it."""
import json, os, sys, time
from pathlib import Path

import numpy as np

args = json.loads(sys.argv[1])
sys.path.insert(0, args["repo"])

import optuna  # noqa: E402

from storage.store import open_store  # noqa: E402
from trainer.config import Config  # noqa: E402
from trainer.splits import Split  # noqa: E402
from trainer.tuning import study as tuning  # noqa: E402


def train_model(model, train, validation, params, *, max_length, seed, on_epoch, work_dir,
                save_to):
    """A TrainModel (see trainer.tuning.study) that sleeps instead of training."""
    labels = np.asarray(validation.labels)
    rng = np.random.default_rng(int(params["learning_rate"] * 1e12) % 2**32)
    for epoch in range(1, params["num_train_epochs"] + 1):
        time.sleep(args["epoch_s"])
        probs = np.clip(labels * 0.6 + 0.2 + rng.normal(0, 0.25, len(labels)), 0, 1)
        on_epoch(epoch, probs)
        Path(args["marks"], f"{os.getpid()}-epoch-{epoch}").touch()
        if args["stall_after"] and epoch >= args["stall_after"]:
            time.sleep(3600)  # killed or interrupted in the middle of the trial
    save_to.mkdir(parents=True, exist_ok=True)
    (save_to / "config.json").write_text(json.dumps(params))
    (save_to / "model.safetensors").write_bytes(b"fake")
    return save_to


def reviews(n, name):
    labels = np.arange(n) % 2
    texts = [f"{name} review {i}: {'great' if y else 'awful'} film" for i, y in enumerate(labels)]
    return Split(texts, labels, [f"{name}/{i}" for i in range(n)], name)


optuna.logging.set_verbosity(optuna.logging.WARNING)
config = Config(**args["config"])
store = open_store(config.db)
run = tuning.tune if args["mode"] == "tune" else tuning.work
run(config, reviews(16, "train"), reviews(12, "validation"), store, n_trials=args["n_trials"],
    progress=False, train_model=train_model, pruner=optuna.pruners.NopPruner())
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
              stall_after: int = 0) -> subprocess.Popen:
        args = {"repo": str(REPO), "config": config.to_json(), "n_trials": n_trials,
                "mode": mode, "epoch_s": epoch_s, "stall_after": stall_after,
                "marks": str(self.marks)}
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
    retry = trials[1]
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
