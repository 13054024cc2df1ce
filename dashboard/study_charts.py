"""Altair charts of an Optuna study, drawn from the DataFrames that `study_views` prepares."""
from __future__ import annotations

import json

import altair as alt
import pandas as pd

from dashboard.charts import STATE_COLORS
from dashboard.study_views import category_order

BRUSH = "brush"  # the parallel-coordinates interval selection, as Streamlit returns it
OTHERS_GREY = "#9e9e9e"


def trial_x(title: str = "trial") -> alt.X:
    """A trial-number axis: whole numbers only, no padding into negative trials."""
    return alt.X("number:Q", title=title, axis=alt.Axis(format="d", tickMinStep=1),
                 scale=alt.Scale(zero=False, nice=False, padding=8))


def legend(title: str | None = None) -> alt.Legend:
    """A legend whose labels are never cut (on the right: Streamlit fits a chart's height
    to its plot and a bottom legend together, which squashed the plot)."""
    return alt.Legend(title=title, labelLimit=0)


def history_chart(frame: pd.DataFrame, pruned: pd.DataFrame | None = None,
                  objective: str = "objective") -> alt.LayerChart:
    """Optimisation history: complete trials (circles), pruned ones at their last reported value
    (crosses), and the best-so-far line."""
    points = pd.concat([frame[["number", "value", "state"]], pruned[["number", "value", "state"]]],
                       ignore_index=True) if pruned is not None and len(pruned) else frame
    dots = alt.Chart(points).mark_point(size=40, filled=True, opacity=0.7).encode(
        x=trial_x(), y=alt.Y("value:Q", title=objective, scale=alt.Scale(zero=False)),
        color=alt.Color("state:N", scale=STATE_COLORS, legend=legend("state")),
        shape=alt.Shape("state:N", scale=alt.Scale(domain=["COMPLETE", "PRUNED"],
                                                   range=["circle", "cross"]), legend=None),
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"), "state:N",
                 alt.Tooltip("value:Q", format=".4f")])
    best = alt.Chart(frame).mark_line(interpolate="step-after", color="#d62728").encode(
        x="number:Q", y="best:Q", tooltip=[alt.Tooltip("best:Q", format=".4f")])
    return (dots + best).properties(
        title="optimisation history (red: best so far; crosses: pruned, at their last value)",
        height=300)


def intermediate_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Per-epoch values: every trial as a thin grey line, the best few in colour."""
    base = alt.Chart(frame).encode(
        x=alt.X("step:Q", title="epoch", axis=alt.Axis(format="d", tickMinStep=1),
                scale=alt.Scale(nice=False)),
        y=alt.Y("value:Q", title="intermediate value", scale=alt.Scale(zero=False)),
        detail="number:N",
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"),
                 alt.Tooltip("step:Q", title="epoch", format="d"),
                 alt.Tooltip("value:Q", format=".4f"), "state:N"])
    others = base.transform_filter(alt.datum.group == "other").mark_line(
        color=OTHERS_GREY, opacity=0.15, strokeWidth=1)
    best = base.transform_filter(alt.datum.group != "other").mark_line(
        point=True, strokeWidth=2.5).encode(color=alt.Color("group:N", legend=legend("best")))
    return (others + best).properties(
        title="intermediate values per epoch (grey: every trial; colour: the best)", height=300)


def importance_chart(frame: pd.DataFrame, target: str) -> alt.Chart:
    """Horizontal bars of hyperparameter importance (`study_views.importance_frame`)."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("importance:Q", title=f"importance for {target}"),
        y=alt.Y("param:N", sort="-x", title=None, axis=alt.Axis(labelLimit=0)),
        tooltip=["param:N", alt.Tooltip("importance:Q", format=".3f")],
    ).properties(title="hyperparameter importance")


