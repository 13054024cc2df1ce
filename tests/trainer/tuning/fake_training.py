"""Fake-fast training for worker and stress runs: no model; accuracy follows the parameters."""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trainer.splits import Split

BEST_LOG_LR = -4.7  # the learning rate (2e-5) at which the fake model learns best
NOISE = 0.25  # standard deviation of a probability around its label's side
_started = itertools.count(1)  # trials this process has started training


def skill(params: dict[str, Any]) -> float:
    """How well a trial's parameters train, in [0, 1]: 1 at the best learning rate.

    The learning rate (log scale, 1e-6 to 1e-4 by default) decides it, so trials differ and a
    median pruner has trials below the median to stop.
    """
    return max(0.0, 1.0 - abs(math.log10(params["learning_rate"]) - BEST_LOG_LR) / 2.0)


def epoch_probs(labels: np.ndarray, params: dict[str, Any], epoch: int,
                rng: np.random.Generator) -> np.ndarray:
    """Validation probabilities after `epoch`: further from 0.5 on the right side with skill."""
    margin = 0.25 * skill(params) * (1.0 + 0.3 * (epoch - 1))
    side = np.where(np.asarray(labels) == 1, 1.0, -1.0)
    return np.clip(0.5 + side * margin + rng.normal(0, NOISE, len(labels)), 0.0, 1.0)


def train_model(model: str, train: Split, validation: Split, params: dict[str, Any], *,
                max_length: int, seed: int, on_epoch: Callable[[int, np.ndarray], None],
                work_dir: str, save_to: Path, epoch_s: float = 0.0, stall_after: int = 0,
                marks: str | None = None) -> Path:
    """A TrainModel (see trainer.tuning.study) that sleeps instead of training.

    Args:
        model, train, validation, params, max_length, seed, on_epoch, work_dir, save_to: as
            TrainModel's.
        epoch_s: seconds each epoch sleeps.
        stall_after: sleep for an hour after this epoch (to be killed or interrupted); 0: never.
        marks: a folder where `<pid>-trial-<n>` is touched as the n-th trial starts and
            `<pid>-epoch-<e>` after each epoch, so a test can tell how far a process got.

    Returns:
        save_to, holding a fake model.
    """
    if marks:
        Path(marks, f"{os.getpid()}-trial-{next(_started)}").touch()
    rng = np.random.default_rng(int(params["learning_rate"] * 1e12) % 2**32)
    for epoch in range(1, params["num_train_epochs"] + 1):
        time.sleep(epoch_s)
        on_epoch(epoch, epoch_probs(validation.labels, params, epoch, rng))
        if marks:
            Path(marks, f"{os.getpid()}-epoch-{epoch}").touch()
        if stall_after and epoch >= stall_after:
            time.sleep(3600)  # killed or interrupted in the middle of the trial
    save_to.mkdir(parents=True, exist_ok=True)
    (save_to / "config.json").write_text(json.dumps(params))
    (save_to / "model.safetensors").write_bytes(b"fake")
    return save_to


def reviews(n: int, name: str) -> Split:
    """`n` short reviews, labels alternating 0 and 1, ids `name/i`."""
    labels = np.arange(n) % 2
    texts = [f"{name} review {i}: {'great' if y else 'awful'} film" for i, y in enumerate(labels)]
    return Split(texts, labels, [f"{name}/{i}" for i in range(n)], name)
