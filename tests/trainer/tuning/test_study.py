"""Stage 3: the Optuna study stores every trial's validation run, resumes, prunes and survives."""
from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from storage.store import open_store
from trainer.config import Config
from trainer.errors import ConfigError, ModelError, TrainerError, TrainingDiverged
from trainer.report import study_entries
from trainer.splits import Split
from trainer.tuning import artifacts
from trainer.tuning import space as search_space
from trainer.tuning import storage as tuning_storage
from trainer.tuning import study as tuning
from trainer.tuning.trials import EPOCH_METRICS, FAIL_REASON, WORKER, log_trial, worker_name

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "weak"]
FAST_SPACE = {"num_train_epochs": {"low": 1, "high": 2},
              "per_device_train_batch_size": {"choices": [16]}}


def reviews(n: int, name: str, offset: int = 0) -> Split:
    """`n` short synthetic reviews, alternating negative/positive."""
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        first, second = words[i % 6], words[(i + 1) % 6]
        texts.append(f"review {i + offset}: the film was {first}, the cast {second}")
        labels.append(label)
    return Split(texts, np.array(labels), [f"{name}/{i + offset}" for i in range(n)], name)


TRAIN, VALIDATION = reviews(32, "train"), reviews(16, "validation", offset=100)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def store_for() -> Iterator[Callable[[str], Any]]:
    opened = []

    def open_(db: str) -> Any:
        opened.append(open_store(db))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def make_config(db: str, tmp_path: Path, model: str = "unused", **overrides: Any) -> Config:
    values = {"db": db, "model": model, "study": "movies", "max_length": 32, "seed": 0,
              "artifacts": str(tmp_path / "artifacts"), "search_space": FAST_SPACE}
    return Config(**{**values, **overrides})