def parallel_chart(frame: pd.DataFrame, ticks: pd.DataFrame,
                   objective: str = "objective") -> alt.LayerChart:
    """Parallel coordinates: one line per complete trial across the hyperparameter axes and an
    objective axis, each axis printing its own values; drag a box to brush (select) trials."""
    names = frame.drop_duplicates("index").sort_values("index")["axis"].tolist()
    x = alt.X("index:Q", title=None, scale=alt.Scale(domain=[-0.2, len(names) - 0.8], nice=False),
              axis=alt.Axis(values=list(range(len(names))), grid=True, labelAngle=0,
                            labelLimit=0, labelOverlap=False,
                            labelExpr=f"{json.dumps(names)}[datum.value]"))
    y = alt.Y("position:Q", title=None, axis=None, scale=alt.Scale(domain=[0, 1]))
    brush = alt.selection_interval(name=BRUSH, encodings=["x", "y"])
    lines = alt.Chart(frame).mark_line(opacity=0.4, strokeWidth=1).encode(
        x=x, y=y, detail="number:N",
        color=alt.Color("value:Q", title=objective, scale=alt.Scale(scheme="viridis")),
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"), "axis:N",
                 alt.Tooltip("label:N", title="value on this axis"),
                 alt.Tooltip("value:Q", title=objective, format=".4f")],
    ).add_params(brush)
    labels = alt.Chart(ticks).mark_text(align="left", dx=4, fontSize=11).encode(
        x="index:Q", y="position:Q", text="label:N")
    return (lines + labels).properties(
        title="parallel coordinates (drag a box over axes to select trials)", height=340)


def slices_chart(frame: pd.DataFrame, objective: str = "objective") -> alt.ConcatChart:
    """Slice plots: each hyperparameter (`study_views.slices_frame`) against the objective, one
    panel each, on the axis its distribution calls for (log, whole numbers or categories)."""
    panels = [_slice(group, param, str(group["kind"].iloc[0]), objective)
              for param, group in frame.groupby("param", sort=False)]
    return alt.concat(*panels, columns=3).properties(title="slice plots")


def _slice(frame: pd.DataFrame, param: str, kind: str, objective: str) -> alt.Chart:
    return alt.Chart(frame).mark_circle(size=25, opacity=0.6).encode(
        x=param_x("x", "label", param, kind, frame["label"]),
        y=alt.Y("value:Q", title=objective, scale=alt.Scale(zero=False)),
        color=alt.Color("number:Q", title="trial", scale=alt.Scale(scheme="blues"),
                        legend=alt.Legend(format="d")),
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"),
                 alt.Tooltip("label:N", title=param), alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=220, height=180)


def param_x(field: str, label: str, title: str, kind: str, labels: pd.Series,
            channel: type = alt.X) -> alt.X | alt.Y:
    """A parameter's position channel: log scale, whole-number ticks, categories or linear."""
    if kind == "categorical":
        return channel(f"{label}:N", title=title, sort=category_order(labels),
                       axis=alt.Axis(labelAngle=0, labelLimit=0))
    if kind == "log":
        return channel(f"{field}:Q", title=f"{title} (log scale)",
                       scale=alt.Scale(type="log", zero=False, nice=False),
                       axis=alt.Axis(format=".2~e", labelOverlap="greedy", labelSeparation=6,
                                     tickCount=5))
    axis = alt.Axis(format="d", tickMinStep=1) if kind == "int" \
        else alt.Axis(labelOverlap="greedy", labelSeparation=6)
    return channel(f"{field}:Q", title=title, scale=alt.Scale(zero=False), axis=axis)


def contour_chart(frame: pd.DataFrame, x: tuple[str, str], y: tuple[str, str],
                  objective: str = "objective") -> alt.LayerChart:
    """Two hyperparameters against the objective (`study_views.contour_frame`): cells coloured
    by the mean objective of their trials, each trial a point. x, y: (readable name, kind)."""
    x_kind, y_kind = (_cell_kind(frame, a, k) for a, k in (("x", x[1]), ("y", y[1])))
    cells = alt.Chart(frame).mark_rect(opacity=0.85).encode(
        color=alt.Color("mean(value):Q", title=f"mean {objective}",
                        scale=alt.Scale(scheme="viridis")),
        tooltip=[alt.Tooltip("x_bin:N", title=x[0]), alt.Tooltip("y_bin:N", title=y[0]),
                 alt.Tooltip("mean(value):Q", title=f"mean {objective}", format=".4f"),
                 alt.Tooltip("count():Q", title="trials")],
        **_cell_edges("x", x_kind, frame), **_cell_edges("y", y_kind, frame))
    points = alt.Chart(frame).mark_point(color="white", size=18, filled=True, opacity=0.8,
                                         stroke="black", strokeWidth=0.5).encode(
        x=param_x("x", "x_label", x[0], x_kind, frame["x_label"]),
        y=param_x("y", "y_label", y[0], y_kind, frame["y_label"], alt.Y),
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"),
                 alt.Tooltip("x_label:N", title=x[0]), alt.Tooltip("y_label:N", title=y[0]),
                 alt.Tooltip("value:Q", title=objective, format=".4f")])
    return (cells + points).properties(title=f"contour: {objective} over {x[0]} and {y[0]}",
                                       height=360)


