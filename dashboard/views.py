"""Pure data preparation for the dashboard's pages: records and DataFrames in, DataFrames out."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from storage.records import COMPARED_STAGES, ClassMetrics, Curve, Run, Stage

LOWER_IS_BETTER = ("loss", "brier", "ece")
MAX_CURVE_POINTS = 500


# ---------------------------------------------------------------- runs and the overview


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: identity, scalar metrics and per-class precision/recall/F1.

    Args:
        runs: stored runs.

    Returns:
        A DataFrame with columns run, stage, model, data, split, n, the evaluation's scalars
        and precision_<class>, recall_<class>, f1_<class>, plus warnings joined by "; ".
    """
    rows = []
    for run in runs:
        spec, ev = run.spec, run.evaluation
        row: dict[str, Any] = {"run": run.id, "name": run.label, "stage": spec.stage,
                               "model": spec.model, "data": spec.data_source,
                               "split": spec.split, "n": ev.n, "study": spec.study,
                               "trial": spec.trial, **ev.scalars}
        for cls, m in ev.per_class.items():
            row.update({f"precision_{cls}": m.precision, f"recall_{cls}": m.recall,
                        f"f1_{cls}": m.f1})
        row["warnings"] = "; ".join(spec.warnings)
        rows.append(row)
    return pd.DataFrame(rows)


def latest_by_stage(runs: Iterable[Run],
                    stages: Sequence[Stage] = COMPARED_STAGES) -> dict[Stage, Run]:
    """The newest run of each stage that has one, in stage order."""
    newest: dict[Stage, Run] = {}
    for run in runs:
        stage = run.spec.stage
        if stage in stages and (stage not in newest or run.id > newest[stage].id):
            newest[stage] = run
    return {s: newest[s] for s in stages if s in newest}


def format_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f"[{low:.3f}, {high:.3f}]"


