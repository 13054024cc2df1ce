"""A trial's record (per-epoch runs, user attrs) and study logging: log_trial, quiet_optuna."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from storage.records import Evaluation, Predictions, RunSpec
from trainer.config import Config
from trainer.metrics import evaluate
from trainer.splits import Split

log = logging.getLogger(__name__)

EPOCH_METRICS = "epoch_metrics"  # user attr: [{"epoch": 1, "accuracy": …, "loss": …}, …]
FAIL_REASON = "fail_reason"  # user attr of a FAIL trial that we ended ourselves
WORKER = "worker"  # user attr: "host:pid" of the process that ran the trial


def worker_name() -> str:
    """This process as a worker: its host name and process id, e.g. "gpu-3:41207"."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's warnings only, for a while: log_trial says what its INFO lines would."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Log one short line on how a trial ended (an Optuna callback)."""
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        log.info("trial %d: accuracy %.4f (best: trial %d, %.4f); %s", trial.number, trial.value,
                 best.number, best.value, params)
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        log.info("trial %d: pruned after epoch %d at accuracy %.4f; %s", trial.number, epoch,
                 trial.intermediate_values[epoch], params)
    elif trial.state == TrialState.FAIL:
        log.info("trial %d: failed (%s)", trial.number,
                 trial.user_attrs.get(FAIL_REASON, "see the log above"))


@dataclass
class TrialRecord:
    """One trial's stored state: its latest epoch's run (replaced each epoch) and history."""

    config: Config
    validation: Split
    store: Any
    data_source: str
    trial: optuna.Trial
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    last: tuple[int, Evaluation, Predictions] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        assert self.last is not None
        return float(self.last[1].scalars["accuracy"])

    def on_epoch(self, epoch: int, probs: np.ndarray) -> None:
        """Score, store and report one epoch; prune unless it was the last epoch anyway."""
        val, trial = self.validation, self.trial
        probs = np.asarray(probs, dtype=float).reshape(-1)
        evaluation = evaluate(val.labels, probs, seed=self.config.seed)
        self.last = (epoch, evaluation, val.predictions(probs))
        self.save(artifact=None)
        self.history.append({"epoch": epoch, **_finite(evaluation.scalars)})
        trial.set_user_attr(EPOCH_METRICS, self.history)
        trial.report(self.accuracy, epoch)
        if epoch < self.params["num_train_epochs"] and trial.should_prune():
            raise optuna.TrialPruned(f"accuracy {self.accuracy:.4f} after epoch {epoch}")

    def save(self, *, artifact: str | None) -> None:
        """Store the latest epoch as this trial's run (one transaction, replacing the last)."""
        assert self.last is not None
        epoch, evaluation, predictions = self.last
        c = self.config
        spec = RunSpec(
            stage="trial", model=c.model, split="validation", data_source=self.data_source,
            config={**c.to_json(), "params": self.params, "epoch": epoch,
                    "epochs_planned": self.params["num_train_epochs"]},
            config_hash=_trial_hash(c, self.params), study=c.study, trial=self.trial.number,
            artifact=artifact, duration_s=round(time.monotonic() - self.started, 3),
        )
        self.store.save_run(spec, evaluation, predictions)


def _trial_hash(config: Config, params: dict[str, Any]) -> str:
    base = config.fingerprint("data", "model", "train_size", "eval_size", "max_length", "seed",
                              "frozen_layers")
    blob = json.dumps({"config": base, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finite(scalars: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe metrics: NaN (roc_auc with one class present) becomes None."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in scalars.items()}


def ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials, best first; ties go to the earlier trial, as Optuna's best_trial does."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(complete, key=lambda t: (-t.value, t.number))
