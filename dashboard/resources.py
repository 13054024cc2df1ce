"""Cached access to the database, the Optuna studies and the models, shared by every page."""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import optuna
import pandas as pd
import streamlit as st
from optuna.trial import FrozenTrial, TrialState

from dashboard import settings, study_views
from storage.records import Audit, Run
from storage.store import NotFilledError, Store, open_store

EVALUATORS = ("PED-ANOVA", "fANOVA", "mean decrease impurity")
# Small, shallow forests: Optuna's default fANOVA (64 trees, depth 64) takes 16 s on 700 trials
# on 2 cores, 16 trees of depth 6 take 0.2 s and rank the parameters the same way.
FOREST_TREES, FOREST_DEPTH = 16, 6
FRESH_S = 5  # study and run lists go stale this fast while a study runs
STUDY_TTL_S = 600  # a loaded study caches finished trials; reload it now and then

optuna.logging.set_verbosity(optuna.logging.WARNING)


@st.cache_resource(show_spinner=False, max_entries=1)
def databases() -> settings.Databases:
    """The databases this server shows, resolved once per process from how it was started
    (`-- --db URL`, SENTIMENT_DB, a configuration file; settings.resolve).

    Raises:
        ConfigError: the operator's arguments, environment or configuration file are invalid.
    """
    return settings.resolve(settings.script_arguments(), os.environ)


def default_url() -> str:
    """The URL of the operator's default database."""
    return databases().url(None)


@st.cache_resource(show_spinner=False, max_entries=4)
def store(url: str) -> Store:
    """One read-only Store per database URL and process: the dashboard never writes.

    Not cached when it fails, so a database filled after the server started is found.

    Raises:
        NotFilledError: the database holds no tables of this tool yet.
        StorageError: the database cannot be opened.
    """
    return open_store(url, read_only=True)


@st.cache_resource(show_spinner=False, max_entries=4)
def optuna_storage(url: str) -> Any:
    """Optuna's storage for the same database, read-only (trainer.tuning.storage.optuna_reader).

    Not cached when it fails, so a study created after the server started is found.

    Raises:
        NotFilledError: no study was ever created in the database.
        StorageError: the database cannot be opened.
        ConfigError: the URL is an in-memory SQLite database.
    """
    from trainer.tuning.storage import optuna_reader

    return optuna_reader(url)


# Records are read-only and large (1,000 runs, 25,000 texts): shared, not copied per session.
@st.cache_resource(ttl=FRESH_S, show_spinner=False, max_entries=16)
def runs(url: str, stage: str | None = None, study: str | None = None) -> list[Run]:
    """Stored runs, oldest first, optionally of one stage and/or study.

    A saved run never changes (a trial's run replaced after an epoch gets a new id), so only
    the runs not read before are loaded: listing the ids takes 0.03 s with 1,000 trials, loading
    every run again 0.7-1.6 s each time this list went stale.
    """
    listed = store(url).run_specs(stage=stage, study=study)
    known = _loaded_runs(url)
    if stage is None and study is None:  # the whole listing: forget runs deleted since
        for gone in known.keys() - listed.keys():
            known.pop(gone, None)
    if missing := [i for i in listed if i not in known]:
        known.update((run.id, run) for run in store(url).get_runs(missing))
    return [known[i] for i in listed if i in known]  # one deleted meanwhile is left out


@st.cache_resource(show_spinner=False, max_entries=4)
def _loaded_runs(url: str) -> dict[int, Run]:
    """Every run read so far from one database, by id (shared by sessions, never stale)."""
    return {}


@st.cache_resource(ttl=FRESH_S, show_spinner=False, max_entries=16)
def trial_runs(url: str, study: str) -> dict[int, Run]:
    """Trial number -> our stored validation run of that trial."""
    return {run.spec.trial: run for run in runs(url, "trial", study)
            if run.spec.trial is not None}


@st.cache_resource(ttl=FRESH_S, show_spinner=False, max_entries=16)
def trial_run_ids(url: str, study: str) -> dict[int, int]:
    """Trial number -> the id of its stored run, from a quick listing without metrics."""
    specs = store(url).run_specs(stage="trial", study=study)
    return {spec.trial: run_id for run_id, spec in specs.items() if spec.trial is not None}


