"""Pure data preparation for the study explorer: Optuna trials in, DataFrames out."""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from dashboard.views import LOWER_IS_BETTER
from storage.records import Run
from trainer.metrics import wilson_interval
from trainer.tuning.trials import EPOCH_METRICS, WORKER

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
PARAM_PREFIX = "params_"
MIN_TRIALS_FOR_IMPORTANCE = 20
MAX_LINE_POINTS = 4000
HIGHLIGHTED = 5  # best trials drawn in colour over the grey mass of intermediate values
OBJECTIVE_AXIS = "objective"
PARAM_LABELS = {"learning_rate": "learning rate", "per_device_train_batch_size": "batch size",
                "num_train_epochs": "epochs (planned)", "warmup_ratio": "warmup ratio",
                "weight_decay": "weight decay"}
COLUMN_LABELS = {"number": "trial", "state": "state", "value": "value", "interval": "95% interval",
                 "n": "n (reviews)", "duration_s": "duration (s)", "epochs": "epochs run",
                 "started": "started", "fail_reason": "fail reason"}


def _value(t: FrozenTrial) -> float:
    return float(t.values[0]) if t.values else math.nan


def trials_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: number, state, value, duration_s, epochs, started, completed,
    fail_reason, worker ("host:pid", empty for trials stored before workers were recorded),
    params_*.

    Args:
        trials: the study's trials.

    Returns:
        A DataFrame sorted by trial number (empty with the fixed columns when there are none).
    """
    rows = []
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        rows.append({"number": t.number, "state": t.state.name, "value": _value(t),
                     "duration_s": duration, "epochs": len(t.intermediate_values),
                     "started": t.datetime_start, "completed": t.datetime_complete,
                     "fail_reason": str(t.user_attrs.get("fail_reason", "") or ""),
                     "worker": str(t.user_attrs.get(WORKER, "") or ""),
                     **{PARAM_PREFIX + k: v for k, v in t.params.items()}})
    fixed = ["number", "state", "value", "duration_s", "epochs", "started", "completed",
             "fail_reason", "worker"]
    frame = pd.DataFrame(rows, columns=fixed + sorted({c for r in rows for c in r} - set(fixed)))
    return frame.sort_values("number", kind="stable").reset_index(drop=True)


def param_names(table: pd.DataFrame) -> list[str]:
    """The hyperparameter names in a trials table."""
    return [c[len(PARAM_PREFIX):] for c in table.columns if c.startswith(PARAM_PREFIX)]


def param_kinds(trials: Sequence[FrozenTrial]) -> dict[str, str]:
    """Each hyperparameter's scale: "log", "linear", "int" (whole steps) or "categorical"."""
    kinds: dict[str, str] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                kinds[name] = "categorical"
            elif isinstance(dist, FloatDistribution | IntDistribution):
                whole = isinstance(dist, IntDistribution)
                kinds[name] = "log" if dist.log else "int" if whole else "linear"
    return kinds


def state_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many trials are in each state (every state listed, zeros included)."""
    counts = table["state"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATES}


def filter_trials(table: pd.DataFrame, states: Sequence[str]) -> pd.DataFrame:
    """Only the trials in the given states."""
    return table[table["state"].isin(list(states))].reset_index(drop=True)


def sort_trials(table: pd.DataFrame, by: str, descending: bool = False) -> pd.DataFrame:
    """Trials sorted by a column, missing values last."""
    return table.sort_values(by, ascending=not descending, na_position="last", kind="stable") \
        .reset_index(drop=True)


def sig(value: object, digits: int = 3) -> str:
    """A number at `digits` significant digits (1.78e-05, 0.0923, 16); other values as text."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "–" if math.isnan(value) else f"{value:.{digits}g}"


def param_label(name: str) -> str:
    """A hyperparameter's readable name ("batch size" for per_device_train_batch_size)."""
    return PARAM_LABELS.get(name, name.replace("_", " "))


