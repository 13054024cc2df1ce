"""Stored runs compared on the reviews they all scored: accuracies with intervals, McNemar's
paired test, review-by-review differences, and why a fine-tuned model falls below the baseline."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from storage import Run
from storage.records import COMPARED_STAGES, Stage
from trainer.errors import TrainerError
from trainer.metrics import McNemar, mcnemar, wilson_interval

MAX_TOKENS = 512  # what BERT-sized encoders such as MiniLM read at most


def json_number(x: float | None) -> float | None:
    """A figure as report JSON holds it: rounded to 6 decimals, NaN as null."""
    return None if x is None or math.isnan(x) else round(float(x), 6)

def accuracy_of(predictions: pd.DataFrame, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, its Wilson 95% interval and n of the scored reviews among `predictions`.

    Args:
        predictions: review_id, label, prob (NaN: not scored, left out).
        threshold: a review is called positive when prob >= threshold.

    Returns:
        n, accuracy (None when n is 0) and accuracy_ci95 ([low, high]).
    """
    scored = predictions.dropna(subset=["prob"])
    n, right = len(scored), int(((scored["prob"] >= threshold).astype(int)
                                 == scored["label"]).sum())
    low, high = wilson_interval(right, n)
    return {"n": n, "accuracy": json_number(right / n) if n else None,
            "accuracy_ci95": [json_number(low), json_number(high)]}


def shared_accuracies(preds: Mapping[int, pd.DataFrame],
                      threshold: float = 0.5) -> dict[int, dict[str, Any]]:
    """Each run's accuracy on the reviews that every one of the runs scored.

    The one place where stages are put on the same reviews: the baseline scores the whole test
    split, the transformer stages a seeded subset of it, so only that subset compares them.

    Args:
        preds: run id -> the run's stored predictions (review_id, label, prob).
        threshold: a review is called positive when prob >= threshold.

    Returns:
        run id -> `accuracy_of` on the shared reviews plus "with" (the other runs' ids); empty
        with fewer than two runs, no shared review, or runs that give a review different labels
        (scored on different data).
    """
    if len(preds) < 2:
        return {}
    scored = {i: p.dropna(subset=["prob"]).drop_duplicates("review_id").set_index("review_id")
              for i, p in preds.items()}
    common = None
    for frame in scored.values():
        common = frame.index if common is None else common.intersection(frame.index)
    if common is None or common.empty:
        return {}
    labels = [frame.loc[common, "label"].to_numpy() for frame in scored.values()]
    if any((y != labels[0]).any() for y in labels[1:]):
        return {}
    return {i: {**accuracy_of(frame.loc[common].reset_index(), threshold),
                "with": sorted(j for j in scored if j != i)} for i, frame in scored.items()}


