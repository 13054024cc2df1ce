"""Pure data preparation for the study explorer: Optuna trials in, DataFrames out."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

from dashboard.views import LOWER_IS_BETTER
from storage.records import Run

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
PARAM_PREFIX = "params_"
MIN_TRIALS_FOR_IMPORTANCE = 20
MAX_LINE_POINTS = 4000


def _value(t: FrozenTrial) -> float:
    return float(t.values[0]) if t.values else math.nan


def trials_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: number, state, value, duration_s, epochs, started, fail_reason, params_*.

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
                     "started": t.datetime_start,
                     "fail_reason": str(t.user_attrs.get("fail_reason", "") or ""),
                     **{PARAM_PREFIX + k: v for k, v in t.params.items()}})
    fixed = ["number", "state", "value", "duration_s", "epochs", "started", "fail_reason"]
    frame = pd.DataFrame(rows, columns=fixed + sorted({c for r in rows for c in r} - set(fixed)))
    return frame.sort_values("number", kind="stable").reset_index(drop=True)


def param_names(table: pd.DataFrame) -> list[str]:
    """The hyperparameter names in a trials table."""
    return [c[len(PARAM_PREFIX):] for c in table.columns if c.startswith(PARAM_PREFIX)]


def param_kinds(trials: Sequence[FrozenTrial]) -> dict[str, str]:
    """Each hyperparameter's scale: "log", "linear" or "categorical"."""
    kinds: dict[str, str] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                kinds[name] = "categorical"
            elif isinstance(dist, FloatDistribution | IntDistribution):
                kinds[name] = "log" if dist.log else "linear"
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


def history_frame(table: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Finished trials' values with the best value so far: number, value, state, best."""
    done = table[table["state"] == "COMPLETE"][["number", "value", "state"]]
    done = done.sort_values("number").reset_index(drop=True)
    running = done["value"].cummin() if direction == "minimize" else done["value"].cummax()
    return done.assign(best=running)


def best_number(table: pd.DataFrame, direction: str) -> int | None:
    """The number of the best complete trial, or None when none finished."""
    done = table[(table["state"] == "COMPLETE") & table["value"].notna()]
    if done.empty:
        return None
    row = done["value"].idxmin() if direction == "minimize" else done["value"].idxmax()
    return int(done.loc[row, "number"])


def intermediate_frame(trials: Sequence[FrozenTrial],
                       max_points: int = MAX_LINE_POINTS) -> pd.DataFrame:
    """Per-epoch values of every trial that reported any: number, step, value, state.

    When there are more than max_points values, whole trials are thinned evenly (never single
    epochs), so every line shown is complete; the pruned ones stay as visible as the rest.
    """
    reported = [t for t in trials if t.intermediate_values]
    total = sum(len(t.intermediate_values) for t in reported)
    if total > max_points:
        keep = max(1, math.ceil(total / max_points))
        reported = reported[::keep]
    rows = [{"number": t.number, "step": int(step), "value": float(v), "state": t.state.name}
            for t in reported for step, v in sorted(t.intermediate_values.items())]
    return pd.DataFrame(rows, columns=["number", "step", "value", "state"])


def parallel_frame(table: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Complete trials as long rows for parallel coordinates: number, axis, position, label, value.

    Each hyperparameter is rescaled to [0, 1] (log ones on a log scale, categories evenly spaced)
    so the axes share one scale; `label` keeps the raw value for tooltips.
    """
    done = table[table["state"] == "COMPLETE"]
    parts = []
    for name in param_names(table):
        raw = done[PARAM_PREFIX + name]
        position = _unit_scale(raw, kinds.get(name, "linear"))
        parts.append(pd.DataFrame({"number": done["number"], "axis": name, "position": position,
                                   "label": raw.astype(str), "value": done["value"]}))
    if not parts:
        return pd.DataFrame(columns=["number", "axis", "position", "label", "value"])
    return pd.concat(parts, ignore_index=True).dropna(subset=["position"])


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
    number, param (with " (log10)" for log-scaled ones), x (numeric), label (raw value), value.
    """
    done = table[table["state"] == "COMPLETE"]
    parts = []
    for name in param_names(table):
        raw = done[PARAM_PREFIX + name]
        kind = kinds.get(name, "linear")
        if kind == "log":
            x, shown = np.log10(raw.astype(float).where(raw > 0)), f"{name} (log10)"
        elif pd.api.types.is_numeric_dtype(raw):
            x, shown = raw.astype(float), name
        else:
            x, shown = _unit_scale(raw, "categorical"), f"{name} (categories)"
        parts.append(pd.DataFrame({"number": done["number"], "param": shown, "x": x,
                                   "label": raw.astype(str), "value": done["value"]}))
    if not parts:
        return pd.DataFrame(columns=["number", "param", "x", "label", "value"])
    return pd.concat(parts, ignore_index=True).dropna(subset=["x"])


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