def overview_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The overview's side-by-side table: one column per model, one row per measure.

    Args:
        frame: rows of `runs_frame` (one per stage).

    Returns:
        A DataFrame indexed by measure name with one string column per model, headed by its
        name (`Run.label`).
    """
    table: dict[str, dict[str, str]] = {}
    for _, r in frame.iterrows():
        col = {"accuracy": f"{r.get('accuracy', math.nan):.3f}",
               "accuracy 95% CI": format_ci(r.get("accuracy_ci_low"), r.get("accuracy_ci_high")),
               "loss": f"{r.get('loss', math.nan):.3f}",
               "ROC AUC": f"{r.get('roc_auc', math.nan):.3f}",
               "ROC AUC 95% CI": format_ci(r.get("roc_auc_ci_low"), r.get("roc_auc_ci_high"))}
        for cls in ("negative", "positive"):
            for m in ("precision", "recall", "f1"):
                col[f"{m} ({cls})"] = f"{r.get(f'{m}_{cls}', math.nan):.3f}"
        col.update({"n": f"{int(r['n']):,}", "split": str(r["split"]),
                    "data source": str(r["data"]), "model": str(r["model"])})
        table[r["name"]] = col
    return pd.DataFrame(table)


def shared_figures(latest: Mapping[Stage, Run],
                   preds: Mapping[int, pd.DataFrame]) -> dict[int, dict[str, Any]]:
    """Each stage's accuracy on the reviews every stage scored (`trainer.report`'s one rule).

    Args:
        latest: stage -> run (`latest_by_stage`).
        preds: run id -> that run's predictions.

    Returns:
        run id -> n, accuracy, accuracy_ci95, with; empty when the stages share no review.
    """
    from trainer.comparison import shared_accuracies

    return shared_accuracies({run.id: preds[run.id] for run in latest.values()})


def accuracy_tiles(latest: Mapping[Stage, Run],
                   shared: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """The overview's accuracy tiles, each with its n and 95% interval.

    First each stage on the reviews all of them scored (`shared_figures`); then, for a run that
    scored more reviews than those (the baseline scores the whole test split), its own figure.
    Without shared reviews, each run's own figure only.

    Returns:
        One row per tile: row ("same" | "own"), stage, label, accuracy, ci_low, ci_high, n,
        caption (interval and n, as shown under the tile).
    """
    rows = []
    for stage, run in latest.items():
        if run.id in shared:
            found = shared[run.id]
            rows.append(_tile("same", stage, stage.display, found["accuracy"],
                              found["accuracy_ci95"], found["n"],
                              f"the same {found['n']:,} {run.spec.split} reviews"))
    for stage, run in latest.items():
        ev = run.evaluation
        if run.id in shared and shared[run.id]["n"] == ev.n:
            continue
        s = ev.scalars
        label = f"{stage.display}, every review it scored" if shared else stage.display
        rows.append(_tile("own", stage, label, s.get("accuracy"),
                          (s.get("accuracy_ci_low"), s.get("accuracy_ci_high")), ev.n,
                          f"{ev.n:,} {run.spec.split} reviews"))
    return pd.DataFrame(rows, columns=["row", "stage", "label", "accuracy", "ci_low", "ci_high",
                                       "n", "caption"])


def _tile(row: str, stage: Stage, label: str, accuracy: float | None,
          ci: Sequence[float | None], n: int, reviews: str) -> dict[str, Any]:
    interval = format_ci(*ci)
    caption = (f"95% CI {interval}" if interval else "no interval stored") + f" · {reviews}"
    return {"row": row, "stage": stage.value, "label": label,
            "accuracy": math.nan if accuracy is None else accuracy, "ci_low": ci[0],
            "ci_high": ci[1], "n": n, "caption": caption}


def shortfall(latest: Mapping[Stage, Run], shared: Mapping[int, Mapping[str, Any]]) -> str | None:
    """Why the fine-tuned model scores below the baseline on the same reviews, or None
    (`trainer.comparison.shortfall_sentence`)."""
    from trainer.comparison import shortfall_sentence

    base, tuned = latest.get(Stage.BASELINE), latest.get(Stage.FINETUNED)
    if base is None or tuned is None or base.id not in shared or tuned.id not in shared:
        return None
    return shortfall_sentence(tuned, shared[base.id]["accuracy"], shared[tuned.id]["accuracy"],
                              shared[tuned.id]["n"])


def format_p(p: float) -> str:
    """A p-value as people write it: "p < 0.001" or "p = 0.042"."""
    if math.isnan(p):
        return "p not available"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _instead(after: Stage, before: Stage) -> str:
    return f"the {after.display} instead of the {before.display}"


COMPARISONS = {  # (before, after) -> what changed, as the sentence's subject
    (Stage.PRETRAINED, Stage.FINETUNED): "fine-tuning",
    (Stage.BASELINE, Stage.FINETUNED): _instead(Stage.FINETUNED, Stage.BASELINE),
    (Stage.BASELINE, Stage.PRETRAINED): _instead(Stage.PRETRAINED, Stage.BASELINE),
}


def comparison_sentence(before: str, after: str, acc_before: float, acc_after: float,
                        p: float, n: int, split: str) -> str:
    """One plain sentence, e.g. "fine-tuning raised accuracy from 0.889 to 0.931, p < 0.001,
    on 25,000 test reviews."
    """
    subject = COMPARISONS.get((before, after), f"{after} instead of {before}")
    a, b = round(acc_before, 3), round(acc_after, 3)
    verb = "raised" if b > a else "lowered" if b < a else "left"
    change = f"accuracy at {a:.3f}" if verb == "left" else f"accuracy from {a:.3f} to {b:.3f}"
    caveat = "" if p < 0.05 else " (a difference chance alone could explain)"
    sentence = f"{subject} {verb} {change}, {format_p(p)}, on {n:,} {split} reviews{caveat}."
    return sentence[0].upper() + sentence[1:]


_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: str) -> str:
    """Backslash-escape every ASCII punctuation mark and collapse whitespace, so that user text
    shown through st.markdown is plain text: no HTML, links, directives, LaTeX or headings."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", text))


_CODE = re.compile(r"`([^`]*)`")
_PLAIN_CODE = re.compile(r"[A-Za-z0-9 ._=/:+,-]+")  # a command or option: nothing to escape