def trial_intervals(trials: Sequence[FrozenTrial], runs: Mapping[int, Run]) -> pd.DataFrame:
    """Each finished value's evidence: number, n (validation reviews), ci_low, ci_high.

    The interval is the trial's own (its last epoch's bootstrap, in user attrs or its stored
    run); without one, Wilson's interval of the accuracy on n reviews. n comes from the trial's
    stored run; a trial without one has n and interval missing (NaN).
    """
    rows = []
    for t in trials:
        value, run = _value(t), runs.get(t.number)
        n = run.evaluation.n if run is not None else math.nan
        low, high = _stored_interval(t, run, value)
        if math.isnan(low) and not (math.isnan(value) or math.isnan(n)) and 0 <= value <= 1:
            low, high = wilson_interval(round(value * n), int(n))
        rows.append({"number": t.number, "n": n, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["number", "n", "ci_low", "ci_high"])


def _stored_interval(t: FrozenTrial, run: Run | None, value: float) -> tuple[float, float]:
    epochs = t.user_attrs.get(EPOCH_METRICS) or []
    sources = [epochs[-1] if isinstance(epochs[-1], dict) else {}] if epochs else []
    if run is not None:
        sources.append(run.evaluation.scalars)
    for scalars in sources:  # only an interval around this very value counts
        low, high = scalars.get("accuracy_ci_low"), scalars.get("accuracy_ci_high")
        same = _finite(scalars.get("accuracy")) and math.isclose(scalars["accuracy"], value)
        if same and _finite(low) and _finite(high):
            return float(low), float(high)
    return math.nan, math.nan


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def with_intervals(table: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """The trials table with n, ci_low and ci_high columns (NaN where unknown)."""
    return table.merge(intervals, on="number", how="left") if not table.empty \
        else table.assign(n=math.nan, ci_low=math.nan, ci_high=math.nan)


def interval_text(low: float, high: float) -> str:
    """ "0.602–0.648", or "–" when the interval is unknown."""
    return "–" if pd.isna(low) or pd.isna(high) else f"{low:.3f}–{high:.3f}"


def best_summary(table: pd.DataFrame, direction: str) -> str | None:
    """One line on the best trial with its n and 95% interval, or None when none finished."""
    best = best_number(table, direction)
    if best is None:
        return None
    row = table[table["number"] == best].iloc[0]
    line = f"Best: trial {best}, value {row['value']:.4f}"
    if "n" in row and pd.notna(row["n"]):
        line += f" on {int(row['n']):,} validation reviews"
    if "ci_low" in row and pd.notna(row["ci_low"]):
        line += f", 95% interval {interval_text(row['ci_low'], row['ci_high'])}"
    return line + "."


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The trials table as shown: readable column names, value with n and 95% interval,
    hyperparameters at three significant digits (as text, so 1.78e-05 never reads 0.00002).
    """
    shown = table.copy()
    if "ci_low" in shown:
        shown["interval"] = [interval_text(lo, hi) for lo, hi in
                             zip(shown["ci_low"], shown["ci_high"], strict=True)]
        shown["n"] = shown["n"].astype("Int64")
    params = [c for c in shown.columns if c.startswith(PARAM_PREFIX)]
    head = [c for c in ("number", "state", "value", "interval", "n") if c in shown]
    tail = [c for c in COLUMN_LABELS if c in shown and c not in head]
    for c in params:
        shown[c] = shown[c].map(lambda v: "" if v is None or (isinstance(v, float)
                                                              and math.isnan(v)) else sig(v))
    labels = {**COLUMN_LABELS, **{c: param_label(c[len(PARAM_PREFIX):]) for c in params}}
    return shown[head + params + tail].rename(columns=labels)  # the long texts last


def history_frame(table: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Finished trials' values with the best value so far: number, value, state, best."""
    done = table[table["state"] == "COMPLETE"][["number", "value", "state"]]
    done = done.sort_values("number").reset_index(drop=True)
    running = done["value"].cummin() if direction == "minimize" else done["value"].cummax()
    return done.assign(best=running)


def pruned_frame(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """Pruned trials at the last value they reported: number, value, state, epoch."""
    rows = [{"number": t.number, "value": float(t.intermediate_values[last]), "state": "PRUNED",
             "epoch": int(last)}
            for t in trials if t.state.name == "PRUNED" and t.intermediate_values
            for last in [max(t.intermediate_values)]]
    return pd.DataFrame(rows, columns=["number", "value", "state", "epoch"])


def best_number(table: pd.DataFrame, direction: str) -> int | None:
    """The number of the best complete trial, or None when none finished."""
    done = table[(table["state"] == "COMPLETE") & table["value"].notna()]
    if done.empty:
        return None
    row = done["value"].idxmin() if direction == "minimize" else done["value"].idxmax()
    return int(done.loc[row, "number"])


def best_numbers(trials: Sequence[FrozenTrial], direction: str, k: int) -> list[int]:
    """The k best complete trials' numbers, best first."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    done.sort(key=lambda t: _value(t), reverse=direction != "minimize")
    return [t.number for t in done[:k]]


def intermediate_frame(trials: Sequence[FrozenTrial], direction: str = "maximize",
                       max_points: int = MAX_LINE_POINTS,
                       highlighted: int = HIGHLIGHTED) -> pd.DataFrame:
    """Per-epoch values of every trial that reported any: number, step, value, state, group.

    `group` names the `highlighted` best complete trials ("trial 7 (best 1)") and is "other"
    for the rest. When there are more than max_points values, the other trials are thinned
    evenly (whole trials, never single epochs); the best ones are always kept.
    """
    best = best_numbers(trials, direction, highlighted)
    groups = {n: f"trial {n} (best {i + 1})" for i, n in enumerate(best)}
    reported = [t for t in trials if t.intermediate_values]
    total = sum(len(t.intermediate_values) for t in reported)
    if total > max_points:
        keep = max(1, math.ceil(total / max_points))
        reported = [t for i, t in enumerate(reported) if t.number in groups or i % keep == 0]
    rows = [{"number": t.number, "step": int(step), "value": float(v), "state": t.state.name,
             "group": groups.get(t.number, "other")}
            for t in reported for step, v in sorted(t.intermediate_values.items())]
    return pd.DataFrame(rows, columns=["number", "step", "value", "state", "group"])


def parallel_frame(table: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Complete trials as long rows for parallel coordinates:
    number, axis, index (the axis's place, 0 first), position, label, value.

    One axis per hyperparameter (readable name) and a last one for the objective. Each is
    rescaled to [0, 1] (log ones on a log scale, categories evenly spaced) so the axes share one
    scale; `label` keeps the raw value at three significant digits.
    """
    done = table[table["state"] == "COMPLETE"]
    axes = [(param_label(n), done[PARAM_PREFIX + n], kinds.get(n, "linear"))
            for n in param_names(table)]
    if not axes:
        return pd.DataFrame(columns=["number", "axis", "index", "position", "label", "value"])
    axes.append((OBJECTIVE_AXIS, done["value"], "linear"))
    parts = [pd.DataFrame({"number": done["number"], "axis": axis, "index": i,
                           "position": _unit_scale(raw, kind), "label": raw.map(sig),
                           "value": done["value"]})
             for i, (axis, raw, kind) in enumerate(axes)]
    return pd.concat(parts, ignore_index=True).dropna(subset=["position"])


def parallel_ticks(frame: pd.DataFrame) -> pd.DataFrame:
    """Values to print along each parallel axis: axis, index, position, label.

    Every category (or whole number) when an axis has at most six; else its lowest, middle
    and highest value.
    """
    rows = []
    for (axis, index), group in frame.groupby(["axis", "index"], sort=False):
        marks = group.drop_duplicates("position").sort_values("position")
        if len(marks) > 6:
            marks = marks.iloc[[0, len(marks) // 2, len(marks) - 1]]
        rows += [{"axis": axis, "index": index, "position": p, "label": lab}
                 for p, lab in zip(marks["position"], marks["label"], strict=True)]
    return pd.DataFrame(rows, columns=["axis", "index", "position", "label"])


def brushed_numbers(frame: pd.DataFrame, brush: Mapping[str, object]) -> list[int] | None:
    """The trials inside a parallel-coordinates brush, or None when nothing is brushed.

    Args:
        frame: `parallel_frame` rows.
        brush: the interval selection as Streamlit returns it: {"index": [low, high] (axes
            covered), "position": [low, high] (the scaled range)}; a missing one spans all.

    Returns:
        Numbers of the trials within the brushed range on every axis the brush covers (none
        when it covers no axis).
    """
    if not brush:
        return None
    first, last = _span(brush.get("index"), -math.inf, math.inf)
    low, high = _span(brush.get("position"), 0.0, 1.0)
    covered = frame[frame["index"].between(first, last)]
    inside = covered[covered["position"].between(low, high)]
    hits = inside.groupby("number")["index"].nunique()
    return sorted(int(n) for n in hits[hits == covered["index"].nunique()].index)


def _span(pair: object, low: float, high: float) -> tuple[float, float]:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return low, high
    return float(min(pair)), float(max(pair))


def _unit_scale(raw: pd.Series, kind: str) -> pd.Series:
    if kind == "categorical" or not pd.api.types.is_numeric_dtype(raw):
        levels = raw.dropna().unique().tolist()
        numeric = all(isinstance(v, int | float) for v in levels)
        levels = sorted(levels, key=lambda v: v if numeric else str(v))
        if len(levels) < 2:
            return raw.where(raw.isna(), 0.5).astype(float)
        return raw.map({v: i / (len(levels) - 1) for i, v in enumerate(levels)})
    values = np.log10(raw.astype(float).where(raw > 0)) if kind == "log" else raw.astype(float)
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else values * 0 + 0.5


def slices_frame(table: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Each hyperparameter against the objective for complete trials, as long rows:
    number, param (readable name), kind, x (the raw value, NaN for a non-numeric category),
    label (three significant digits), value. Each panel picks its axis from `kind`.
    """
    done = table[table["state"] == "COMPLETE"]
    parts = []
    for name in param_names(table):
        raw = done[PARAM_PREFIX + name]
        numeric = pd.api.types.is_numeric_dtype(raw)
        parts.append(pd.DataFrame({
            "number": done["number"], "param": param_label(name),
            "kind": kinds.get(name, "linear" if numeric else "categorical"),
            "x": raw.astype(float) if numeric else math.nan, "label": raw.map(sig),
            "value": done["value"]}))
    if not parts:
        return pd.DataFrame(columns=["number", "param", "kind", "x", "label", "value"])
    return pd.concat(parts, ignore_index=True).dropna(subset=["label"])


def category_order(labels: pd.Series) -> list[str]:
    """Category labels in their natural order: by number when all are numbers (8, 16, 32)."""
    levels = [str(v) for v in labels.dropna().unique()]
    try:
        return sorted(levels, key=float)
    except ValueError:
        return sorted(levels)


def contour_frame(table: pd.DataFrame, kinds: Mapping[str, str], x: str, y: str,
                  bins: int = 8) -> pd.DataFrame:
    """Complete trials on two hyperparameters, binned for a heatmap of the objective.

    Columns: number, value, then for each of x and y: `<axis>` (raw value), `<axis>_label`
    (text), `<axis>_lo`/`<axis>_hi` (the bin's edges; log-spaced for log parameters, one bin
    per category or whole number when there are at most `bins`), `<axis>_bin` (bin label).
    """
    done = table[table["state"] == "COMPLETE"]
    frame = pd.DataFrame({"number": done["number"], "value": done["value"]})
    for axis, name in (("x", x), ("y", y)):
        raw = done[PARAM_PREFIX + name]
        frame[f"{axis}_label"] = raw.map(sig)
        frame[axis] = raw.astype(float) if pd.api.types.is_numeric_dtype(raw) else math.nan
        low, high = _bin_edges(raw, kinds.get(name, "linear"), bins)
        frame[f"{axis}_lo"], frame[f"{axis}_hi"] = low, high
        frame[f"{axis}_bin"] = [lab if pd.isna(a) else sig(a) if a == b else f"{sig(a)}–{sig(b)}"
                                for lab, a, b in zip(frame[f"{axis}_label"], low, high,
                                                     strict=True)]
    return frame.dropna(subset=["x_label", "y_label"]).reset_index(drop=True)


def _bin_edges(raw: pd.Series, kind: str, bins: int) -> tuple[list, list]:
    if kind == "categorical" or not pd.api.types.is_numeric_dtype(raw):
        return [math.nan] * len(raw), [math.nan] * len(raw)
    values = raw.astype(float).to_numpy()
    distinct = np.unique(values[np.isfinite(values)])
    if len(distinct) <= bins:  # one cell per value, drawn as a category
        return [math.nan] * len(raw), [math.nan] * len(raw)
    log = kind == "log" and distinct[0] > 0
    edges = np.geomspace(distinct[0], distinct[-1], bins + 1) if log \
        else np.linspace(distinct[0], distinct[-1], bins + 1)
    at = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
    return list(edges[at]), list(edges[at + 1])


def edf_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Empirical distribution of complete trials' values: value, fraction (share of trials
    with a value at most this one), number."""
    done = table[(table["state"] == "COMPLETE") & table["value"].notna()]
    done = done.sort_values(["value", "number"], kind="stable")
    fraction = np.arange(1, len(done) + 1) / max(len(done), 1)
    return pd.DataFrame({"value": done["value"].to_numpy(), "fraction": fraction,
                         "number": done["number"].to_numpy()})


def timeline_frame(table: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """When each trial ran: number, state, worker, start, end (`now` while still running).

    Trials that never started (WAITING) are left out.
    """
    started = table[table["started"].notna()]
    end = started["completed"].where(started["completed"].notna(), now)
    return pd.DataFrame({"number": started["number"], "state": started["state"],
                         "worker": started["worker"], "start": pd.to_datetime(started["started"]),
                         "end": pd.to_datetime(end)}).reset_index(drop=True)


@dataclass(frozen=True)
class PruningSavings:
    """Time spent in trials and an estimate of the time pruning saved."""

    total_s: float
    saved_s: float
    n_pruned: int


def pruning_savings(table: pd.DataFrame, epochs_param: str = "num_train_epochs") -> PruningSavings:
    """Estimate the time saved by pruning: each pruned trial would have run its remaining epochs
    at the pace it had (planned epochs from `epochs_param` when tuned, else the most epochs any
    complete trial ran).
    """
    total = float(table["duration_s"].sum(skipna=True))
    pruned = table[(table["state"] == "PRUNED") & (table["epochs"] > 0)]
    done_epochs = table.loc[table["state"] == "COMPLETE", "epochs"]
    fallback = int(done_epochs.max()) if not done_epochs.empty else 0
    column = PARAM_PREFIX + epochs_param
    planned = pruned[column].fillna(fallback) if column in pruned else fallback
    per_epoch = pruned["duration_s"] / pruned["epochs"]
    saved = (per_epoch * (planned - pruned["epochs"]).clip(lower=0)).sum(skipna=True)
    return PruningSavings(total, float(saved), int((table["state"] == "PRUNED").sum()))


def trial_metrics_frame(trial_runs: Mapping[int, Run]) -> pd.DataFrame:
    """Our stored metrics of each trial's validation run: number, scalars, <metric>_<class>."""
    rows = []
    for number, run in sorted(trial_runs.items()):
        ev = run.evaluation
        row = {"number": number, **{k: v for k, v in ev.scalars.items() if "_ci_" not in k}}
        for cls, m in ev.per_class.items():
            row.update({f"precision_{cls}": m.precision, f"recall_{cls}": m.recall,
                        f"f1_{cls}": m.f1})
        rows.append(row)
    return pd.DataFrame(rows)


def metric_direction(metric: str) -> str:
    """ "minimize" for losses and calibration errors, otherwise "maximize"."""
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def importance_frame(importances: Mapping[str, float]) -> pd.DataFrame:
    """Importances as rows param, importance, largest first."""
    frame = pd.DataFrame({"param": list(importances), "importance": list(importances.values())})
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def duration_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Finished trials' wall time: number, state, duration_s."""
    done = table[table["duration_s"].notna()]
    return done[["number", "state", "duration_s"]].reset_index(drop=True)


def target_values(table: pd.DataFrame, metrics: pd.DataFrame, target: str) -> pd.Series:
    """Finite values of an importance target for complete trials, indexed by trial number."""
    done = table[table["state"] == "COMPLETE"]
    if target == "objective":
        values = done.set_index("number")["value"]
    elif target in metrics:
        values = metrics.set_index("number")[target]
        values = values[values.index.isin(done["number"])]
    else:
        return pd.Series(dtype=float)
    values = pd.to_numeric(values, errors="coerce")
    return values[np.isfinite(values)]


IMPORTANCE_TARGETS = ("objective", "accuracy", "loss", "roc_auc", "ece", "brier",
                      *(f"{m}_{c}" for c in ("negative", "positive")
                        for m in ("precision", "recall", "f1")))
