"""Label-issue candidates: cleanlab on out-of-fold (train) and stored (test) baseline scores."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from storage.records import LabelIssue
from trainer.errors import DataError
from trainer.splits import Split

log = logging.getLogger(__name__)

FOLDS = 5
FILTER_BY = "prune_by_noise_rate"  # cleanlab's default filter
RANKED_BY = "self_confidence"  # the given label's probability, lowest first
# The candidate each fold fits when no stored baseline names one: the baseline's choice on all of
# IMDB's train split (bigrams, sublinear tf, C=30). One candidate per fold, not the 8-candidate
# search, keeps the five folds to about a minute on 2 cores.
DEFAULT_CANDIDATE: dict[str, Any] = {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 2,
                                     "C": 30.0}


def cleanlab_method(probabilities: str) -> str:
    """How the candidates were found, as stored with each one."""
    return f"cleanlab find_label_issues ({FILTER_BY}, ranked by {RANKED_BY}) on {probabilities}"


def find_issues(split: str, review_ids: Sequence[str], labels: Sequence[int] | np.ndarray,
                probs: Sequence[float] | np.ndarray, method: str) -> list[LabelIssue]:
    """Reviews whose given label the probabilities make unlikely, the most suspicious first.

    Args:
        split: "train" or "test".
        review_ids, labels, probs: one per review: its id, given 0/1 label, and the model's
            positive-class probability (out-of-sample: never from a model trained on it).
        method: stored with each candidate.

    Returns:
        The candidates ranked 1, 2, …; none when a class is missing or too few reviews.
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if len(labels) < 2 or set(np.unique(labels).tolist()) != {0, 1}:
        log.info("label issues of %s: needs both labels, found %d reviews", split, len(labels))
        return []
    ranked = find_label_issues(labels, np.column_stack([1.0 - probs, probs]),
                               return_indices_ranked_by=RANKED_BY, filter_by=FILTER_BY,
                               n_jobs=1)
    return [LabelIssue(split, str(review_ids[i]), int(labels[i]), float(probs[i]), rank, method)
            for rank, i in enumerate(ranked, start=1)]


def out_of_fold_probs(split: Split, *, seed: int, candidate: dict[str, Any] | None = None,
                      folds: int = FOLDS, progress: bool = False) -> np.ndarray:
    """Positive-class probabilities of each review from a baseline that never saw it.

    Seeded, label-stratified folds (scikit-learn's StratifiedKFold) inside the split: each
    fold's reviews are scored by trainer.baseline fitted on the other folds with one fixed
    candidate, so nothing is tuned on the reviews scored.

    Args:
        split: the reviews (the train split).
        seed: seeds the folds and the fits.
        candidate: ngram_range, sublinear_tf, min_df and C (DEFAULT_CANDIDATE when None).
        folds: how many folds.
        progress: show a progress bar over the folds.

    Returns:
        One probability per review, in the split's order.

    Raises:
        DataError: a class has fewer reviews than folds, or a fold cannot be fitted.
    """
    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    from trainer.baseline.model import train_baseline

    c = DEFAULT_CANDIDATE if candidate is None else candidate
    family = (tuple(c["ngram_range"]), bool(c["sublinear_tf"]), int(c["min_df"]))
    smallest = int(np.bincount(split.labels, minlength=2).min())
    if smallest < folds:
        raise DataError(f"the {split.name} split has {smallest} reviews of one label, fewer "
                        f"than the {folds} folds; label issues need more reviews")
    probs = np.full(len(split), np.nan)
    texts = split.texts
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit, held in tqdm(cv.split(np.zeros(len(split)), split.labels), total=folds,
                          desc="audit: out-of-fold baseline", unit="fold", disable=not progress):
        model = train_baseline([texts[i] for i in fit], split.labels[fit], seed=seed,
                               families=(family,), c_grid=(float(c["C"]),))
        probs[held] = model.predict_proba([texts[i] for i in held])
    return probs


def train_label_issues(split: Split, *, seed: int, candidate: dict[str, Any] | None = None,
                       folds: int = FOLDS, progress: bool = False
                       ) -> tuple[list[LabelIssue], str | None]:
    """Label-issue candidates of the train split from out-of-fold baseline probabilities.

    Args:
        split: the train split.
        seed: seeds the folds and fits.
        candidate: the baseline's hyperparameters (DEFAULT_CANDIDATE when None).
        folds: how many folds.
        progress: show a progress bar over the folds.

    Returns:
        The candidates and how they were found; ([], None), with a logged note, when the split
        is too small to fold or to fit.
    """
    c = DEFAULT_CANDIDATE if candidate is None else candidate
    try:
        probs = out_of_fold_probs(split, seed=seed, candidate=c, folds=folds, progress=progress)
    except DataError as e:
        log.warning("label issues of the %s split skipped: %s", split.name, e)
        return [], None
    ngrams = "unigrams" if list(c["ngram_range"]) == [1, 1] else "uni- and bigrams"
    method = cleanlab_method(f"{folds}-fold out-of-fold TF-IDF baseline probabilities "
                             f"({ngrams}, C={float(c['C']):g}, seed {seed})")
    return find_issues(split.name, split.ids, split.labels, probs, method), method


def candidate_of(baseline_params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored baseline's chosen hyperparameters as a fold candidate, or None if incomplete."""
    keys = ("ngram_range", "sublinear_tf", "min_df", "C")
    if not baseline_params or not all(k in baseline_params for k in keys):
        return None
    return {k: baseline_params[k] for k in keys}
