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
                 max_length: int | None = None, limit: int = 200) -> pd.DataFrame:
    """Misclassified reviews at a threshold, the most confidently wrong first.

    Args:
        preds: review_id, label, prob, text, length.
        threshold: a review is called positive when prob >= threshold.
        min_length, max_length: keep reviews whose length lies in this range.
        limit: at most this many rows (the browser never gets every review).

    Returns:
        review_id, true, predicted, confidence (probability of the predicted label), length, text.
    """
    preds = preds.dropna(subset=["prob"])
    predicted = (preds["prob"] >= threshold).astype(int)
    wrong = preds[(predicted != preds["label"]) & (preds["length"] >= min_length)]
    if max_length is not None:
        wrong = wrong[wrong["length"] <= max_length]
    pred_wrong = (wrong["prob"] >= threshold).astype(int)
    confidence = np.where(pred_wrong == 1, wrong["prob"], 1.0 - wrong["prob"])
    out = pd.DataFrame({"review_id": wrong["review_id"],
                        "true": np.where(wrong["label"] == 1, "positive", "negative"),
                        "predicted": np.where(pred_wrong == 1, "positive", "negative"),
                        "confidence": confidence, "length": wrong["length"],
                        "text": wrong["text"]})
    return out.sort_values("confidence", ascending=False, kind="stable").head(limit) \
        .reset_index(drop=True)


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
    from trainer.report import paired_mcnemar

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