@st.cache_data(show_spinner=False, max_entries=64)
def run_chart_specs(url: str, run_id: int) -> tuple[dict, dict | None]:
    """A stored run's confusion matrix and ROC curve (None without one) as Vega-Lite specs.

    A saved run never changes, so Altair builds and validates them once: that took 0.1 s of
    each rerun of a trial's diagnostics (1,000 trials, 2 cores).
    """
    from dashboard import charts, views

    run = stored_run(url, run_id)
    confusion = charts.confusion_chart(views.confusion_frame(run.evaluation.confusion))
    roc = (charts.curves_chart(views.curves_frame([run], "roc"), "roc")
           if "roc" in run.evaluation.curves else None)
    return confusion.to_dict(), None if roc is None else roc.to_dict()


def stored_run(url: str, run_id: int) -> Run:
    """One stored run, read alone the first time (a trial's diagnostics need not load all
    1,000) and kept with every other run read (`_loaded_runs`).

    Raises:
        StorageError: no run has this id, or the database cannot be read.
    """
    known = _loaded_runs(url)
    if run_id not in known:
        known[run_id] = store(url).get_run(run_id)
    return known[run_id]


@st.cache_data(show_spinner=False, max_entries=8)
def trial_intervals(url: str, study: str, finished: tuple[int, ...]) -> pd.DataFrame:
    """n and 95% interval of the finished trials' values (study_views.trial_intervals).

    Args:
        url: the database.
        study: the study.
        finished: the finished trials' numbers: their values and runs never change, so the
            cache is read again only when one more finishes.
    """
    _, trials = study_trials(url, study)
    done = [t for t in trials if t.number in set(finished)]
    return study_views.trial_intervals(done, trial_runs(url, study))


@st.cache_data(ttl=FRESH_S, show_spinner=False, max_entries=4)
def run_studies(url: str) -> list[str]:
    """Names of the studies that have stored runs, sorted."""
    return store(url).studies()


@st.cache_resource(show_spinner=False, max_entries=12)
def predictions(url: str, run_id: int, texts: bool = True) -> pd.DataFrame:
    """A run's per-review predictions (review_id, label, prob and, with texts, text, length).

    A run's predictions never change once saved: a trial's run replaced after each epoch gets
    a new id. Without texts they load ten times faster (0.04 s against 0.4 s for 25,000).
    """
    return store(url).predictions(run_id, texts=texts)


# An audit is written once and read whole (duplicate groups, label issues, behaviour results).
@st.cache_resource(ttl=FRESH_S, show_spinner=False, max_entries=8)
def latest_audit(url: str, data_source: str | None = None) -> Audit | None:
    """The newest stored audit (of one data source), or None before `python -m trainer audit`.

    Raises:
        StorageError: the database cannot be read.
    """
    return store(url).latest_audit(data_source)


@st.cache_data(ttl=FRESH_S, show_spinner=False, max_entries=4)
def study_names(url: str) -> list[str]:
    """Names of the Optuna studies in the database, sorted (none before the first study)."""
    try:
        storage = optuna_storage(url)
    except NotFilledError:
        return []
    return sorted(s.study_name for s in storage.get_all_studies())


@st.cache_resource(ttl=STUDY_TTL_S, show_spinner=False, max_entries=8)
def study(url: str, name: str) -> optuna.Study:
    """A study, loaded once in a while: its storage then fetches only new and unfinished trials.

    Raises:
        KeyError: no study has this name.
    """
    try:
        storage = optuna_storage(url)
    except NotFilledError as e:
        raise KeyError(f"no study named {name!r}: the database holds no study") from e
    return optuna.load_study(study_name=name, storage=storage)


@st.cache_resource(ttl=FRESH_S, show_spinner=False, max_entries=8)
def study_trials(url: str, name: str) -> tuple[str, list[FrozenTrial]]:
    """A study's direction ("maximize"/"minimize") and all its trials (shared: do not modify).

    Raises:
        KeyError: no study has this name.
    """
    loaded = study(url, name)  # a multi-objective study is shown by its first objective
    return loaded.directions[0].name.lower(), loaded.get_trials(deepcopy=False)


@st.cache_data(show_spinner=False, max_entries=32)
def importances(url: str, name: str, evaluator: str, target: str,
                version: tuple[int, ...]) -> dict[str, float]:
    """Hyperparameter importances of a study's complete trials for a target.

    Args:
        url: the database.
        name: the study.
        evaluator: one of EVALUATORS.
        target: "objective", or a metric of our stored trial runs (e.g. "f1_negative").
        version: the complete trials' numbers, so the cache refreshes when one finishes.

    Returns:
        Normalised importances, largest first (empty with fewer than two usable trials).

    Raises:
        ValueError: the evaluator cannot rate these trials.
    """
    direction, trials = study_trials(url, name)
    metrics = pd.DataFrame() if target == "objective" else \
        study_views.trial_metrics_frame(trial_runs(url, name))
    values = study_views.target_values(study_views.trials_table(trials), metrics, target)
    if target != "objective":
        direction = study_views.metric_direction(target)
    return param_importances(study(url, name), values, evaluator, direction)


