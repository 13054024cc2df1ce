"""The audit of a data source and its stored runs: each part timed, saved as one record."""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from storage import Run, RunSpec
from storage.records import COMPARED_STAGES, Audit, BehaviourResult, Stage, run_label
from trainer.audit import duplicates as dup
from trainer.audit.behaviour import behaviour_results, read_behaviour_file
from trainer.audit.label_issues import (
    FOLDS,
    candidate_of,
    cleanlab_method,
    find_issues,
    train_label_issues,
)
from trainer.audit.slices import length_edges, slice_results
from trainer.audit.truncation import run_truncation
from trainer.config import Config
from trainer.errors import TrainerError
from trainer.splits import Dataset, Split

log = logging.getLogger(__name__)

# Part of every fingerprint: raise it when a finding is computed differently, so audits stored
# by an older version are redone rather than reused.
AUDIT_VERSION = 1
TRANSFORMER_STAGES = (Stage.PRETRAINED, Stage.FINETUNED)
Behaviour = Callable[..., list[BehaviourResult]]


@dataclass(frozen=True)
class Coverage:
    """The stored runs an audit covers.

    runs: every run of the compared stages on this data source (slices, truncation), by id.
    models: the newest run of each stage, and the chosen trial's, whose models are tested.
    """

    runs: dict[int, RunSpec]
    models: tuple[int, ...]
    trial_run: int | None


def coverage(store: Any, data_source: str, *, study: str, trial: int | None = None) -> Coverage:
    """Which stored runs an audit of `data_source` covers.

    Args:
        store: the Store.
        data_source: the Dataset's source.
        study: the study of `trial`.
        trial: a trial number whose model is tested too, or None.

    Returns:
        The runs covered.

    Raises:
        TrainerError: the study holds no stored run of that trial.
    """
    specs = store.run_specs()
    runs = {i: s for i, s in specs.items()
            if s.data_source == data_source and s.stage in COMPARED_STAGES}
    newest = {s.stage: i for i, s in runs.items()}  # ids ascend: the last one wins
    models = [newest[s] for s in COMPARED_STAGES if s in newest]
    trial_run = None
    if trial is not None:
        trial_run = next((i for i, s in specs.items() if s.stage == Stage.TRIAL
                          and s.study == study and s.trial == trial), None)
        if trial_run is None:
            raise TrainerError(f"the study {study!r} has no stored trial {trial}; pick a trial "
                               "that `python -m trainer report --with-trials` lists")
        models.append(trial_run)
        runs[trial_run] = specs[trial_run]
    return Coverage(runs, tuple(models), trial_run)


def fingerprint(data_source: str, seed: int, covered: Coverage, cases: Sequence[dict]) -> str:
    """A short hash of what an audit depends on: an audit with the same one is not redone."""
    picked = {"version": AUDIT_VERSION, "data": data_source, "seed": seed,
              "runs": sorted(covered.runs), "models": list(covered.models), "cases": list(cases)}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def run_audit(store: Any, data: Dataset, config: Config, *, progress: bool = True,
              behaviour: Behaviour = behaviour_results, behaviour_file: str | None = None,
              trial: int | None = None) -> Audit:
    """Audit a data source and the stored runs on it, save it, and return it.

    Duplicates and leakage, label-issue candidates of both splits, behavioural tests of each
    stage's newest model (and the trial's), accuracy slices of every stage run and truncation of
    every transformer run. An audit already stored with the same fingerprint is returned as is.

    Args:
        store: the Store.
        data: the train and test splits.
        config: seed and study are read.
        progress: show progress bars for the long steps.
        behaviour: runs the behavioural tests of one model
            (trainer.audit.behaviour.behaviour_results's signature).
        behaviour_file: a JSONL file of the user's behaviour cases, or None.
        trial: a trial number of config.study whose model is audited too, or None.

    Returns:
        The stored audit (with its id).

    Raises:
        DataError: the behaviour file is unreadable or malformed.
        TrainerError: the trial has no stored run.
        StorageError: the database refused a read or the write.
    """
    cases = read_behaviour_file(behaviour_file) if behaviour_file else []
    covered = coverage(store, data.source, study=config.study, trial=trial)
    key = fingerprint(data.source, config.seed, covered, cases)
    if (done := store.find_audit(key)) is not None:
        log.info("audit: already done for these data, seed and runs (audit %d), not redone",
                 done.id)
        return done
    started, clock = time.perf_counter(), _Clock()
    with clock("duplicates"):
        found = dup.find_duplicates(data.train, data.test, progress=progress)
    runs = {i: store.get_run(i) for i in covered.runs}
    with clock("label_issues"):
        issues, methods = _label_issues(store, data, runs, config.seed, progress)
    edges = length_edges([len(t) for t in data.test.texts])
    with clock("slices"):
        slices = _slices(store, data, runs, edges)
    with clock("truncation"):
        truncation = _truncation(store, data, runs, progress)
    with clock("behaviour"):
        tested = _behaviour(store, data, [runs[i] for i in covered.models], behaviour,
                            cases, config.seed, progress)
    settings = {
        "fingerprint": key, "version": AUDIT_VERSION, "seed": config.seed,
        "runs": sorted(covered.runs), "models": list(covered.models),
        "trial": trial, "trial_run": covered.trial_run, "study": config.study,
        "behaviour_file": behaviour_file, "user_cases": len(cases),
        "duplicates_method": dup.METHOD, "near_threshold": dup.NEAR_THRESHOLD,
        "num_perm": dup.NUM_PERM, "label_issues": methods,
        "length_edges": edges,
        "n": {"train": len(data.train), "test": len(data.test)},
        "seconds": clock.seconds,
    }
    audit = Audit(data.source, found.groups, tuple(issues), tuple(tested), tuple(slices),
                  tuple(truncation), found.leaked_test_ids, settings,
                  duration_s=round(time.perf_counter() - started, 3))
    store.save_audit(audit)
    return store.find_audit(key)


