"""The fitted TF-IDF + logistic regression model, and train_baseline that chooses and fits it."""
from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from scipy.special import expit
from tqdm.auto import tqdm

from trainer.baseline.cleaning import clean, original_offsets
from trainer.baseline.selection import (
    C_GRID,
    FAMILIES,
    MIN_DF,
    VALIDATION_FRACTION,
    column_terms,
    family_columns,
    fit_logistic,
    score_candidates,
)
from trainer.baseline.vectoriser import (
    TOKEN_PATTERN,
    TOKENS,
    Counts,
    Index,
    build_index,
    count_matrix,
    count_terms,
    document_frequency,
    lookup,
    occurrence_weights,
    smoothed_idf,
    tfidf,
    tokenize,
)
from trainer.errors import DataError
from trainer.explanation import Contribution

T = TypeVar("T")


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make a generated __eq__ ambiguous
class BaselineModel:
    """A fitted TF-IDF + logistic regression model over `clean`ed text.

    `vocabulary` lists the feature terms in column order ("w1 w2" for a bigram); `idf` and
    `coef` follow that order; `params` holds the chosen hyperparameters and selection scores.
    """

    vocabulary: tuple[str, ...]
    idf: np.ndarray
    coef: np.ndarray
    intercept: float
    params: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def _index(self) -> Index:
        return build_index(self.vocabulary)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF features, identical to scikit-learn's TfidfVectorizer(preprocessor=clean).

        Args:
            texts: raw reviews.

        Returns:
            A documents × vocabulary CSR matrix of L2-normalised tf-idf weights.
        """
        doc, uni, pair = lookup(self._index, *tokenize([clean(t) for t in texts]))
        return self._features(doc, uni, pair, len(texts))

    def _features(self, doc: np.ndarray, uni: np.ndarray, pair: np.ndarray, n_docs: int
                  ) -> sp.csr_matrix:
        """TF-IDF rows of `n_docs` documents from the columns `lookup` found for their tokens."""
        counts = count_matrix(doc, uni, pair, (n_docs, len(self.vocabulary)))
        return tfidf(counts, self.idf, bool(self.params.get("sublinear_tf", False)))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Positive-class probabilities.

        Args:
            texts: raw reviews.

        Returns:
            One probability per text.
        """
        return expit(self.transform(texts) @ self.coef + self.intercept)

    def contributions(self, text: str, top_k: int | None = 10) -> list[Contribution]:
        """Per word occurrence share of the logit, on character spans of the original text.

        A feature's coef × tf-idf is split equally among its occurrences, and a bigram's share
        equally between its two words, so all shares plus the intercept sum to the logit.

        Args:
            text: one raw review.
            top_k: how many to return (None: all non-zero ones).

        Returns:
            Contributions ordered by |weight|, largest first.
        """
        cleaned = clean(text)
        matches = list(TOKENS.finditer(cleaned))
        tokens = pa.array([m.group() for m in matches], pa.large_string())
        doc, uni, pair = lookup(self._index, tokens, np.zeros(len(matches), dtype=np.int64))
        weight = occurrence_weights(self._features(doc, uni, pair, 1), self.coef, uni, pair)
        offsets = original_offsets(text, len(cleaned))
        order = [i for i in np.argsort(-np.abs(weight), kind="stable") if weight[i] != 0]
        spans = [(int(offsets[matches[i].start()]), int(offsets[matches[i].end() - 1]) + 1)
                 for i in order[:top_k]]
        return [Contribution(text[s:e], s, e, float(weight[i]))
                for i, (s, e) in zip(order, spans, strict=False)]


def _refit(counts: Counts, labels: np.ndarray, best: dict[str, Any], seed: int,
           names: tuple[list[str], np.ndarray]) -> BaselineModel:
    """Fit the chosen candidate on every training text; columns sorted like scikit-learn's."""
    family = (tuple(best["ngram_range"]), best["sublinear_tf"], best["min_df"])
    df = document_frequency(counts.matrix)
    terms, order = names
    cols = order[family_columns(counts, df, family)[order]]
    idf = smoothed_idf(df[cols], counts.matrix.shape[0])
    model = fit_logistic(tfidf(counts.matrix[:, cols], idf, family[1]), labels, best["C"], seed)
    return BaselineModel(tuple(map(terms.__getitem__, cols.tolist())), idf, model.coef_[0],
                         float(model.intercept_[0]))