# Optuna warns that PED-ANOVA rates a target as a loss: we negate maximised targets for it.
_LOSS_NOTE = "PedAnovaImportanceEvaluator computes the importances of params to achieve low"


def param_importances(loaded: optuna.Study, values: pd.Series, evaluator: str,
                      direction: str) -> dict[str, float]:
    """Optuna's importances of a study's hyperparameters for a value of our choice per trial.

    Args:
        loaded: the study; only its complete trials numbered in `values` are rated.
        values: the target of each trial, finite, indexed by trial number.
        evaluator: one of EVALUATORS.
        direction: "maximize" or "minimize", the way the target gets better.

    Returns:
        Normalised importances, largest first (empty with fewer than two usable trials).

    Raises:
        ValueError: the evaluator cannot rate these trials.
    """
    usable = [t for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.number in values.index]
    if len(usable) < 2:
        return {}
    # PED-ANOVA rates a target as a loss (lower is better); the forests do not mind the sign.
    sign = -1.0 if direction == "maximize" else 1.0
    loss = {int(number): sign * float(value) for number, value in values.items()}
    # Optuna drops a trial whose target is not finite (None would raise): NaN leaves out the
    # rest. `params` comes from the usable trials, as it would from a study of only those.
    params = list(optuna.search_space.intersection_search_space(usable))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LOSS_NOTE, category=UserWarning)
        return optuna.importance.get_param_importances(
            loaded, evaluator=_evaluator(evaluator), params=params,
            target=lambda t: loss.get(t.number, math.nan))


def _evaluator(name: str) -> Any:
    importance = optuna.importance
    if name == "fANOVA":
        return importance.FanovaImportanceEvaluator(n_trees=FOREST_TREES,
                                                    max_depth=FOREST_DEPTH, seed=0)
    if name == "mean decrease impurity":
        return importance.MeanDecreaseImpurityImportanceEvaluator(
            n_trees=FOREST_TREES, max_depth=FOREST_DEPTH, seed=0)
    return importance.PedAnovaImportanceEvaluator()


@st.cache_resource(ttl=FRESH_S, show_spinner=False, max_entries=4)
def model_choices(url: str) -> list[Any]:
    """Every stored model a user can pick on the live page (trainer.predict.ModelChoice)."""
    from trainer.predict import model_choices as choices

    return choices(store(url))


# Up to MAX_COMPARED models side by side: each stays loaded (a fine-tuned MiniLM: ~115 MB).
@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def predictor(url: str, run_id: int) -> Any:
    """A stored model, loaded and warmed up once per process; predictors lock themselves for
    concurrent sessions.

    A transformer scores through its fast CPU copy (trainer.transformer.fast), prepared here,
    not at a visitor's first review: a one-shot `predict` would not earn the preparation back,
    a server scoring for hours does (one review with a MiniLM: ~0.06 s against ~0.7 s eager on
    2 cores). Explanations stay fp32.

    Raises:
        TrainerError: no stored run has this id, or its files are gone or unreadable.
    """
    from trainer import predict

    loaded = predict.load_predictor(store(url), f"run:{run_id}", fast=True, fast_min_tokens=0)
    for _ in range(WARM_UP_CALLS):  # the first prepares; traced graphs optimise over the next
        loaded.predict_proba([WARM_UP_REVIEW])
    return loaded


WARM_UP_REVIEW = "A warm-up review, scored before a visitor's first one."
WARM_UP_CALLS = 3


# Keyed by run id and text: a run's model never changes once saved, so neither does its answer.
@st.cache_data(show_spinner=False, max_entries=512)
def prob_positive(url: str, run_id: int, text: str) -> float:
    """A stored model's positive-class probability for one review.

    Raises:
        TrainerError: the model cannot be loaded.
    """
    return float(predictor(url, run_id).predict_proba([text])[0])


@st.cache_data(show_spinner="Explaining the prediction…", max_entries=64)
def explanation(url: str, run_id: int, text: str, top_k: int = 10) -> list[Any]:
    """The words that drove a stored model's verdict on one review (trainer.explanation
    Contribution items), strongest first as the model's explainer orders them.

    Raises:
        TrainerError: the model cannot be loaded.
        Exception: the explainer failed (out of memory, say); nothing is cached then.
    """
    return list(predictor(url, run_id).explain(text, top_k=top_k))
