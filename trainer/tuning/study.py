"""Stage 3: the Optuna study that fine-tunes a fresh transformer per trial, scored on validation.

The pruner, MedianPruner(n_startup_trials=2, n_warmup_steps=1), was chosen by measurement on
simulated fine-tuning curves (bench/results/README.md); a trial's last epoch is never pruned.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna

from storage.errors import StorageError
from trainer.config import Config
from trainer.errors import TrainerError, TrainingDiverged, TrialFailed
from trainer.splits import Split
from trainer.tuning.artifacts import KEEP_ARTIFACTS, keep_best_artifacts, study_dir_name
from trainer.tuning.space import resolve_space, suggest
from trainer.tuning.storage import optuna_storage
from trainer.tuning.trials import (
    EPOCH_METRICS,
    FAIL_REASON,
    WORKER,
    TrialRecord,
    log_trial,
    quiet_optuna,
    worker_name,
)

log = logging.getLogger(__name__)

CANNOT_TELL = "Cannot tell a FAIL trial"  # Optuna's words for a trial finished by someone else


class TrainModel(Protocol):
    """What a trial calls to train and save one model (`fine_tune_and_save` by default).

    It trains a fresh `model` on `train` with `params`, calls `on_epoch(epoch, validation
    positive-class probabilities)` after every epoch (epochs from 1; what on_epoch raises, such
    as optuna.TrialPruned, must propagate unchanged), may use `work_dir` (deleted afterwards)
    and saves the trained model into the folder `save_to`, whose path it returns. It frees
    what it holds before returning or raising. Raising trainer.errors.TrainingDiverged,
    MemoryError or an "out of memory" RuntimeError fails the trial and the
    study goes on; anything else stops the study.
    """

    def __call__(self, model: str, train: Split, validation: Split, params: dict[str, Any], *,
                 max_length: int, seed: int, on_epoch: Callable[[int, np.ndarray], None],
                 work_dir: str, save_to: Path) -> Path: ...


def fine_tune_and_save(model: str, train: Split, validation: Split, params: dict[str, Any], *,
                       max_length: int, seed: int, on_epoch: Callable[[int, np.ndarray], None],
                       work_dir: str, save_to: Path, progress: bool = False,
                       frozen_layers: int = 0) -> Path:
    """The default TrainModel: trainer.transformer.finetune.fine_tune, then save the classifier.

    Args:
        model: hub id, local directory or OFFLINE_MODELS name (config.model).
        train: the reviews to fine-tune on.
        validation: the reviews scored after every epoch.
        params: the trial's fine-tuning parameters.
        max_length: tokens kept per review.
        seed: seeds the head's initialisation, shuffling and dropout.
        on_epoch: the trial's per-epoch scorer.
        work_dir: the Trainer's working directory.
        save_to: where the trained classifier is saved.
        progress: show the training steps as a bar.
        frozen_layers: the lowest layers kept as pretrained (config.frozen_layers).

    Returns:
        The saved model folder.

    Raises:
        ModelError: the model cannot be loaded or saved.
        TrainingDiverged: the loss became NaN or infinite.
    """
    from trainer.transformer import finetune
    from trainer.transformer import model as transformer

    try:
        clf = finetune.fine_tune(
            transformer.resolve_model(model), train.texts, train.labels, validation.texts,
            validation.labels, params, max_length=max_length, output_dir=work_dir, seed=seed,
            on_epoch=on_epoch, progress=progress, frozen_layers=frozen_layers,
        )
        return transformer.save_classifier(clf, save_to)
    finally:
        clf = None  # the model's memory is freed now, not at the next trial
        transformer.free_memory()


def make_pruner() -> optuna.pruners.BasePruner:
    """The pruner a process uses unless given one (chosen by measurement, see the module doc)."""
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def open_study(config: Config, *, create: bool, seed: int | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Open (or create) the study `config.study` in the database `config.db`.

    Args:
        config: names the database, the study, the heartbeat and the seed.
        create: create the study when it is missing; False: it must exist.
        seed: the TPE sampler's seed; by default config.seed plus the number of trials the study
            already has, so a resumed study draws new parameters rather than the first ones again.
        pruner: this process's pruner (Optuna keeps none in the database); make_pruner() if None.

    Returns:
        The study (direction maximize: validation accuracy).

    Raises:
        TrainerError: create is False and the study does not exist.
        StorageError: the database cannot be opened.
    """
    storage = optuna_storage(config.db, config.heartbeat, lock_timeout_s=config.lock_timeout)
    name = config.study
    try:
        existing = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    except KeyError:
        if not create:
            raise TrainerError(_missing_study(name, storage.url)) from None
        existing = []
    if seed is None:
        seed = config.seed + len(existing)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    with quiet_optuna():  # not "A new study created" / "Using an existing study" every time
        return optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                   pruner=pruner if pruner is not None else make_pruner(),
                                   direction="maximize",
                                   load_if_exists=True)


def _missing_study(name: str, url: str) -> str:
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    return (f"there is no study {name!r} in {shown}; create it with `python -m trainer tune "
            f"--study NAME` (same --db) before starting workers")