def markdown_with_code(text: str) -> str:
    """Text for st.markdown and alerts with its `backticked` commands shown as code and all else
    as plain text (`escape_markdown`). A backticked part with other characters (a hostile model
    name) is escaped like the rest, so no markup can get through."""
    parts, pos = [], 0
    for match in _CODE.finditer(text):
        code = match.group(1)
        if not _PLAIN_CODE.fullmatch(code):
            continue
        parts += [escape_markdown(text[pos:match.start()]), f"`{code}`"]
        pos = match.end()
    parts.append(escape_markdown(text[pos:]))
    return "".join(parts)


# ---------------------------------------------------------------- evaluation


def confusion_frame(confusion: Sequence[Sequence[int]]) -> pd.DataFrame:
    """[[tn, fp], [fn, tp]] as long rows: true, predicted, count, share of the true class."""
    names = ("negative", "positive")
    rows = []
    for i, true in enumerate(names):
        total = sum(confusion[i])
        for j, pred in enumerate(names):
            count = int(confusion[i][j])
            rows.append({"true": true, "predicted": pred, "count": count,
                         "share": count / total if total else 0.0})
    return pd.DataFrame(rows)


def per_class_frame(per_class: Mapping[str, ClassMetrics]) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support, one row per class."""
    return pd.DataFrame([{"class": name, "precision": m.precision, "recall": m.recall,
                          "f1": m.f1, "support": m.support} for name, m in per_class.items()])


def curve_frame(curve: Curve, model: str, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """A stored curve as rows x, y, w, model, thinned to at most max_points (ends kept)."""
    frame = pd.DataFrame({"x": curve.x, "y": curve.y, "w": curve.w})
    if len(frame) > max_points:
        keep = np.unique(np.linspace(0, len(frame) - 1, max_points).round().astype(int))
        frame = frame.iloc[keep]
    return frame.assign(model=model).reset_index(drop=True)


def curves_frame(runs: Sequence[Run], kind: str) -> pd.DataFrame:
    """One kind of stored curve ("roc", "pr", "calibration") of several runs, one model each."""
    parts = [curve_frame(r.evaluation.curves[kind], r.label) for r in runs
             if kind in r.evaluation.curves]
    if not parts:
        return pd.DataFrame(columns=["x", "y", "w", "model"])
    return pd.concat(parts, ignore_index=True)


def probability_histogram(preds: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """Counts of predicted positive probability per bin and true class (never raw points)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for label, name in ((0, "negative"), (1, "positive")):
        probs = preds.loc[preds["label"] == label, "prob"].dropna().to_numpy()
        counts, _ = np.histogram(probs, bins=edges)
        rows += [{"bin_start": edges[i], "bin_end": edges[i + 1], "true": name,
                  "count": int(c)} for i, c in enumerate(counts)]
    return pd.DataFrame(rows)


def errors_frame(preds: pd.DataFrame, threshold: float, min_length: int = 0,
                 max_length: int | None = None, limit: int | None = 200) -> pd.DataFrame:
    """Misclassified reviews at a threshold, the most confidently wrong first.

    Args:
        preds: review_id, label, prob, text, length.
        threshold: a review is called positive when prob >= threshold.
        min_length, max_length: keep reviews whose length lies in this range.
        limit: at most this many rows (the browser never gets every review); None for all.

    Returns:
        review_id, true, predicted, confidence (probability of the predicted label), length, text
        (its HTML line breaks as newlines, `review_text`).
    """
    wrong = misclassified(preds, threshold, min_length, max_length)
    pred_wrong = (wrong["prob"] >= threshold).astype(int)
    confidence = np.where(pred_wrong == 1, wrong["prob"], 1.0 - wrong["prob"])
    out = pd.DataFrame({"review_id": wrong["review_id"],
                        "true": np.where(wrong["label"] == 1, "positive", "negative"),
                        "predicted": np.where(pred_wrong == 1, "positive", "negative"),
                        "confidence": confidence, "length": wrong["length"],
                        "text": wrong["text"]})
    out = out.sort_values("confidence", ascending=False, kind="stable")
    out = (out if limit is None else out.head(limit)).reset_index(drop=True)
    # only the rows kept: 12,500 IMDB reviews take a second to clean, 200 a few milliseconds
    return out.assign(text=out["text"].map(review_text))