class _Clock:
    """Wall seconds of each named part of the audit."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = round(time.perf_counter() - start, 3)
            log.info("audit: %s took %.1f s", part, self.seconds[part])


def _newest(runs: dict[int, Run], stage: str, split: str = "test") -> Run | None:
    chosen = [r for _, r in sorted(runs.items())
              if r.spec.stage == stage and r.spec.split == split]
    return chosen[-1] if chosen else None


def _label_issues(store: Any, data: Dataset, runs: dict[int, Run], seed: int, progress: bool
                  ) -> tuple[list, dict[str, dict[str, Any]]]:
    baseline = _newest(runs, Stage.BASELINE)
    params = baseline.spec.config.get("baseline_params") if baseline else None
    train, train_method = train_label_issues(data.train, seed=seed,
                                             candidate=candidate_of(params), progress=progress)
    methods = {"train": {"method": train_method, "n": len(data.train) if train_method else 0,
                         "folds": FOLDS}}
    test: list = []
    methods["test"] = {"method": None, "n": 0}
    if baseline is None:
        log.warning("label issues of the test split skipped: no stored TF-IDF baseline on "
                    "%s; run `python -m trainer baseline` first", data.source)
    else:
        method = cleanlab_method(f"the test probabilities of the stored TF-IDF baseline "
                                 f"(run {baseline.id})")
        scored = store.predictions(baseline.id, texts=False).dropna(subset=["prob"])
        test = find_issues("test", scored["review_id"].tolist(), scored["label"].to_numpy(),
                           scored["prob"].to_numpy(), method)
        methods["test"] = {"method": method, "n": len(scored), "run_id": baseline.id}
    return train + test, methods


def _split_of(data: Dataset, run: Run) -> Split:
    """The split a run's review ids come from (validation ids are train ids)."""
    return data.test if run.spec.split == "test" else data.train


def _slices(store: Any, data: Dataset, runs: dict[int, Run], edges: list[int]) -> list:
    out = []
    for run_id, run in sorted(runs.items()):
        split = _split_of(data, run)
        lengths = dict(zip(split.ids, map(len, split.texts), strict=True))
        ratings = (None if split.ratings is None
                   else dict(zip(split.ids, split.ratings.tolist(), strict=True)))
        out += slice_results(run_id, store.predictions(run_id, texts=False), lengths,
                             edges=edges, ratings=ratings)
    return out


def _truncation(store: Any, data: Dataset, runs: dict[int, Run], progress: bool) -> list:
    out = []
    for run_id, run in sorted(runs.items()):
        if run.spec.stage not in TRANSFORMER_STAGES:
            continue
        split = _split_of(data, run)
        texts = dict(zip(split.ids, split.texts, strict=True))
        result = run_truncation(run, store.predictions(run_id, texts=False), texts,
                                progress=progress)
        out += [result] if result is not None else []
    return out


def _behaviour(store: Any, data: Dataset, models: Sequence[Run], behaviour: Behaviour,
               cases: Sequence[dict], seed: int, progress: bool) -> list[BehaviourResult]:
    from tqdm.auto import tqdm

    from trainer.predict import load_predictor

    out: list[BehaviourResult] = []
    for run in tqdm(models, desc="audit: behaviour", unit="model", disable=not progress):
        max_length = int(run.spec.config.get("max_length") or 256)
        try:
            predictor = load_predictor(store, f"run:{run.id}", max_length=max_length)
        except TrainerError as e:  # its saved model is gone or unreadable
            log.warning("behaviour of %s skipped: %s", run_label(run.id, run.spec), e)
            continue
        out += behaviour(predictor.predict_proba, model=run_label(run.id, run.spec),
                         run_id=run.id, texts=data.test.texts, seed=seed, extra_cases=cases)
        del predictor
        gc.collect()  # one transformer at a time in memory
    return out
