"""The stages (baseline, pretrained, tune, final, audit) and `run`, which chains them resumably."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from storage import Run, RunSpec, StorageError
from storage.records import Stage
from trainer.config import Config
from trainer.data import load_imdb
from trainer.errors import TrainerError
from trainer.metrics import evaluate
from trainer.splits import Dataset, Split, stratified_subset, train_validation

log = logging.getLogger(__name__)

CHANCE_WARNING = (
    "{model} has no sentiment head: a new one was initialised (seeded by --seed), so this score "
    "is chance-level by construction; the fine-tuned stage, which trains that head, is the one "
    "to judge"
)
UNSAVED = "unsaved"  # under the artifacts folder: finished runs whose saving gave up


@dataclass
class Context:
    """What every stage shares: the resolved config, the store and the data (loaded once).

    The config's lock_timeout bounds how long the store's writes wait for a locked or
    unreachable database.
    """

    config: Config
    store: object
    progress: bool = True
    _data: Dataset | None = None

    def __post_init__(self) -> None:
        self.store.lock_timeout_s = self.config.lock_timeout

    @property
    def data(self) -> Dataset:
        if self._data is None:
            self._data = load_imdb(self.config.data, progress=self.progress)
        return self._data

    def test_subset(self) -> Split:
        """The test reviews stages 2 and 4 score: the same stratified subset for both."""
        return stratified_subset(self.data.test, self.config.test_size, self.config.seed)

    def tuning_splits(self) -> tuple[Split, Split]:
        c = self.config
        return train_validation(self.data.train, c.train_size, c.eval_size, c.seed)


def for_transformers(config: Config) -> Config:
    """Fill unset sizes for the device the transformer stages will use."""
    from trainer.transformer.model import default_device

    return config.sized_for(default_device())


def _save(ctx: Context, spec: RunSpec, split: Split, probs, started: float) -> Run:
    spec = replace(spec, duration_s=round(time.monotonic() - started, 3))
    return _store_result(ctx, spec, split, probs)


def _store_result(ctx: Context, spec: RunSpec, split: Split, probs) -> Run:
    """Evaluate and store a finished stage; if the database stays out of reach, keep it on disk.

    Raises:
        TrainerError: the store gave up (after its bounded wait); the message says where the
            result is kept, and the same command run again stores it from there.
    """
    evaluation = evaluate(split.labels, probs, seed=ctx.config.seed)
    try:
        run_id = ctx.store.save_run(spec, evaluation, split.predictions(probs))
    except StorageError as e:
        kept = _keep_aside(ctx, spec, split, probs)
        raise TrainerError(
            f"{str(e).rstrip('.')}; the finished run is kept in {kept}, and the same command "
            "saves it from there without redoing the work (--lock-timeout N waits longer)"
        ) from e
    return ctx.store.get_run(run_id)


def _aside_path(ctx: Context, stage: str, key: str) -> Path:
    return Path(ctx.config.artifacts).resolve() / UNSAVED / f"{stage}-{key}.json"


def _keep_aside(ctx: Context, spec: RunSpec, split: Split, probs) -> Path:
    """Write what `_store_result` needs to store the run later: its spec and probabilities.

    JSON, never a pickle; the metrics are recomputed from the probabilities when it is loaded
    back (they are deterministic), the review ids check that it is the same split.
    """
    path = _aside_path(ctx, spec.stage, spec.config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = {"spec": asdict(spec), "split": split.name, "review_ids": list(split.ids),
            "probs": [float(p) for p in probs]}
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(kept, default=_plain), encoding="utf-8")
    partial.replace(path)  # never a half-written file under the name a later run reads
    return path


def _plain(value):
    """numpy scalars become Python numbers, anything else its string (as the store does)."""
    return value.item() if hasattr(value, "item") else str(value)


def _kept_aside(ctx: Context, stage: str, key: str, split: Split) -> Run | None:
    """Store the run a previous command kept on disk for this stage and settings, if any.

    Returns:
        The stored run, or None when nothing was kept (or what was kept is for other reviews).

    Raises:
        TrainerError: the store gave up again (the file stays where it is).
    """
    path = _aside_path(ctx, stage, key)
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        spec = RunSpec(**{**kept["spec"], "warnings": tuple(kept["spec"]["warnings"])})
        probs = np.asarray(kept["probs"], dtype=float)
        same = kept["review_ids"] == list(split.ids) and spec.stage == stage
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("%s: ignoring the unreadable kept result %s (%s)", stage, path, e)
        return None
    if not same:
        log.warning("%s: %s was kept for other reviews; ignoring it", stage, path)
        return None
    run = _store_result(ctx, spec, split, probs)
    path.unlink(missing_ok=True)
    log.info("%s: stored the result kept in %s (run %d), not redone", stage, path, run.id)
    return run


def _done(ctx: Context, stage: str, key: str) -> Run | None:
    run = ctx.store.find_run(stage, key)
    if run is not None:
        log.info("%s: already done with these settings (run %d), not redone", stage, run.id)
    return run


def _artifact_dir(ctx: Context, name: str) -> Path:
    path = Path(ctx.config.artifacts).resolve() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def baseline(ctx: Context) -> Run:
    """Stage 1: TF-IDF + logistic regression, trained on all of train and scored on all of test."""
    from trainer.baseline.io import save_baseline
    from trainer.baseline.model import train_baseline

    key = ctx.config.fingerprint("data", "seed")
    if (run := _done(ctx, Stage.BASELINE, key)) is not None:
        return run
    if (run := _kept_aside(ctx, Stage.BASELINE, key, ctx.data.test)) is not None:
        return run
    started, data = time.monotonic(), ctx.data
    model = train_baseline(data.train.texts, data.train.labels, seed=ctx.config.seed,
                           progress=ctx.progress)
    artifact = save_baseline(model, _artifact_dir(ctx, f"baseline-{key}"))
    probs = model.predict_proba(data.test.texts)
    spec = RunSpec(stage=Stage.BASELINE, model="tfidf-logreg", split="test",
                   data_source=data.source,
                   config={**ctx.config.to_json(), "baseline_params": model.params},
                   config_hash=key, artifact=str(artifact))
    return _save(ctx, spec, data.test, probs, started)


def pretrained(ctx: Context) -> Run:
    """Stage 2: the pretrained checkpoint scored on the test subset before any fine-tuning."""
    from trainer.transformer import model as transformer

    c = ctx.config
    key = c.fingerprint("data", "model", "test_size", "max_length", "seed")
    if (run := _done(ctx, Stage.PRETRAINED, key)) is not None:
        return run
    if (run := _kept_aside(ctx, Stage.PRETRAINED, key, ctx.test_subset())) is not None:
        return run
    started, test = time.monotonic(), ctx.test_subset()
    clf = transformer.load_classifier(c.model, seed=c.seed)
    probs = transformer.predict_proba(clf, test.texts, max_length=c.max_length,
                                      batch_size=c.batch_size, progress=ctx.progress)
    warnings = (CHANCE_WARNING.format(model=c.model),) if clf.new_head else ()
    warnings += transformer.label_warnings(clf, probs, test.labels)
    for w in warnings:
        log.warning(w)
    spec = RunSpec(stage=Stage.PRETRAINED, model=c.model, split="test",
                   data_source=ctx.data.source, config=c.to_json(), config_hash=key,
                   warnings=warnings, artifact=transformer.resolve_model(c.model))
    run = _save(ctx, spec, test, probs, started)
    transformer.free_memory()
    return run


def tune(ctx: Context, n_trials: int, *, join: bool = False):
    """Stage 3: run n_trials more trials of the study (join=True: the study must exist already)."""
    from trainer.tuning import study as tuning

    train, validation = ctx.tuning_splits()
    run_trials = tuning.work if join else tuning.tune
    return run_trials(ctx.config, train, validation, ctx.store, n_trials=n_trials,
                      progress=ctx.progress, data_source=ctx.data.source)


def remaining_trials(ctx: Context) -> int:
    """How many trials `run` still owes the study: --trials minus those already finished."""
    import optuna

    from trainer.tuning import study as tuning

    try:
        study = tuning.open_study(ctx.config, create=False)
    except TrainerError:
        return ctx.config.trials
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
              optuna.trial.TrialState.FAIL)
    return max(0, ctx.config.trials - len(study.get_trials(deepcopy=False, states=states)))


def final(ctx: Context) -> Run:
    """Stage 4: the study's best model scored once on the test subset."""
    from trainer.transformer import model as transformer
    from trainer.tuning import study as tuning
    from trainer.tuning.artifacts import best_trial_artifact

    c = ctx.config
    study = tuning.open_study(c, create=False)
    best = _best_trial(study)
    key = c.fingerprint("data", "model", "study", "test_size", "max_length", "seed",
                        "frozen_layers")
    size = final_size(c)
    key = f"{key}-t{best.number}" + (f"-n{size}" if size else "")
    if (run := _done(ctx, Stage.FINETUNED, key)) is not None:
        return run
    if (run := _kept_aside(ctx, Stage.FINETUNED, key, ctx.test_subset())) is not None:
        return run
    started, test = time.monotonic(), ctx.test_subset()
    model_dir = _final_model(ctx, best, best_trial_artifact(ctx.store, c.study), size)
    clf = transformer.load_classifier(str(model_dir))
    probs = transformer.predict_proba(clf, test.texts, max_length=c.max_length,
                                      batch_size=c.batch_size, progress=ctx.progress)
    spec = RunSpec(stage=Stage.FINETUNED, model=c.model, split="test",
                   data_source=ctx.data.source,
                   config={**c.to_json(), "best_trial": best.number, "best_params": best.params,
                           "best_value": best.value,
                           "trained_on": size or _trial_train_size(ctx), "device": _device()},
                   config_hash=key, study=c.study, artifact=str(model_dir))
    run = _save(ctx, spec, test, probs, started)
    transformer.free_memory()
    return run


