"""Altair charts drawn from the DataFrames that `views` and `study_views` prepare."""
from __future__ import annotations

import altair as alt
import pandas as pd

STATE_COLORS = alt.Scale(domain=["COMPLETE", "PRUNED", "FAIL", "RUNNING"],
                         range=["#1f77b4", "#ff7f0e", "#d62728", "#7f7f7f"])
CLASS_COLORS = alt.Scale(domain=["negative", "positive"], range=["#d62728", "#2ca02c"])
# Legend labels name a run and its n ("fine-tuned model: …, study … (run 9) · 500 test
# reviews"): below the chart, one per line, never cut (labelLimit 0: no limit).
FULL_LEGEND = alt.Legend(orient="bottom", columns=1, labelLimit=0)
CONFUSION_TITLE = "confusion (count, share of true class)"


def confusion_chart(frame: pd.DataFrame) -> alt.Chart:
    """A 2×2 heatmap of `views.confusion_frame`: each cell's count above its share of the true
    class, coloured by that share (one chart, where two cost the browser twice the drawing)."""
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", title="predicted", sort=["negative", "positive"]),
        y=alt.Y("true:N", title="true", sort=["negative", "positive"]))
    cells = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=None),
        tooltip=["true:N", "predicted:N", alt.Tooltip("count:Q", format=",d"),
                 alt.Tooltip("share:Q", format=".1%", title="share of the true class")])
    ink = alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black"))
    counts = base.mark_text(fontSize=16, dy=-9).encode(
        text=alt.Text("count:Q", format=",d"), color=ink)
    shares = base.mark_text(fontSize=12, dy=11).encode(
        text=alt.Text("share:Q", format=".1%"), color=ink)
    return (cells + counts + shares).properties(title=CONFUSION_TITLE, width=260, height=240)


def curves_chart(frame: pd.DataFrame, kind: str) -> alt.Chart:
    """ROC or precision-recall curves (`views.curve_frame` rows, one colour per model); a
    legend only for several models (one model is named beside the chart: a long label in a
    narrow column would be cut)."""
    x_title, y_title = ("false positive rate", "true positive rate") if kind == "roc" \
        else ("recall", "precision")
    legend = FULL_LEGEND if frame["model"].nunique() > 1 else None
    lines = alt.Chart(frame).mark_line().encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("y:Q", title=y_title, scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", title="model", legend=legend),
        order="order:Q",
        tooltip=[alt.Tooltip("x:Q", format=".3f", title=x_title),
                 alt.Tooltip("y:Q", format=".3f", title=y_title),
                 alt.Tooltip("w:Q", format=".3f", title="threshold"), "model:N"])
    lines = lines.transform_window(order="row_number()", groupby=["model"])
    if kind != "roc":
        return lines.properties(title="precision-recall curve", height=300)
    chance = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="x:Q", y="y:Q")
    return (chance + lines).properties(title="ROC curve", height=300)


def calibration_chart(frame: pd.DataFrame) -> alt.Chart:
    """Reliability diagram: mean predicted probability against the observed positive share,
    one point per bin sized by how many reviews fell in it."""
    diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="gray").encode(x="x:Q", y="y:Q")
    base = alt.Chart(frame).encode(
        x=alt.X("x:Q", title="mean predicted probability", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("y:Q", title="fraction positive", scale=alt.Scale(domain=[0, 1])))
    points = base.mark_circle(opacity=0.8).encode(
        size=alt.Size("w:Q", title="reviews in bin", legend=None,
                      scale=alt.Scale(range=[20, 400])),
        tooltip=[alt.Tooltip("x:Q", format=".3f", title="predicted"),
                 alt.Tooltip("y:Q", format=".3f", title="observed"),
                 alt.Tooltip("w:Q", format=",.0f", title="reviews")])
    return (diagonal + base.mark_line() + points).properties(
        title="calibration (reliability diagram)", height=300)


def histogram_chart(frame: pd.DataFrame, threshold: float | None = None) -> alt.Chart:
    """Binned predicted probabilities per true class (`views.probability_histogram`)."""
    bars = alt.Chart(frame).mark_bar(opacity=0.6).encode(
        x=alt.X("bin_start:Q", bin="binned", title="predicted positive probability"),
        x2="bin_end:Q",
        y=alt.Y("count:Q", stack=None, title="reviews"),
        color=alt.Color("true:N", scale=CLASS_COLORS, title="true class"),
        tooltip=["true:N", alt.Tooltip("count:Q", format=",d")])
    if threshold is None:
        return bars.properties(title="predicted probabilities", height=250)
    rule = alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(color="black").encode(x="t:Q")
    return (bars + rule).properties(title="predicted probabilities", height=250)


def contributions_chart(frame: pd.DataFrame) -> alt.Chart:
    """Words that drove the decision: signed weights, green towards positive, red negative."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("weight:Q", title="contribution (+ towards positive)"),
        y=alt.Y("token:N", sort=alt.EncodingSortField("weight", op="sum", order="descending"),
                title=None),
        color=alt.Color("towards:N", scale=CLASS_COLORS, title="towards"),
        tooltip=["token:N", alt.Tooltip("weight:Q", format=".4f")],
    ).properties(title="words that drove the decision")


def behaviour_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Failure rate of each behavioural test per model (`audit_views.behaviour_frame`): a point
    per model with its 95% interval as a bar."""
    base = alt.Chart(frame).encode(
        y=alt.Y("test:N", title=None, sort=None, axis=alt.Axis(labelLimit=320)),
        yOffset=alt.YOffset("model:N"),
        color=alt.Color("model:N", title="model", legend=FULL_LEGEND),
        tooltip=["test:N", "kind:N", "model:N", alt.Tooltip("n:Q", format=",d"),
                 alt.Tooltip("failures:Q", format=",d"),
                 alt.Tooltip("failure_rate:Q", format=".1%", title="failure rate"),
                 alt.Tooltip("interval:N", title="95% interval")])
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low:Q", title="failure rate (bars: 95% Wilson interval)",
                scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        x2="ci_high:Q")
    points = base.mark_point(filled=True, size=70).encode(x="failure_rate:Q")
    return (bars + points).properties(title="behavioural tests: failure rate per model")


def slice_accuracy_chart(frame: pd.DataFrame, by: str) -> alt.LayerChart:
    """Accuracy per slice (`audit_views.slices_frame`), one point per model with its 95%
    interval, buckets in their own order."""
    base = alt.Chart(frame).encode(
        x=alt.X("bucket:N", title="review length" if by == "length" else by,
                sort=alt.EncodingSortField("order", op="min"), axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("model:N"),
        color=alt.Color("model:N", title="model", legend=FULL_LEGEND),
        tooltip=["bucket:N", "model:N", alt.Tooltip("n:Q", format=",d"),
                 alt.Tooltip("accuracy:Q", format=".3f"),
                 alt.Tooltip("interval:N", title="95% interval")])
    bars = base.mark_rule(strokeWidth=2).encode(
        y=alt.Y("ci_low:Q", title="accuracy", scale=alt.Scale(zero=False)), y2="ci_high:Q")
    points = base.mark_point(filled=True, size=60).encode(y="accuracy:Q")
    return (bars + points).properties(title=f"accuracy by {by}", height=300)
