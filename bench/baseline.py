"""Baseline: scikit-learn TfidfVectorizer(ngram_range=(1, 2)) + LogisticRegression() vs ours."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench import add_common_arguments, cpu_name, emit, figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--train-size", type=int, default=None, help="default: the whole split")
    parser.add_argument("--test-size", type=int, default=None, help="default: the whole split")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each side, alternating which goes first; medians reported")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; see add_arguments for the options."""
    parser = argparse.ArgumentParser(prog="python -m bench baseline", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from trainer.data import load_imdb
    from trainer.splits import stratified_subset

    data = load_imdb(args.data)
    train = stratified_subset(data.train, args.train_size, args.seed)
    test = stratified_subset(data.test, args.test_size, args.seed)
    sides = {"peer": lambda: run_peer(train, test),
             "ours": lambda: run_ours(train, test, args.seed)}
    runs: dict[str, list[dict[str, float]]] = {"peer": [], "ours": []}
    for i in range(args.repeat):
        for side in ("peer", "ours") if i % 2 == 0 else ("ours", "peer"):
            runs[side].append(sides[side]())
    med = {side: {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
           for side, rs in runs.items()}
    dev = cpu_name()
    config = {"train_size": len(train), "test_size": len(test), "repeat": args.repeat,
              "peer": "TfidfVectorizer(ngram_range=(1, 2)) + LogisticRegression()",
              "ours": "trainer.baseline.train_baseline"}
    rows = [("baseline_train_s", "s", "train_s", False),
            ("baseline_test_accuracy", "accuracy", "accuracy", True),
            ("baseline_predict_reviews_per_s", "reviews/s", "predict_per_s", True)]
    emit("baseline", [figure(name, unit, med["ours"][key], med["peer"][key], higher_is_better=hib,
                             device=dev, config=config) for name, unit, key, hib in rows],
         args.results_dir, args.tag)
    return 0


def _measure(fit: Callable[[], Any], predict: Callable[[Any], np.ndarray], test: Any
             ) -> dict[str, float]:
    start = time.perf_counter()
    model = fit()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    positive = predict(model)
    predict_s = time.perf_counter() - start
    accuracy = float(np.mean(positive == (np.asarray(test.labels) == 1)))
    return {"train_s": train_s, "accuracy": accuracy, "predict_per_s": len(test) / predict_s}


def run_peer(train: Any, test: Any) -> dict[str, float]:
    """The plain scikit-learn pipeline with its defaults, on the raw texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def fit() -> Any:
        pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression())
        return pipe.fit(list(train.texts), np.asarray(train.labels))

    return _measure(fit, lambda m: m.predict(list(test.texts)) == 1, test)


def run_ours(train: Any, test: Any, seed: int) -> dict[str, float]:
    """trainer.baseline.train_baseline (cleaning, its own model selection) and predict_proba."""
    from trainer.baseline.model import train_baseline

    return _measure(lambda: train_baseline(train.texts, train.labels, seed=seed),
                    lambda m: m.predict_proba(test.texts) >= 0.5, test)