def tune(config: Config, train: Split, validation: Split, store: Any, *, n_trials: int,
         progress: bool = True, data_source: str | None = None,
         train_model: TrainModel | None = None,
         pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create or resume the study and run `n_trials` more trials in this process.

    Args:
        config: database, study, model, sizes, seed, artifacts folder, heartbeat, search space.
        train: the reviews each trial fine-tunes on.
        validation: the reviews each trial is scored on (never the test split).
        store: our Store on the same database; each trial's runs are written there.
        n_trials: how many trials to add.
        progress: show a bar over the trials (the current trial, its epoch and the best value)
            and a line per epoch.
        data_source: where the reviews came from (stored with the runs); config.data if None.
        train_model: trains and saves one trial's model (see TrainModel); None:
            fine_tune_and_save, once config.model is known to exist.
        pruner: this process's pruner; make_pruner() if None.

    Returns:
        The study.

    Raises:
        ConfigError: the search space is malformed.
        ModelError: train_model is None and config.model cannot be found.
        KeyboardInterrupt: Ctrl-C; the running trial is stored as FAIL, finished ones stay.
    """
    resolve_space(config.search_space)
    study = open_study(config, create=True, pruner=pruner)
    return _optimize(study, config, train, validation, store, n_trials, progress,
                     data_source, train_model)


def work(config: Config, train: Split, validation: Split, store: Any, *, n_trials: int,
         progress: bool = True, data_source: str | None = None,
         train_model: TrainModel | None = None,
         pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Join an existing study as one more worker (any process or machine) and run `n_trials`.

    Its sampler is seeded from the clock and process id: workers seeded alike would all draw
    the same parameters.

    Args:
        config, train, validation, store, n_trials, progress, data_source, train_model, pruner:
            as for `tune`.

    Returns:
        The study.

    Raises:
        TrainerError: the study does not exist yet.
    """
    resolve_space(config.search_space)
    study = open_study(config, create=False, seed=_worker_seed(), pruner=pruner)
    return _optimize(study, config, train, validation, store, n_trials, progress,
                     data_source, train_model)


def _worker_seed() -> int:
    entropy = f"{time.time_ns()}-{os.getpid()}".encode()
    return int.from_bytes(hashlib.sha256(entropy).digest()[:4], "big")


def _optimize(study: optuna.Study, config: Config, train: Split, validation: Split, store: Any,
              n_trials: int, progress: bool, data_source: str | None,
              train_model: TrainModel | None) -> optuna.Study:
    if config.max_length is None:
        from trainer.transformer import model as transformer

        config = config.sized_for(transformer.default_device())
    if train_model is None:
        _check_model(config.model)
        train_model = functools.partial(fine_tune_and_save, progress=progress,
                                        frozen_layers=config.frozen_layers or 0)
    bar = TrialsBar(n_trials, enabled=progress)
    objective = _Objective(config, train, validation, store, data_source or config.data,
                           train_model, bar)
    with bar:
        _run_trials(study, objective, n_trials, bar)
    return study


def _run_trials(study: optuna.Study, objective: _Objective, n_trials: int,
                bar: TrialsBar) -> None:
    while objective.calls < n_trials:
        try:
            with quiet_optuna(), _storage_errors_first():
                study.optimize(objective, n_trials=n_trials - objective.calls,
                               catch=(TrialFailed,),
                               callbacks=[keep_best_artifacts(objective.artifacts,
                                                              KEEP_ARTIFACTS), log_trial, bar])
        except ValueError as e:  # "Cannot tell a FAIL trial": it was reaped while running
            if not str(e).startswith(CANNOT_TELL) or not _reaped_meanwhile(study,
                                                                           objective.last):
                raise
            log.warning("trial %d: failed by another worker while it ran (its heartbeat came "
                        "too late); going on with the next trial", objective.last)
        else:
            break


def _reaped_meanwhile(study: optuna.Study, number: int | None) -> bool:
    """Whether the trial this process was running has been failed by another process."""
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return number is not None and any(t.number == number for t in failed)


@contextlib.contextmanager
def _storage_errors_first() -> Iterator[None]:
    """The first StorageError behind what optimize raised is raised instead: one clear line.

    When the database is out of reach Optuna's own clean-up after the trial fails too, and
    what escapes it (a later StorageError, even an UnboundLocalError from its `finally`) only
    hides the first failure.
    """
    try:
        yield
    except Exception as e:
        causes = [link for link in _chain(e) if isinstance(link, StorageError)]
        if not causes or causes[-1] is e:
            raise
        raise causes[-1]  # keeps its own cause, the driver's error, for --debug


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _check_model(name: str) -> None:
    """A bad --model fails here in one line, not as a FAIL trial with Optuna's traceback."""
    from trainer.transformer import model as transformer

    transformer.check_location(transformer.resolve_model(name))


class TrialsBar:
    """The tune stage's progress: a "trials" bar whose postfix shows the running trial, its
    epoch and the best value so far, and a log line per epoch (an Optuna callback too)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled)
        self.best: float | None = None

    def __enter__(self) -> TrialsBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()

    def started(self, trial: int, epochs: int) -> None:
        self._show(f"trial {trial}", f"epoch 0/{epochs}")

    def epoch(self, trial: int, epoch: int, epochs: int, accuracy: float) -> None:
        """After an epoch was scored on validation: a line, and the bar's postfix."""
        if self.enabled:
            log.info("trial %d, epoch %d/%d: validation accuracy %.4f", trial, epoch, epochs,
                     accuracy)
        self._show(f"trial {trial}", f"epoch {epoch}/{epochs}", f"accuracy {accuracy:.4f}")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with contextlib.suppress(ValueError):  # no complete trial yet
            self.best = study.best_value
        self.bar.update(1)
        self._show(f"trial {trial.number} {trial.state.name.lower()}")

    def _show(self, *parts: str) -> None:
        best = () if self.best is None else (f"best {self.best:.4f}",)
        self.bar.set_postfix_str(", ".join((*parts, *best)))


# --- one trial -----------------------------------------------------------------------------


@dataclass
class _Objective:
    """Train a fresh model with the trial's parameters; the value is validation accuracy."""

    config: Config
    train: Split
    validation: Split
    store: Any
    data_source: str
    train_model: TrainModel
    bar: TrialsBar
    artifacts: Path = field(init=False)
    calls: int = 0  # trials started by this process
    last: int | None = None  # the number of the trial it started last

    def __post_init__(self) -> None:
        self.artifacts = Path(self.config.artifacts).resolve() / study_dir_name(self.config.study)

    def __call__(self, trial: optuna.Trial) -> float:
        self.calls, self.last = self.calls + 1, trial.number
        try:
            return self._train(self._record(trial))
        except optuna.TrialPruned:
            raise
        except optuna.exceptions.UpdateFinishedTrialError as e:  # it says why (REAPED)
            raise TrialFailed(f"trial {trial.number} was failed by another worker") from e
        except KeyboardInterrupt:
            _set_fail_reason(trial, "interrupted (Ctrl-C) while training")
            raise
        except StorageError as e:  # waited out already: the worker stops, with this line
            _set_fail_reason(trial, f"storage: {_one_line(e)}")
            raise
        except Exception as e:
            reason = _failure_reason(e)
            if reason is None:  # a bug: the study stops, but the trial still says why
                _set_fail_reason(trial, f"error: {type(e).__name__}: {_one_line(e)}")
                raise
            _set_fail_reason(trial, reason)
            raise TrialFailed(f"trial {trial.number} failed: {reason}") from e

    def _record(self, trial: optuna.Trial) -> TrialRecord:
        params = suggest(trial, self.config.search_space)
        trial.set_user_attr(EPOCH_METRICS, [])  # a retried trial inherits its original's attrs
        trial.set_user_attr(WORKER, worker_name())  # the dashboard's timeline, per worker
        return TrialRecord(self.config, self.validation, self.store, self.data_source, trial,
                           params)

    def _train(self, record: TrialRecord) -> float:
        c = self.config
        self.bar.started(record.trial.number, record.params["num_train_epochs"])
        with tempfile.TemporaryDirectory(prefix="sentiment-trial-",
                                         ignore_cleanup_errors=True) as work_dir:
            saved = self.train_model(
                c.model, self.train, self.validation, record.params, max_length=c.max_length,
                seed=c.seed, on_epoch=self._on_epoch(record), work_dir=work_dir,
                save_to=self.artifacts / f"trial-{record.trial.number}",
            )
        if record.last is None:
            shutil.rmtree(saved, ignore_errors=True)
            raise TrainerError("training ended without a validation pass; nothing to score")
        record.save(artifact=str(Path(saved).resolve()))
        return record.accuracy

    def _on_epoch(self, record: TrialRecord) -> Callable[[int, np.ndarray], None]:
        """record.on_epoch, then the epoch shown, pruned or not."""
        def on_epoch(epoch: int, probs: np.ndarray) -> None:
            try:
                record.on_epoch(epoch, probs)
            finally:
                if record.last is not None and record.last[0] == epoch:
                    self.bar.epoch(record.trial.number, epoch,
                                   record.params["num_train_epochs"], record.accuracy)

        return on_epoch


def _failure_reason(error: Exception) -> str | None:
    """Why a trial failed, when it is a failure the study should survive; None otherwise."""
    text = _one_line(error)
    if isinstance(error, TrainingDiverged):
        return f"training diverged: {text}"
    oom = ("out of memory", "can't allocate memory", "cannot allocate memory")
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and any(s in text.lower() for s in oom)
    ):
        return f"out of memory: {text or type(error).__name__}"
    return None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _set_fail_reason(trial: optuna.Trial, reason: str) -> None:
    try:
        trial.set_user_attr(FAIL_REASON, reason)
    except StorageError:  # the database is what failed; a heartbeat reaper will say so
        log.warning("could not store why trial %d failed: the database is out of reach",
                    trial.number)
    except optuna.exceptions.OptunaError as e:
        log.warning("could not store why trial %d failed (%s): %s", trial.number, reason, e)