def misclassified(preds: pd.DataFrame, threshold: float, min_length: int = 0,
                  max_length: int | None = None) -> pd.DataFrame:
    """The rows of `preds` wrong at a threshold whose length lies in the range (all of them:
    `len()` of it is the total the error browser names)."""
    preds = preds.dropna(subset=["prob"])
    predicted = (preds["prob"] >= threshold).astype(int)
    wrong = preds[(predicted != preds["label"]) & (preds["length"] >= min_length)]
    return wrong if max_length is None else wrong[wrong["length"] <= max_length]


_BREAK = re.compile(r"\s*<br\s*/?>\s*", re.IGNORECASE)


def review_text(text: Any) -> Any:
    """A review as plain text: IMDB's `<br />` tags become line breaks (shown with st.text,
    never as HTML); anything that is not a string is returned as it is."""
    return _BREAK.sub("\n", text).strip() if isinstance(text, str) else text


def errors_caption(shown: int, total: int) -> str:
    """How many misclassified reviews the browser lists, of how many there are."""
    if total == 0:
        return "No misclassified review in this length range at this threshold."
    more = "" if shown == total else ", the most confidently wrong first"
    return f"{shown:,} of {total:,} misclassified reviews shown{more}."


def stage_comparisons(latest: Mapping[Stage, Run],
                      preds: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """McNemar's test for each pair of stages scored on the same reviews.

    Args:
        latest: stage -> run (`latest_by_stage`).
        preds: run id -> that run's predictions.

    Returns:
        One row per pair: before, after (stage strings), n, accuracy_before, accuracy_after,
        b, c, p_value, sentence (b: reviews only the earlier stage got right; c: only the
        later one).
    """
    from trainer.comparison import paired_mcnemar

    rows = []
    for before, after in COMPARISONS:
        if before not in latest or after not in latest:
            continue
        run_a, run_b = latest[before], latest[after]
        try:
            paired = paired_mcnemar(preds[run_a.id], preds[run_b.id])
        except ValueError:  # scored on different data: nothing to pair
            continue
        if paired is None:
            continue
        test, acc_a, acc_b = paired.test, paired.accuracy_a, paired.accuracy_b
        rows.append({"before": before.value, "after": after.value, "n": paired.n,
                     "accuracy_before": acc_a, "accuracy_after": acc_b, "b": test.b,
                     "c": test.c, "p_value": test.p_value,
                     "sentence": comparison_sentence(before, after, acc_a, acc_b,
                                                     test.p_value, paired.n,
                                                     run_b.spec.split)})
    return pd.DataFrame(rows)


def at_threshold(preds: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Confusion rows and per-class metrics recomputed from stored predictions at a threshold.

    Returns:
        (`confusion_frame` rows, `per_class_frame` rows).
    """
    from trainer.metrics import confusion_at, per_class_at

    scored = preds.dropna(subset=["prob"])
    labels, probs = scored["label"].to_numpy(), scored["prob"].to_numpy()
    return (confusion_frame(confusion_at(labels, probs, threshold)),
            per_class_frame(per_class_at(labels, probs, threshold)))


def class_intervals(confusion: pd.DataFrame, per_class: pd.DataFrame) -> pd.DataFrame:
    """Per-class metrics (`at_threshold`) with each precision's and recall's n and Wilson 95%
    interval: a class's recall is a share of its `support` reviews, its precision a share of
    the `predicted` reviews called that class.

    Returns:
        class, precision, precision 95% CI, predicted, recall, recall 95% CI, support, f1.
    """
    from trainer.metrics import wilson_interval

    rows = []
    for _, r in per_class.iterrows():
        cls = r["class"]
        right = int(confusion.loc[(confusion["true"] == cls) & (confusion["predicted"] == cls),
                                  "count"].sum())
        called = int(confusion.loc[confusion["predicted"] == cls, "count"].sum())
        support = int(confusion.loc[confusion["true"] == cls, "count"].sum())
        rows.append({"class": cls, "precision": r["precision"],
                     "precision 95% CI": format_ci(*wilson_interval(right, called)),
                     "predicted": called, "recall": r["recall"],
                     "recall 95% CI": format_ci(*wilson_interval(right, support)),
                     "support": support, "f1": r["f1"]})
    return pd.DataFrame(rows)


def accuracy_at(preds: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Accuracy of stored predictions at a threshold, with n and Wilson 95% interval
    (`trainer.comparison.accuracy_of`)."""
    from trainer.comparison import accuracy_of

    return accuracy_of(preds, threshold)


def accuracy_sentence(found: Mapping[str, Any], threshold: float, split: str) -> str:
    """E.g. "accuracy 0.873 95% CI [0.851, 0.893] on 1,000 test reviews at threshold 0.50"."""
    if not found["n"]:
        return f"no scored review to measure accuracy at threshold {threshold:.2f}"
    ci = format_ci(*found["accuracy_ci95"])
    return (f"accuracy {found['accuracy']:.3f}{' 95% CI ' + ci if ci else ''} on "
            f"{found['n']:,} {split} reviews at threshold {threshold:.2f}")


def metric_captions(run: Run, preds: pd.DataFrame | None) -> dict[str, str]:
    """What shows under each headline number of the evaluation page: its 95% interval and n.

    Accuracy, ROC AUC and PR AUC carry their stored bootstrap intervals; log loss and Brier,
    means over reviews, get a normal-approximation interval from the stored predictions;
    ECE, a binned statistic, has none.

    Args:
        run: the run shown.
        preds: its stored predictions (review_id, label, prob), or None when it has none.
    """
    s, n = run.evaluation.scalars, f"n = {run.evaluation.n:,}"
    stored = {name: format_ci(s.get(f"{key}_ci_low"), s.get(f"{key}_ci_high"))
              for name, key in (("accuracy", "accuracy"), ("ROC AUC", "roc_auc"),
                                ("PR AUC", "average_precision"))}
    per_review = review_losses(preds) if preds is not None else {}
    computed = {name: format_ci(*mean_interval(values)) for name, values in per_review.items()}
    captions = {}
    for name in ("accuracy", "ROC AUC", "PR AUC", "log loss", "ECE", "Brier"):
        ci = stored.get(name) or computed.get(name)
        none = "no interval (a binned statistic)" if name == "ECE" else "no interval stored"
        captions[name] = f"95% CI {ci} · {n}" if ci else f"{none} · {n}"
    return captions


def review_losses(preds: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each scored review's log loss and squared error (whose means are log loss and Brier)."""
    from trainer.metrics import EPS

    scored = preds.dropna(subset=["prob"])
    y = scored["label"].to_numpy(dtype=float)
    p = np.clip(scored["prob"].to_numpy(dtype=float), EPS, 1 - EPS)
    return {"log loss": -(y * np.log(p) + (1 - y) * np.log1p(-p)), "Brier": (p - y) ** 2}


def mean_interval(values: np.ndarray, z: float = 1.959963984540054) -> tuple[float, float]:
    """Normal-approximation 95% interval of a mean; NaN with fewer than two values."""
    if len(values) < 2:
        return math.nan, math.nan
    half = z * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    mean = float(np.mean(values))
    return mean - half, mean + half


def curve_label(run: Run, n: int | None = None) -> str:
    """A run's name in a chart legend with the reviews its curve was drawn on."""
    n = run.evaluation.n if n is None else n
    return f"{run.label} · {n:,} {run.spec.split} reviews"


def roc_comparison(run: Run, other: Run, preds: pd.DataFrame | None,
                   other_preds: pd.DataFrame | None) -> tuple[pd.DataFrame | None, str]:
    """Two runs' ROC curves, drawn only on the same reviews, and a note saying on which.

    Runs that scored the same reviews keep their stored curves; runs that share only some
    (the baseline's whole test split and a transformer's subset) are redrawn from their stored
    predictions on the shared reviews; runs that share none (a trial's validation reviews and
    a stage's test reviews) are not overlaid.

    Returns:
        (`curves_frame`-like rows with each legend naming its n, or None when refused; the note).
    """
    from trainer.comparison import shared_accuracies

    sizes = (f"{run.label} scored {run.evaluation.n:,} {run.spec.split} reviews, "
             f"{other.label} {other.evaluation.n:,} {other.spec.split} reviews")
    if preds is None or other_preds is None:
        return None, f"Not overlaid: a run has no stored predictions to pair ({sizes})."
    shared = shared_accuracies({run.id: preds, other.id: other_preds})
    if not shared:
        return None, (f"Not overlaid: the two runs share no review ({sizes}), so their curves "
                      "would mix the models with the data they were scored on.")
    n = shared[run.id]["n"]
    if n == run.evaluation.n == other.evaluation.n:
        frame = pd.concat([curve_frame(r.evaluation.curves["roc"], curve_label(r))
                           for r in (run, other)], ignore_index=True)
        return frame, f"Both curves are on the same {n:,} {run.spec.split} reviews."
    ids = set(preds.dropna(subset=["prob"])["review_id"]) & \
        set(other_preds.dropna(subset=["prob"])["review_id"])
    frame = pd.concat([shared_roc(p, ids, curve_label(r, n))
                       for r, p in ((run, preds), (other, other_preds))], ignore_index=True)
    return frame, (f"Both curves redrawn on the {n:,} {run.spec.split} reviews both runs "
                   f"scored ({sizes}).")


def shared_roc(preds: pd.DataFrame, ids: set[str], model: str) -> pd.DataFrame:
    """The ROC curve of a run's stored predictions on the reviews `ids`, as `curve_frame` rows."""
    from trainer.metrics import roc_curve

    kept = preds[preds["review_id"].isin(ids)].dropna(subset=["prob"])
    return curve_frame(roc_curve(kept["label"].to_numpy(), kept["prob"].to_numpy()), model)


def step_auc(curve: Curve) -> float:
    """Area under a stored precision-recall curve: the sum of Δrecall × precision."""
    x, y = np.asarray(curve.x, dtype=float), np.asarray(curve.y, dtype=float)
    if x.size < 2:
        return math.nan
    return float(np.sum(np.diff(x) * y[1:]))


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def pr_auc_cell(scalars: Mapping[str, float], curves: Mapping[str, Curve]) -> tuple[float, str]:
    """The PR AUC shown for a run, and a help text saying where it comes from.

    Args:
        scalars: the run's stored scalars.
        curves: the run's stored curves.

    Returns:
        (the stored average precision, exact; or, for a run stored before evaluate measured it,
        the area under the stored, downsampled PR curve; help text naming which).
    """
    if "average_precision" in scalars:
        ci = format_ci(scalars.get("average_precision_ci_low"),
                       scalars.get("average_precision_ci_high"))
        return scalars["average_precision"], "average precision" + (f", 95% CI {ci}" if ci else "")
    area = step_auc(curves["pr"]) if "pr" in curves else math.nan
    return area, "average precision, approximated from the stored curve (an older run)"


def metric_cells(run: Run) -> list[tuple[str, str, str | None]]:
    """The evaluation page's headline numbers: (name, value shown, help text)."""
    s, curves = run.evaluation.scalars, run.evaluation.curves
    acc_ci = format_ci(s.get("accuracy_ci_low"), s.get("accuracy_ci_high"))
    auc_ci = format_ci(s.get("roc_auc_ci_low"), s.get("roc_auc_ci_high"))
    pr_auc, pr_help = pr_auc_cell(s, curves)
    return [("accuracy", _fmt(s.get("accuracy")), f"95% CI {acc_ci}" if acc_ci else None),
            ("ROC AUC", _fmt(s.get("roc_auc")), f"95% CI {auc_ci}" if auc_ci else None),
            ("PR AUC", _fmt(pr_auc), pr_help),
            ("log loss", _fmt(s.get("loss")), None),
            ("ECE", _fmt(s.get("ece")), "expected calibration error"),
            ("Brier", _fmt(s.get("brier")), "mean squared error of the probabilities")]


# Cells a spreadsheet would run as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads these as a formula


def safe_csv(frame: pd.DataFrame) -> str:
    """The frame as CSV for download, every text cell that a spreadsheet would run as a formula
    prefixed with a single quote (OWASP "CSV injection"); numeric columns are written as they are.

    Lines end in CRLF (RFC 4180), so a cell holding a lone carriage return is quoted too: with
    pandas' default LF it is not, and a spreadsheet would start a new row, and a formula, there.

    Args:
        frame: batch results, or any table (left unchanged: the page shows the cells as they are).

    Returns:
        The CSV text, header included, without the index.
    """
    out = frame.copy()
    for name in out.select_dtypes(exclude="number").columns:
        out[name] = out[name].map(_inert)
    return out.to_csv(index=False, lineterminator="\r\n")


def _inert(cell: Any) -> Any:
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell
