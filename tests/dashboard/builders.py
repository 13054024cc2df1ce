"""Databases for the dashboard's tests and benchmark, filled through the Store and Optuna's API."""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from scipy.stats import norm

from storage.records import Predictions, RunSpec
from storage.store import Store, open_store
from trainer.metrics import evaluate

XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
STUDY = "imdb-finetune"
SPACE = {
    "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
    "warmup_ratio": FloatDistribution(0.0, 0.2),
    "num_train_epochs": IntDistribution(1, 5),
    "per_device_train_batch_size": CategoricalDistribution([8, 16, 32]),
    "weight_decay": FloatDistribution(0.0, 0.1),
}
GOOD = ("great", "wonderful", "moving", "superb", "brilliant", "charming", "funny", "beautiful")
BAD = ("awful", "boring", "dull", "terrible", "clumsy", "tedious", "bland", "painful")
FILLER = ("the", "plot", "acting", "film", "movie", "story", "cast", "ending", "score", "scenes")


@dataclass(frozen=True)
class Reviews:
    """Labelled reviews with stable ids."""

    ids: tuple[str, ...]
    labels: tuple[int, ...]
    texts: tuple[str, ...]


def synthetic_reviews(n: int, seed: int = 0, prefix: str = "test") -> Reviews:
    """Short reviews whose sentiment words mostly agree with their label."""
    rng = np.random.default_rng(seed)
    labels = tuple(int(i % 2) for i in range(n))
    texts = []
    for label in labels:
        main, other = (GOOD, BAD) if label else (BAD, GOOD)
        words = list(rng.choice(FILLER, 6 + int(rng.integers(0, 30)))) + \
            list(rng.choice(main, 3)) + list(rng.choice(other, 1))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + ".")
    ids = tuple(f"{prefix}/{'pos' if y else 'neg'}/{i}" for i, y in enumerate(labels))
    return Reviews(ids, labels, tuple(texts))


def imdb_reviews(path: Path, n: int) -> Reviews:
    """The first n reviews of a real IMDB parquet split, both classes mixed."""
    import pandas as pd

    frame = pd.read_parquet(path).sample(n=n, random_state=0)
    return Reviews(tuple(frame["review_id"]), tuple(int(v) for v in frame["label"]),
                   tuple(frame["text"]))


def scores(labels: Sequence[int], quality: float, seed: int) -> np.ndarray:
    """Positive-class probabilities of a model whose accuracy is about Φ(quality) (0: chance)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels) * 2 - 1
    return 1.0 / (1.0 + np.exp(-(quality * y + rng.normal(0.0, 1.0, len(y)))))


def save_stage(store: Store, stage: str, reviews: Reviews, quality: float, *, seed: int,
               model: str, artifact: str | None = None, warnings: tuple[str, ...] = (),
               study: str | None = None, trial: int | None = None,
               split: str = "test", data: str = "synthetic-imdb", n_bootstrap: int = 200) -> int:
    """Store one evaluated model with per-review predictions; returns the run id."""
    probs = scores(reviews.labels, quality, seed)
    evaluation = evaluate(np.asarray(reviews.labels), probs, seed=seed, n_bootstrap=n_bootstrap)
    spec = RunSpec(stage=stage, model=model, split=split, data_source=data, study=study,
                   trial=trial, warnings=warnings, artifact=artifact, duration_s=12.5,
                   config={"epoch": 2, "params": {}})
    preds = Predictions(reviews.ids, reviews.labels, tuple(float(p) for p in probs),
                        reviews.texts)
    return store.save_run(spec, evaluation, preds)


def make_trials(n: int, seed: int = 0, running: int = 1) -> list[optuna.trial.FrozenTrial]:
    """n fine-tuning study trials: mostly complete, some pruned, a few failed, some running."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 1, 1, 8, 0, 0)
    trials = []
    for i in range(n):
        params = {"learning_rate": float(10 ** rng.uniform(-6, -4)),
                  "warmup_ratio": float(rng.uniform(0, 0.2)),
                  "num_train_epochs": int(rng.integers(1, 6)),
                  "per_device_train_batch_size": int(rng.choice([8, 16, 32])),
                  "weight_decay": float(rng.uniform(0, 0.1))}
        state = _state(i, n, running, rng)
        trials.append(_trial(params, state, rng, start + dt.timedelta(minutes=5 * i)))
    return trials


def _state(i: int, n: int, running: int, rng: np.random.Generator) -> TrialState:
    if i >= n - running:
        return TrialState.RUNNING
    draw = rng.uniform()
    return TrialState.FAIL if draw < 0.05 else TrialState.PRUNED if draw < 0.3 \
        else TrialState.COMPLETE