def _cell_kind(frame: pd.DataFrame, axis: str, kind: str) -> str:
    # An axis of a few values (categories, whole numbers) has one cell per value: a band axis.
    return "categorical" if frame[f"{axis}_lo"].isna().all() else kind


def _cell_edges(axis: str, kind: str, frame: pd.DataFrame) -> dict:
    channel, second = (alt.X, alt.X2) if axis == "x" else (alt.Y, alt.Y2)
    if kind == "categorical":
        return {axis: channel(f"{axis}_label:N", sort=category_order(frame[f"{axis}_label"]))}
    scale = alt.Scale(type="log", nice=False) if kind == "log" else alt.Scale(zero=False)
    return {axis: channel(f"{axis}_lo:Q", scale=scale), f"{axis}2": second(f"{axis}_hi:Q")}


def edf_chart(frame: pd.DataFrame, objective: str = "objective") -> alt.Chart:
    """Empirical distribution of the objective: the share of complete trials at or below each
    value."""
    return alt.Chart(frame).mark_line(interpolate="step-after").encode(
        x=alt.X("value:Q", title=objective, scale=alt.Scale(zero=False)),
        y=alt.Y("fraction:Q", title="share of complete trials ≤ value",
                axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("fraction:Q", format=".1%"),
                 alt.Tooltip("number:Q", title="trial", format="d")],
    ).properties(title="empirical distribution (EDF) of the objective", height=280)


def timeline_chart(frame: pd.DataFrame) -> alt.Chart:
    """When each trial ran: a bar from start to end (now, while running), coloured by state,
    one row per worker where the study recorded them, else one per trial."""
    by_worker = bool((frame["worker"] != "").any()) if "worker" in frame else False
    rows = frame["worker"].nunique() if by_worker else len(frame)
    width = max(1.0, min(8.0, 240 / max(rows, 1)))  # bars as thick as rows allow
    y = alt.Y("worker:N", title="worker (host:process)", axis=alt.Axis(labelLimit=0)) \
        if by_worker else \
        alt.Y("number:Q", title="trial", axis=alt.Axis(format="d", tickMinStep=1),
              scale=alt.Scale(zero=False, nice=False, padding=4, reverse=True))
    return alt.Chart(frame).mark_rule(strokeWidth=width, clip=True).encode(
        x=alt.X("start:T", title="time", axis=alt.Axis(format="%b %d %H:%M", labelAngle=0),
                scale=alt.Scale(domain=_time_span(frame))),
        x2="end:T",
        y=y,
        color=alt.Color("state:N", scale=STATE_COLORS, legend=legend("state")),
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"), "state:N",
                 *(["worker:N"] if by_worker else []),
                 alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S"),
                 alt.Tooltip("end:T", format="%Y-%m-%d %H:%M:%S")],
    ).properties(title="timeline of trials", height=320)


def _time_span(frame: pd.DataFrame) -> list[alt.DateTime]:
    # Up to the last start or end recorded: a trial left RUNNING for months (its worker gone)
    # runs off the right edge instead of squeezing every other trial into a sliver.
    finished = frame.loc[frame["state"] != "RUNNING", "end"]
    low = frame["start"].min()
    high = max(frame["start"].max(), finished.max() if len(finished) else low)
    ends = [low, high + (high - low) * 0.05]  # room for the latest start to show
    return [alt.DateTime(year=t.year, month=t.month, date=t.day, hours=t.hour,
                         minutes=t.minute, seconds=t.second) for t in ends]


def duration_chart(frame: pd.DataFrame) -> alt.Chart:
    """Wall time of each finished trial, coloured by state."""
    return alt.Chart(frame).mark_point(filled=True, size=30, opacity=0.7).encode(
        x=trial_x(), y=alt.Y("duration_s:Q", title="duration (s)"),
        color=alt.Color("state:N", scale=STATE_COLORS, legend=legend("state")),
        tooltip=[alt.Tooltip("number:Q", title="trial", format="d"), "state:N",
                 alt.Tooltip("duration_s:Q", title="duration (s)", format=".1f")],
    ).properties(title="time per trial", height=250)