class FakeTraining:
    """Instant "training" (a TrainModel): a share of validation reviews right that grows with lr
    and epochs, and a two-file model folder; every call's arguments are kept."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, model: str, train: Split, validation: Split, params: dict[str, Any], *,
                 max_length: int, seed: int, on_epoch: Callable[[int, np.ndarray], None],
                 work_dir: str, save_to: Path) -> Path:
        self.calls.append({"model": model, "train": train, "validation": validation,
                           "params": dict(params), "max_length": max_length, "seed": seed,
                           "work_dir_existed": Path(work_dir).is_dir(), "save_to": save_to})
        labels = np.asarray(validation.labels)
        epochs = params["num_train_epochs"]
        skill = min(0.5, params["learning_rate"] * 5000)
        for epoch in range(1, epochs + 1):
            right = round(len(labels) * (0.5 + skill * epoch / epochs))
            hit = np.arange(len(labels)) < right
            on_epoch(epoch, np.where(hit == (labels == 1), 0.8, 0.2))
        save_to.mkdir(parents=True, exist_ok=True)
        (save_to / "config.json").write_text(json.dumps(params))
        (save_to / "model.safetensors").write_bytes(b"fake")
        return save_to


def run_tune(config: Config, store: Any, n_trials: int, *, train_model: Any = None,
             pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """tune with instant training and, unless told otherwise, no pruning: each test decides."""
    return tuning.tune(config, TRAIN, VALIDATION, store, n_trials=n_trials, progress=False,
                       train_model=train_model or FakeTraining(),
                       pruner=pruner or optuna.pruners.NopPruner())


def trial_dirs(config: Config) -> set[str]:
    root = Path(config.artifacts) / artifacts.study_dir_name(config.study)
    return {p.name for p in root.iterdir()} if root.exists() else set()


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_three_trial_study_stores_validation_runs_with_predictions(
    file_db_url: str, tmp_path: Path, tiny_model_dir: str, store_for: Callable[[str], Any]
) -> None:
    config = make_config(file_db_url, tmp_path, model=tiny_model_dir)
    store = store_for(file_db_url)
    study = tuning.tune(config, TRAIN, VALIDATION, store, n_trials=3, progress=False)

    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    runs = store.trial_runs(config.study)
    assert sorted(runs) == [0, 1, 2]
    for t in trials:
        run = runs[t.number]
        spec = run.spec
        assert (spec.stage, spec.split, spec.study) == ("trial", "validation", "movies")
        assert run.evaluation.n == len(VALIDATION)
        assert {"accuracy", "loss", "roc_auc"} <= set(run.evaluation.scalars)
        assert run.spec.config["params"] == t.params
        assert run.spec.config["epoch"] == max(t.intermediate_values)
        last_epoch = run.spec.config["epoch"]
        assert run.evaluation.scalars["accuracy"] == t.intermediate_values[last_epoch]
        epochs = t.user_attrs[EPOCH_METRICS]
        assert t.user_attrs[WORKER] == worker_name()  # the dashboard's timeline rows
        assert [e["epoch"] for e in epochs] == sorted(t.intermediate_values)
        assert all("loss" in e and "roc_auc" in e for e in epochs)
        predictions = store.predictions(run.id)
        assert list(predictions["review_id"]) == list(VALIDATION.ids)
        assert list(predictions["text"]) == list(VALIDATION.texts)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, "the first trials are never pruned"
    best = study.best_trial
    artifact = artifacts.best_trial_artifact(store, config.study)
    assert artifact == runs[best.number].spec.artifact
    assert any(p.suffix == ".safetensors" for p in Path(artifact).iterdir())
    assert len(trial_dirs(config)) == min(len(complete), artifacts.KEEP_ARTIFACTS)


def test_resuming_adds_trials_with_contiguous_numbers_and_no_duplicates(
    file_db_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(file_db_url, tmp_path)
    store = store_for(file_db_url)
    training = FakeTraining()
    for _ in range(3):
        study = run_tune(config, store, 2, train_model=training)

    numbers = [t.number for t in study.get_trials(deepcopy=False)]
    assert numbers == list(range(6))
    rows = store.list_runs(stage="trial", study=config.study)
    assert sorted(r.spec.trial for r in rows) == numbers
    lrs = [t.params["learning_rate"] for t in study.get_trials(deepcopy=False)]
    assert len(set(lrs)) == len(lrs), "a resumed study must not redraw the first parameters"
    assert len(training.calls) == 6


def test_ctrl_c_leaves_no_running_trial_and_resume_goes_on(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, search_space={
        **FAST_SPACE, "num_train_epochs": {"low": 2, "high": 2}})
    store = store_for(sqlite_url)
    calls = {"n": 0}

    def interrupted_in_second_epoch(*args: Any, on_epoch: Any, **kwargs: Any) -> Any:
        calls["n"] += 1

        def epoch_then_stop(epoch: int, probs: np.ndarray) -> None:
            on_epoch(epoch, probs)
            if calls["n"] % 2 == 0 and epoch == 1:
                raise KeyboardInterrupt

        return FakeTraining()(*args, on_epoch=epoch_then_stop, **kwargs)

    for _ in range(5):  # each session: one trial finishes, the next is interrupted
        with pytest.raises(KeyboardInterrupt):
            run_tune(config, store, 3, train_model=interrupted_in_second_epoch)

    study = tuning.open_study(config, create=False)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(10))
    assert states(study) == [TrialState.COMPLETE, TrialState.FAIL] * 5
    assert all("interrupted" in t.user_attrs[FAIL_REASON] for t in trials[1::2])
    rows = store.list_runs(stage="trial", study=config.study)
    assert sorted(r.spec.trial for r in rows) == list(range(10))  # one row each, none twice
    assert all(r.spec.config["epoch"] == 1 for r in rows if r.spec.trial % 2)


def test_search_space_overrides_are_respected(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    space = {"learning_rate": {"low": 2e-5, "high": 3e-5, "log": True},
             "num_train_epochs": {"low": 2, "high": 2},
             "per_device_train_batch_size": {"choices": [4, 12]},
             "weight_decay": {"choices": [0.03]}}
    config = make_config(sqlite_url, tmp_path, search_space=space)
    study = run_tune(config, store_for(sqlite_url), 4)

    for t in study.get_trials(deepcopy=False):
        assert 2e-5 <= t.params["learning_rate"] <= 3e-5
        assert t.params["num_train_epochs"] == 2
        assert t.params["per_device_train_batch_size"] in (4, 12)
        assert t.params["weight_decay"] == 0.03
        assert 0.0 <= t.params["warmup_ratio"] <= 0.2  # the default range stays


@pytest.mark.parametrize(("space", "words"), [
    ({"dropout": {"low": 0, "high": 1}}, "unknown fine-tuning parameters ['dropout']"),
    ({"learning_rate": {"low": 1e-3, "high": 1e-5}}, "above high"),
    ({"learning_rate": {"low": 0, "high": 1e-5}}, "learning_rate must be a number in (0, 1]"),
    ({"warmup_ratio": {"choices": [0.1, 1.0]}}, "warmup_ratio must be a number in [0, 1)"),
    ({"warmup_ratio": {"low": 0.0, "high": 0.1, "log": True}}, "low above 0"),
    ({"num_train_epochs": {"low": 1.5, "high": 3}}, "whole number"),
    ({"per_device_train_batch_size": {"choices": []}}, "no choices"),
    ({"per_device_train_batch_size": {"choices": [True]}}, "whole number"),
    ({"weight_decay": 0.1}, "must be a table"),
    ({"weight_decay": {"low": 0, "hi": 1}}, "must be like"),
])
def test_malformed_search_space_is_refused(space: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        search_space.resolve_space(space)


def test_a_malformed_search_space_stops_tune_before_any_trial(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, search_space={"dropout": {"low": 0, "high": 1}})
    with pytest.raises(ConfigError, match="unknown fine-tuning parameters"):
        run_tune(config, store_for(sqlite_url), 1)
    assert optuna.get_all_study_names(sqlite_url) == []


def test_diverged_or_out_of_memory_trial_fails_with_reason_and_study_goes_on(
    file_db_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    failures = {1: TrainingDiverged("the training loss became nan at step 3"),
                2: RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                3: MemoryError()}
    calls = {"n": 0}

    def sometimes_failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] - 1 in failures:
            raise failures[calls["n"] - 1]
        return FakeTraining()(*args, **kwargs)

    config = make_config(file_db_url, tmp_path)
    store = store_for(file_db_url)
    study = run_tune(config, store, 5, train_model=sometimes_failing)

    trials = study.get_trials(deepcopy=False)
    assert states(study)[1:4] == [TrialState.FAIL] * 3
    assert TrialState.FAIL not in (states(study)[0], states(study)[4])
    reasons = [trials[n].user_attrs[FAIL_REASON] for n in (1, 2, 3)]
    assert reasons[0].startswith("training diverged: the training loss became nan")
    assert reasons[1].startswith("out of memory: CUDA out of memory")
    assert reasons[2].startswith("out of memory")
    assert sorted(store.trial_runs(config.study)) == [0, 4]


def test_each_trial_ends_in_one_short_line_instead_of_optunas_info_lines(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str]
) -> None:
    def second_diverges(*args: Any, **kwargs: Any) -> Any:
        if len(calls) == 1:
            calls.append(1)
            raise TrainingDiverged("the training loss became nan at step 3")
        calls.append(1)
        return FakeTraining()(*args, **kwargs)

    calls: list[int] = []
    caplog.set_level("INFO", logger="trainer.tuning.trials")
    verbosity = optuna.logging.get_verbosity()
    run_tune(make_config(sqlite_url, tmp_path), store_for(sqlite_url), 3,
             train_model=second_diverges)

    lines = [r.getMessage() for r in caplog.records if r.name == "trainer.tuning.trials"]
    assert [line.split(":")[0] for line in lines] == ["trial 0", "trial 1", "trial 2"]
    assert lines[0].startswith("trial 0: accuracy ") and "(best: trial 0, " in lines[0]
    assert "learning_rate=" in lines[0] and len(lines[0]) < 200
    assert lines[1].startswith("trial 1: failed (training diverged: the training loss")
    err = capfd.readouterr().err
    assert "A new study created" not in err and "finished with value" not in err
    assert optuna.logging.get_verbosity() == verbosity


def test_a_pruned_trial_is_logged_with_its_last_epoch(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study(direction="maximize")
    trial = optuna.trial.create_trial(state=TrialState.PRUNED, params={"learning_rate": 3e-5},
                                      distributions={"learning_rate": optuna.distributions
                                                     .FloatDistribution(1e-6, 1e-3)},
                                      intermediate_values={1: 0.61, 2: 0.46})
    study.add_trial(trial)
    caplog.set_level("INFO", logger="trainer.tuning.trials")
    log_trial(study, study.trials[0])
    line = "trial 0: pruned after epoch 2 at accuracy 0.4600; learning_rate=3e-05"
    assert caplog.messages == [line]


def test_an_unexpected_error_stops_the_study_and_is_not_hidden(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug")

    config = make_config(sqlite_url, tmp_path)
    with pytest.raises(ValueError, match="a bug"):
        run_tune(config, store_for(sqlite_url), 3, train_model=broken)
    (trial,) = tuning.open_study(config, create=False).get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[FAIL_REASON] == "error: ValueError: a bug"  # every FAIL says why


def test_a_trial_reaped_while_its_worker_still_runs_fails_and_the_study_goes_on(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path)
    reaper = tuning_storage.optuna_storage(sqlite_url, 0)
    training = FakeTraining()

    def late_heartbeat(*args: Any, save_to: Path, **kwargs: Any) -> Path:
        number = int(save_to.name.split("-")[1])
        if number == 0:  # another worker found its heartbeat stale and failed it
            trial_id = reaper.get_trial_id_from_study_id_trial_number(
                reaper.get_study_id_from_name(config.study), number)
            assert reaper.set_trial_state_values(trial_id, TrialState.FAIL)
            reaper.set_fail_reason_of_finished(config.study, number, tuning_storage.REAPED)
        return training(*args, save_to=save_to, **kwargs)

    study = run_tune(config, store_for(sqlite_url), 2, train_model=late_heartbeat)
    first, second = study.get_trials(deepcopy=False)
    assert (first.state, first.user_attrs[FAIL_REASON]) == (TrialState.FAIL,
                                                            tuning_storage.REAPED)
    assert second.state == TrialState.COMPLETE
    reaper.engine.dispose()


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_pruned_trials_keep_their_rows(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, search_space={
        **FAST_SPACE, "num_train_epochs": {"low": 3, "high": 3}})
    store = store_for(sqlite_url)
    study = run_tune(config, store, 3, pruner=AlwaysPrune())

    assert states(study) == [TrialState.PRUNED] * 3
    assert all(list(t.intermediate_values) == [1] for t in study.get_trials(deepcopy=False))
    runs = store.trial_runs(config.study)
    assert sorted(runs) == [0, 1, 2]
    assert all(r.spec.config["epoch"] == 1 and r.spec.artifact is None for r in runs.values())
    assert trial_dirs(config) == set()
    assert artifacts.best_trial_artifact(store, config.study) is None


def test_the_last_epoch_is_never_pruned(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, search_space={
        **FAST_SPACE, "num_train_epochs": {"low": 1, "high": 1}})
    study = run_tune(config, store_for(sqlite_url), 2, pruner=AlwaysPrune())
    assert states(study) == [TrialState.COMPLETE] * 2


def test_only_the_best_two_trials_keep_their_model(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, search_space={
        **FAST_SPACE, "learning_rate": {"low": 1e-6, "high": 1e-4, "log": True}})
    store = store_for(sqlite_url)
    study = run_tune(config, store, 6)

    ranked = sorted(study.get_trials(deepcopy=False), key=lambda t: (-t.value, t.number))
    assert trial_dirs(config) == {f"trial-{t.number}" for t in ranked[:2]}
    best = artifacts.best_trial_artifact(store, config.study)
    assert best is not None and Path(best).name == f"trial-{study.best_trial.number}"


def test_the_training_function_gets_the_trial_s_data_params_and_folders(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, model="some/model", seed=7)
    training = FakeTraining()
    study = run_tune(config, store_for(sqlite_url), 2, train_model=training)

    root = (tmp_path / "artifacts").resolve() / artifacts.study_dir_name(config.study)
    for call, trial in zip(training.calls, study.get_trials(deepcopy=False), strict=True):
        assert (call["model"], call["max_length"], call["seed"]) == ("some/model", 32, 7)
        assert call["train"] is TRAIN and call["validation"] is VALIDATION
        assert call["params"] == trial.params
        assert call["work_dir_existed"]
        assert call["save_to"] == root / f"trial-{trial.number}"
    runs = store_for(sqlite_url).trial_runs(config.study)
    assert runs[0].spec.artifact == str(root / "trial-0")


def test_training_that_never_scores_validation_stops_the_study_and_keeps_no_model(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    def silent(*args: Any, save_to: Path, **kwargs: Any) -> Path:
        save_to.mkdir(parents=True)
        return save_to

    config = make_config(sqlite_url, tmp_path)
    with pytest.raises(TrainerError, match="without a validation pass"):
        run_tune(config, store_for(sqlite_url), 2, train_model=silent)
    assert trial_dirs(config) == set()


def test_the_given_pruner_is_used_and_median_pruning_is_the_default(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = make_config(sqlite_url, tmp_path)
    given = AlwaysPrune()
    assert tuning.open_study(config, create=True, pruner=given).pruner is given
    default = tuning.open_study(config, create=False).pruner
    assert isinstance(default, optuna.pruners.MedianPruner)
    assert (default._n_startup_trials, default._n_warmup_steps) == (2, 1)


def test_the_default_training_checks_the_model_before_any_trial(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, model=str(tmp_path / "no-such-model"))
    with pytest.raises(ModelError, match="does not exist"):
        tuning.tune(config, TRAIN, VALIDATION, store_for(sqlite_url), n_trials=1,
                    progress=False)
    assert tuning.open_study(config, create=False).get_trials(deepcopy=False) == []


HOSTILE_NAMES = ["'; DROP TABLE trials;--", "../x", "..", "a/b\\c:d", "名前 🎬 \u202eevil"]


def test_hostile_study_names_are_plain_names(
    file_db_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    store = store_for(file_db_url)
    for name in HOSTILE_NAMES:
        run_tune(make_config(file_db_url, tmp_path, study=name), store, 1)

    assert sorted(optuna.get_all_study_names(file_db_url)) == sorted(HOSTILE_NAMES)
    for name in HOSTILE_NAMES:
        assert sorted(store.trial_runs(name)) == [0]
        assert Path(artifacts.best_trial_artifact(store, name)).name == "trial-0"
    assert sorted(e["name"] for e in study_entries(file_db_url)) == sorted(HOSTILE_NAMES)
    (entry,) = study_entries(file_db_url, HOSTILE_NAMES[0])
    study = optuna.load_study(study_name=HOSTILE_NAMES[0], storage=file_db_url)
    assert entry == {"name": HOSTILE_NAMES[0], "best_value": study.best_value,
                     "trials": {"complete": 1, "pruned": 0, "failed": 0, "running": 0},
                     "best_trial": 0, "best_params": study.best_params}
    root = (tmp_path / "artifacts").resolve()
    folders = list(root.iterdir())
    assert len(folders) == len(HOSTILE_NAMES) and all(p.parent == root for p in folders)
    assert [p.name for p in root.rglob("trial-*")] == ["trial-0"] * len(HOSTILE_NAMES)


def test_a_600_character_study_name_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="600 characters; use at most 200"):
        make_config(f"sqlite:///{tmp_path / 'runs.db'}", tmp_path, study="s" * 600)


def test_study_dir_names_stay_inside_and_differ_per_name() -> None:
    names = ["../x", "..", ".", "", "/", "x", "X", "a b", "a-b", "s" * 200]
    dirs = [artifacts.study_dir_name(n) for n in names]
    assert len(set(dirs)) == len(dirs)
    for d in dirs:
        assert d not in (".", "..") and "/" not in d and "\\" not in d and len(d) <= 60
        assert d[0].isalnum()


def test_a_worker_needs_an_existing_study(
    sqlite_url: str, tmp_path: Path, store_for: Callable[[str], Any]
) -> None:
    config = make_config(sqlite_url, tmp_path, study="nobody-made-me")
    training = FakeTraining()
    with pytest.raises(TrainerError, match="no study 'nobody-made-me'.*python -m trainer tune"):
        tuning.work(config, TRAIN, VALIDATION, store_for(sqlite_url), n_trials=1,
                    train_model=training)
    assert training.calls == []

    tuning.open_study(config, create=True)
    study = tuning.work(config, TRAIN, VALIDATION, store_for(sqlite_url), n_trials=2,
                        progress=False, train_model=training,
                        pruner=optuna.pruners.NopPruner())
    assert states(study) == [TrialState.COMPLETE] * 2
    assert len(training.calls) == 2


def test_an_in_memory_database_cannot_hold_a_study(tmp_path: Path) -> None:
    config = make_config("sqlite://", tmp_path)
    with pytest.raises(ConfigError, match="in memory"):
        tuning.open_study(config, create=True)


def test_storage_heartbeat_and_retry_of_stale_trials_are_configured(tmp_path: Path) -> None:
    path = tmp_path / "new" / "runs.db"
    storage = tuning_storage.optuna_storage(f"sqlite:///{path}", heartbeat=7)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert storage.heartbeat_interval == 7
    assert storage.grace_period >= 14
    assert storage.heartbeat_stale_trial_callback._max_retry == 1
    off = tuning_storage.optuna_storage(f"sqlite:///{path}", heartbeat=0)
    assert off.heartbeat_interval is None and off.heartbeat_stale_trial_callback is None