def _best_trial(study):
    try:
        return study.best_trial
    except ValueError:
        raise TrainerError(
            f"study {study.study_name!r} has no completed trial yet; "
            "run `python -m trainer tune` first"
        ) from None


def final_size(config: Config) -> int | None:
    """How many reviews the final model is retrained on, or None: the best trial's own model.

    Only a final_train_size above the trials' train_size (multi-fidelity) asks for a retrain.
    """
    size, trials = config.final_train_size, config.train_size
    return size if size is not None and (trials is None or size > trials) else None


def _trial_train_size(ctx: Context) -> int:
    return ctx.config.train_size or len(ctx.tuning_splits()[0])


def _device() -> str:
    from trainer.transformer.model import default_device

    return default_device()


def _final_model(ctx: Context, best, trial_dir: str | None, size: int | None) -> Path:
    """The model the final stage scores: the best trial's parameters retrained on `size`
    reviews, or (size None) a copy of the best trial's saved model, retrained if it is gone."""
    from trainer.transformer import finetune
    from trainer.transformer import model as transformer
    from trainer.tuning.artifacts import study_dir_name

    name = f"final-t{best.number}" + (f"-n{size}" if size else "")
    target = _artifact_dir(ctx, f"{study_dir_name(ctx.config.study)}/{name}")
    if (target / "config.json").exists():
        return target
    c = ctx.config
    if size:
        log.info("final: retraining trial %d's parameters on %d training reviews", best.number,
                 size)
        train = train_validation(ctx.data.train, size, c.eval_size, c.seed)[0]
    elif trial_dir and Path(trial_dir, "config.json").exists():
        shutil.copytree(trial_dir, target, dirs_exist_ok=True)
        return target
    else:
        log.info("the best trial's model was not kept; retraining it with its parameters")
        train = ctx.tuning_splits()[0]
    # No validation pass: the final model was chosen by its trial and is scored on test only.
    clf = finetune.fine_tune(transformer.resolve_model(c.model), train.texts, train.labels,
                             [], [], best.params,
                             max_length=c.max_length, output_dir=target / "work", seed=c.seed,
                             progress=ctx.progress, frozen_layers=c.frozen_layers or 0)
    transformer.save_classifier(clf, target)
    shutil.rmtree(target / "work", ignore_errors=True)
    return target


def audit(ctx: Context):
    """The audit of the data and its stored runs; one done with the same fingerprint is reused.

    The fingerprint covers the data, the seed, the runs audited and the behaviour cases.

    Returns:
        The stored storage.records.Audit.
    """
    from trainer.audit.audit import run_audit

    c = ctx.config
    return run_audit(ctx.store, ctx.data, c, progress=ctx.progress, behaviour_file=c.behaviour,
                     trial=c.trial)


def run_all(ctx: Context) -> list[Run]:
    """The main job: baseline → pretrained → tune → final → audit; finished stages are not
    redone. Returns the three stages' runs (the audit is stored beside them)."""
    runs = [baseline(ctx)]
    ctx.config = for_transformers(ctx.config)
    runs.append(pretrained(ctx))
    if (n := remaining_trials(ctx)) > 0:
        tune(ctx, n)
    runs.append(final(ctx))
    audit(ctx)
    return runs