def _check_training_data(texts: Sequence[str], labels: np.ndarray) -> None:
    if len(texts) != len(labels):
        raise DataError(f"Expected one label per text, found {len(texts)} texts and "
                        f"{len(labels)} labels; pass matching columns.")
    found = sorted(set(np.unique(labels).tolist()))
    if found != [0, 1] or np.bincount(labels.astype(np.int64)).min() < 5:
        raise DataError(f"Expected labels 0 and 1 with at least 5 texts each, found labels "
                        f"{found[:10]}; check the data's label column.")


class _Stages:
    """A progress bar naming the running stage, and the wall seconds each stage took."""

    def __init__(self, progress: bool, n_candidates: int) -> None:
        self.seconds: dict[str, float] = {}
        self._bar = tqdm(total=3 + n_candidates, desc="baseline: clean", unit="step",
                         disable=not progress)
        self._clock = time.perf_counter()

    def done(self, name: str, following: str, ticks: int = 1) -> None:
        self.seconds[name] = round(time.perf_counter() - self._clock, 3)
        self._clock = time.perf_counter()
        self._bar.set_description(f"baseline: {following}")
        self._bar.update(ticks)

    def tick(self, result: T) -> T:
        self._bar.update(1)
        return result

    def close(self) -> None:
        self._bar.close()


def train_baseline(texts: Sequence[str], labels: Sequence[int], *, seed: int = 0,
                   progress: bool = False, families: Sequence[tuple] = FAMILIES,
                   c_grid: Sequence[float] = C_GRID) -> BaselineModel:
    """Choose n-gram range and C on a seeded validation carve of `texts`, then refit on all.

    Args:
        texts: raw training reviews (the caller keeps the test split away from here).
        labels: 0 (negative) / 1 (positive), one per text.
        seed: seeds the validation carve and the solver.
        progress: show a progress bar over the stages (clean, vectorise, select, refit).
        families: candidate (ngram_range, sublinear_tf, min_df) tuples, simplest first.
        c_grid: candidate inverse regularisation strengths.

    Returns:
        The refitted model; `params` holds the choice, every candidate's validation accuracy
        and the wall seconds each stage took.

    Raises:
        DataError: the labels are not 0/1 for every text, a class has too few texts, or no
            word occurs in two texts.
    """
    labels = np.asarray(labels)
    _check_training_data(texts, labels)
    stages = _Stages(progress, len(families) * len(c_grid))
    try:
        cleaned = [clean(t) for t in texts]
        stages.done("clean", "vectorise")
        counts = count_terms(cleaned, MIN_DF)
        if counts.matrix.shape[1] == 0:
            raise DataError(f"Expected words that occur in at least {MIN_DF} of the texts, "
                            "found none; pass real reviews.")
        stages.done("vectorise", "select")
        with ThreadPoolExecutor(max_workers=1) as solver:
            pending = score_candidates(counts, labels, seed, solver, families=families,
                                       c_grid=c_grid)
            names = column_terms(counts)  # Python work while liblinear runs without the GIL
            scores = [stages.tick(p.result()) for p in pending]
        best = max(scores, key=lambda s: s["accuracy"])  # the first (simplest) of equal scores
        stages.done("select", "refit", ticks=0)  # select ticked once per candidate
        model = _refit(counts, labels, best, seed, names)
        stages.done("refit", "done")
    finally:
        stages.close()
    params = {**{k: v for k, v in best.items() if k != "accuracy"},
              "validation_accuracy": best["accuracy"], "token_pattern": TOKEN_PATTERN,
              "solver": "liblinear (dual)", "seed": seed, "n_train": len(texts),
              "validation_fraction": VALIDATION_FRACTION, "n_features": len(model.vocabulary),
              "selection": scores, "seconds": stages.seconds}
    return replace(model, params=params)