def _trial(params: dict, state: TrialState, rng: np.random.Generator,
           started: dt.datetime) -> optuna.trial.FrozenTrial:
    epochs = params["num_train_epochs"]
    skill = (0.93 - 0.12 * abs(math.log10(params["learning_rate"]) + 4.7)
             - 0.2 * abs(params["warmup_ratio"] - 0.08) + 0.004 * epochs
             - 0.01 * (params["per_device_train_batch_size"] == 32))
    done = {TrialState.COMPLETE: epochs, TrialState.RUNNING: max(1, epochs // 2),
            TrialState.FAIL: 0}.get(state, int(rng.integers(1, max(2, epochs))))
    steps = {e: float(min(0.97, skill - 0.05 / e + rng.normal(0, 0.005)))
             for e in range(1, done + 1)}
    attrs = {"epoch_metrics": [{"epoch": e, "accuracy": v} for e, v in steps.items()]}
    if state == TrialState.FAIL:
        attrs["fail_reason"] = "out of memory: CUDA out of memory"
    trial = optuna.trial.create_trial(
        state=state, params=params, distributions=SPACE, user_attrs=attrs,
        intermediate_values=steps, value=steps[epochs] if state == TrialState.COMPLETE else None)
    trial.datetime_start = started
    if state.is_finished():
        trial.datetime_complete = started + dt.timedelta(seconds=40 * max(done, 1)
                                                         + float(rng.uniform(0, 20)))
    return trial


def add_study(url: str, name: str, trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    """Create a maximising study in the database and add the trials through Optuna's API."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.add_trials(trials)
    return study


def add_trial_runs(store: Store, study: optuna.Study, reviews: Reviews,
                   limit: int | None = None) -> int:
    """Store a validation run (with predictions) for each trial that finished an epoch."""
    saved = 0
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values or (limit is not None and saved >= limit):
            continue
        accuracy = min(max(t.intermediate_values.values()), 0.99)
        quality = float(norm.ppf(accuracy))  # the skill at which `scores` reaches that accuracy
        save_stage(store, "trial", reviews, quality, seed=t.number, model="tiny-bert",
                   study=study.study_name, trial=t.number, split="validation", n_bootstrap=0)
        saved += 1
    return saved


def baseline_artifact(directory: Path, reviews: Reviews) -> str:
    """Train and save a real TF-IDF baseline on the reviews; returns its folder."""
    from trainer.baseline.io import save_baseline
    from trainer.baseline.model import train_baseline

    model = train_baseline(list(reviews.texts), list(reviews.labels), seed=0)
    return str(save_baseline(model, directory))


def fill_stages(store: Store, reviews: Reviews, artifacts: Path, *,
                xss: bool = False) -> None:
    """Baseline (a real saved model), pretrained (chance, with its warning), fine-tuned (gone)."""
    train = synthetic_reviews(60, seed=1, prefix="train")
    model = f"tiny-bert {XSS[1]}" if xss else "tiny-bert"
    save_stage(store, "baseline", reviews, 1.25, seed=1, model="tfidf-logreg",
               artifact=baseline_artifact(artifacts / "baseline", train))
    save_stage(store, "pretrained", reviews, 0.0, seed=2, model=model,
               warnings=("the model has a new, untrained sentiment head: its score is chance",))
    save_stage(store, "finetuned", reviews, 1.5, seed=3, model=model, study=STUDY,
               artifact=str(artifacts / "deleted-final-model"))


def populated(url: str, artifacts: Path, *, n_reviews: int = 300, n_trials: int = 12,
              xss: bool = False) -> str:
    """A small database: three stages, a study with trial runs (optionally hostile names)."""
    reviews = synthetic_reviews(n_reviews)
    if xss:
        texts = list(reviews.texts)
        texts[0], texts[1] = f"{XSS[0]} great film", f"{XSS[1]} awful film"
        reviews = Reviews(reviews.ids, reviews.labels, tuple(texts))
    with open_store(url) as store:
        fill_stages(store, reviews, artifacts, xss=xss)
        study = add_study(url, f"{XSS[0]} study" if xss else STUDY, make_trials(n_trials))
        add_trial_runs(store, study, synthetic_reviews(80, seed=5, prefix="train"))
    return url


def thousand_trials(url: str, artifacts: Path, reviews: Reviews, *,
                    trial_runs: int | None = None) -> str:
    """A 1,000-trial study, its trial runs, and three stages scored on `reviews`."""
    with open_store(url) as store:
        fill_stages(store, reviews, artifacts)
        study = add_study(url, STUDY, make_trials(1000, seed=7, running=0))
        add_trial_runs(store, study, synthetic_reviews(200, seed=5, prefix="train"),
                       limit=trial_runs)
    return url
