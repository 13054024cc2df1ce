"""The four stages (baseline, pretrained, tune, final) and `run`, which chains them resumably."""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from storage import Run, RunSpec
from storage.records import Stage
from trainer.config import Config
from trainer.data import load_imdb
from trainer.errors import TrainerError
from trainer.metrics import evaluate
from trainer.splits import Dataset, Split, stratified_subset, train_validation

log = logging.getLogger(__name__)

CHANCE_WARNING = (
    "the classification head of {model} was newly initialised (the checkpoint has none), so this "
    "score is chance-level; fine-tune it with `python -m trainer tune`"
)


@dataclass
class Context:
    """What every stage shares: the resolved config, the store and the data (loaded once)."""

    config: Config
    store: object
    progress: bool = True
    _data: Dataset | None = None

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
    evaluation = evaluate(split.labels, probs, seed=ctx.config.seed)
    spec = replace(spec, duration_s=round(time.monotonic() - started, 3))
    run_id = ctx.store.save_run(spec, evaluation, split.predictions(probs))
    return ctx.store.get_run(run_id)


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
    started, test = time.monotonic(), ctx.test_subset()
    clf = transformer.load_classifier(c.model)
    probs = transformer.predict_proba(clf, test.texts, max_length=c.max_length,
                                      batch_size=c.batch_size, progress=ctx.progress)
    warnings = (CHANCE_WARNING.format(model=c.model),) if clf.new_head else ()
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
    key = c.fingerprint("data", "model", "study", "test_size", "max_length", "seed")
    key = f"{key}-t{best.number}"
    if (run := _done(ctx, Stage.FINETUNED, key)) is not None:
        return run
    started, test = time.monotonic(), ctx.test_subset()
    model_dir = _final_model(ctx, best, best_trial_artifact(ctx.store, c.study))
    clf = transformer.load_classifier(str(model_dir))
    probs = transformer.predict_proba(clf, test.texts, max_length=c.max_length,
                                      batch_size=c.batch_size, progress=ctx.progress)
    spec = RunSpec(stage=Stage.FINETUNED, model=c.model, split="test",
                   data_source=ctx.data.source,
                   config={**c.to_json(), "best_trial": best.number, "best_params": best.params,
                           "best_value": best.value},
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


def _final_model(ctx: Context, best, trial_dir: str | None) -> Path:
    """A copy of the best trial's saved model, or the model retrained with the best parameters."""
    from trainer.transformer import finetune
    from trainer.transformer import model as transformer
    from trainer.tuning.artifacts import study_dir_name

    target = _artifact_dir(ctx, f"{study_dir_name(ctx.config.study)}/final-t{best.number}")
    if (target / "config.json").exists():
        return target
    if trial_dir and Path(trial_dir, "config.json").exists():
        shutil.copytree(trial_dir, target, dirs_exist_ok=True)
        return target
    log.info("the best trial's model was not kept; retraining it with its parameters")
    train, validation = ctx.tuning_splits()
    c = ctx.config
    clf = finetune.fine_tune(transformer.resolve_model(c.model), train.texts, train.labels,
                             validation.texts, validation.labels, best.params,
                             max_length=c.max_length, output_dir=target / "work", seed=c.seed,
                             progress=ctx.progress)
    transformer.save_classifier(clf, target)
    shutil.rmtree(target / "work", ignore_errors=True)
    return target


def run_all(ctx: Context) -> list[Run]:
    """The main job: baseline → pretrained → tune → final; finished stages are not redone."""
    runs = [baseline(ctx)]
    ctx.config = for_transformers(ctx.config)
    runs.append(pretrained(ctx))
    if (n := remaining_trials(ctx)) > 0:
        tune(ctx, n)
    runs.append(final(ctx))
    return runs