def compared_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs compared on the same reviews: per data source, the newest test-split run of
    each compared stage (baseline, pretrained, fine-tuned), in stage order; groups of two or
    more only."""
    newest: dict[str, dict[str, Run]] = {}
    for run in runs:
        spec = run.spec
        if spec.split != "test" or spec.stage not in COMPARED_STAGES:
            continue
        group = newest.setdefault(spec.data_source, {})
        if spec.stage not in group or run.id > group[spec.stage].id:
            group[spec.stage] = run
    return [[g[s] for s in COMPARED_STAGES if s in g] for g in newest.values() if len(g) > 1]


def compare_on_shared_reviews(store, runs: Sequence[Run]) -> tuple[dict[int, dict[str, Any]],
                                                                   list[dict[str, Any]]]:
    """`shared_accuracies` of each of the `compared_groups`, and their shortfalls.

    Returns:
        (run id -> its "on_shared_reviews" entry; one {"run_id", "baseline_run_id", "sentence"}
        per fine-tuned model below the baseline on the shared reviews).
    """
    shared: dict[int, dict[str, Any]] = {}
    shortfalls = []
    for group in compared_groups(runs):
        found = shared_accuracies({r.id: store.predictions(r.id, texts=False) for r in group})
        shared.update(found)
        by_stage = {r.spec.stage: r for r in group}
        base, tuned = by_stage.get(Stage.BASELINE), by_stage.get(Stage.FINETUNED)
        if found and base is not None and tuned is not None:
            sentence = shortfall_sentence(tuned, found[base.id]["accuracy"],
                                          found[tuned.id]["accuracy"], found[tuned.id]["n"])
            if sentence is not None:
                shortfalls.append({"run_id": tuned.id, "baseline_run_id": base.id,
                                   "sentence": sentence})
    return shared, shortfalls


def shortfall_sentence(tuned: Run, baseline_accuracy: float, tuned_accuracy: float,
                       n: int) -> str | None:
    """Why a fine-tuned model scores below the baseline on the same reviews, and what to change,
    in one sentence read from the run's stored config; None when it is not below.

    Args:
        tuned: the fine-tuned model's run (its config: train_size, max_length, best_params'
            num_train_epochs, device when recorded).
        baseline_accuracy, tuned_accuracy: both on the same `n` reviews (`shared_accuracies`).
        n: how many reviews both scored.
    """
    if tuned_accuracy >= baseline_accuracy:
        return None
    c = tuned.spec.config
    tokens, device = c.get("max_length"), c.get("device")
    subset = c.get("train_size") is not None or c.get("final_train_size") is not None
    option = "--final-train-size" if "final_train_size" in c else "--train-size"
    fixes = [f for f, needed in (
        (f"train on more reviews with {option}", subset),
        ("keep more tokens with --max-length", tokens is None or tokens < MAX_TOKENS),
        ("train every layer with --frozen-layers 0", bool(c.get("frozen_layers"))),
        ("train on a GPU", device is None or not str(device).startswith("cuda"))) if needed]
    fixes = fixes or ["tune longer with --trials"]
    return (f"The fine-tuned model scores {tuned_accuracy:.3f} against the TF-IDF baseline's "
            f"{baseline_accuracy:.3f} on the same {n:,} test reviews, likely because it was "
            f"fine-tuned on {training_of(c)}, while the baseline learned from the whole train "
            f"split; to close the gap, "
            f"{', '.join(fixes[:-1]) + ' or ' if len(fixes) > 1 else ''}{fixes[-1]}.")


def training_of(config: dict[str, Any]) -> str:
    """How a fine-tuned model was trained, from its run's stored config, e.g. "2,000 training
    reviews cut to 128 tokens for 1 epoch on the CPU"; what the config lacks is said to be so.

    Args:
        config: trained_on (the reviews the model learned from; older runs: train_size, None
            for the whole train split), max_length, frozen_layers, best_params'
            num_train_epochs, device.
    """
    train = config.get("trained_on", config.get("train_size"))
    tokens, device = config.get("max_length"), config.get("device")
    epochs = (config.get("best_params") or {}).get("num_train_epochs")
    frozen = config.get("frozen_layers") or 0
    return "".join([
        "the whole train split" if train is None else f"{train:,} training reviews",
        " (tokens kept not recorded)" if tokens is None else f" cut to {tokens} tokens",
        "" if not frozen else " with the embeddings" + (
            f" and {frozen - 1} encoder layer{'' if frozen == 2 else 's'}" if frozen > 1 else "")
        + " frozen",
        " for an unrecorded number of epochs" if epochs is None else
        f" for {epochs} epoch{'' if epochs == 1 else 's'}",
        " on a device the run did not record" if device is None else
        f" on a GPU ({device})" if str(device).startswith("cuda") else
        f" on the {str(device).upper()}"])


# --- the audit: deduplicated test figures and the audit section ---------------------------------


@dataclass(frozen=True)
class PairedTest:
    """McNemar's test of two runs on the reviews both scored, with each run's accuracy there."""

    test: McNemar  # b: only run A right, c: only run B right
    n: int
    accuracy_a: float
    accuracy_b: float


def paired_mcnemar(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.5) -> PairedTest | None:
    """Pair two runs' stored predictions on their shared review ids and test them.

    Args:
        a, b: predictions of runs A and B (review_id, label, prob), as Store.predictions gives
            them; reviews without a probability are left out.
        threshold: a review is called positive when prob >= threshold.

    Returns:
        The test on the shared reviews, or None when the runs share no scored review.

    Raises:
        ValueError: the two runs disagree on a review's true label (they were scored on
            different data sources).
    """
    columns = ["review_id", "label", "prob"]
    both = a[columns].dropna().merge(b[columns].dropna(), on="review_id", suffixes=("_a", "_b"))
    if (both["label_a"] != both["label_b"]).any():
        raise ValueError("the two runs give different true labels for the same review ids; "
                         "they were scored on different data sources")
    if both.empty:
        return None
    labels = both["label_a"].to_numpy()
    pa, pb = both["prob_a"].to_numpy(), both["prob_b"].to_numpy()
    return PairedTest(mcnemar(labels, pa, pb, threshold=threshold), len(both),
                      float(np.mean((pa >= threshold) == labels)),
                      float(np.mean((pb >= threshold) == labels)))


@dataclass(frozen=True)
class ReviewDiff:
    """Two runs review by review: where exactly one is right, and McNemar's test on all shared.

    rows: review_id, label, true ("negative" | "positive"), prob_a, prob_b, right ("A" | "B":
        the run that is right), gap (|prob_a - prob_b|), text (None when not stored), length;
        the largest gap first.
    paired: McNemar's exact test on all `paired.n` shared reviews (b: rows where A is right).
    """

    rows: pd.DataFrame
    paired: PairedTest


def review_diff(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.5) -> ReviewDiff:
    """The reviews on which exactly one of two runs is right, on the reviews both scored.

    Works for any two runs scored on the same reviews: two test-split stages, or two trials of
    one study on its validation split.

    Args:
        a, b: predictions of runs A and B (review_id, label, prob, and text when read with
            texts), as Store.predictions gives them; reviews without a probability are left out.
        threshold: a review is called positive when prob >= threshold.

    Returns:
        The differing reviews and the paired test.

    Raises:
        TrainerError: the runs share no scored review, or give the same review ids different
            labels (they were scored on different data).
    """
    try:
        paired = paired_mcnemar(a, b, threshold)
    except ValueError:
        raise TrainerError("The two runs give the same review ids different labels, so they "
                           "were scored on different data; pick two runs scored on the same "
                           "reviews.") from None
    if paired is None:
        raise TrainerError(
            f"The two runs share no scored review (one scored {a['prob'].notna().sum():,}, the "
            f"other {b['prob'].notna().sum():,}); pick two stages scored on the test split, or "
            "two trials of one study (scored on its validation split).")
    columns = ["review_id", "label", "prob"]
    both = a[columns].dropna().merge(b[columns].dropna().drop(columns="label"),
                                     on="review_id", suffixes=("_a", "_b"))
    right_a = (both["prob_a"] >= threshold) == both["label"]
    right_b = (both["prob_b"] >= threshold) == both["label"]
    rows = both[right_a != right_b].assign(
        true=lambda f: np.where(f["label"] == 1, "positive", "negative"),
        right=np.where(right_a[right_a != right_b], "A", "B"),
        gap=lambda f: (f["prob_a"] - f["prob_b"]).abs())
    texts = pd.concat([f[["review_id", "text"]] for f in (a, b) if "text" in f.columns]
                      or [pd.DataFrame({"review_id": [], "text": []}, dtype=object)])
    texts = texts.dropna().drop_duplicates("review_id")
    rows = rows.merge(texts, on="review_id", how="left").astype({"text": object})
    rows["text"] = rows["text"].where(rows["text"].notna(), None)
    rows["length"] = rows["text"].map(lambda t: float("nan") if t is None else float(len(t)))
    rows = rows.sort_values("gap", ascending=False, kind="stable").reset_index(drop=True)
    return ReviewDiff(rows[["review_id", "label", "true", "prob_a", "prob_b", "right", "gap",
                            "text", "length"]], paired)


def mcnemar_against(store, target: Run, others: list[Run]) -> dict[int, str]:
    """McNemar's exact p-value of `target` against each other run, on the reviews both scored."""
    mine = store.predictions(target.id, texts=False)
    out = {}
    for run in others:
        try:
            paired = paired_mcnemar(mine, store.predictions(run.id, texts=False))
        except ValueError:
            out[run.id] = "scored on other data"
            continue
        out[run.id] = "no shared reviews" if paired is None else \
            f"{paired.test.p_value:.3g} (n={paired.n})"
    return out
