"""Evaluation page: any stored model's confusion, curves, calibration, threshold and errors."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, resources, views, widgets
from storage import StorageError
from storage.records import COMPARED_STAGES, Run, Stage

st.title("Evaluation")
url = widgets.database_url()
MAX_ERRORS_SHOWN = 200  # the browser never gets every review


def pick_run(url: str, stage_runs: list[Run]) -> Run | None:
    studies = resources.run_studies(url)
    sources = (["a stage"] if stage_runs else []) + (["a tuning trial"] if studies else [])
    if not sources:
        return None
    source = st.radio("Model from", sources, horizontal=True, key="eval_source")
    if source == "a tuning trial":
        left, right = st.columns(2)
        name = left.selectbox("Study", studies, key="eval_study")
        by_number = resources.trial_runs(url, name)
        if not by_number:
            return None
        return by_number[right.selectbox("Trial", sorted(by_number), key="eval_trial")]
    by_id = {r.id: r for r in stage_runs}
    finals = [r.id for r in stage_runs if r.spec.stage == Stage.FINETUNED]
    default = list(by_id).index(finals[-1] if finals else stage_runs[-1].id)
    chosen = st.selectbox("Model", list(by_id), index=default, key="eval_run",
                          format_func=lambda i: by_id[i].label)
    return by_id[chosen]


def show_scalars(run: Run, preds: pd.DataFrame | None) -> None:
    cells, captions = views.metric_cells(run), views.metric_captions(run, preds)
    for column, (name, shown, note) in zip(st.columns(len(cells)), cells):
        column.metric(name, shown, help=note)
        column.caption(captions[name])  # our own text: an interval and n
    st.caption(f"On {run.evaluation.n:,} {views.escape_markdown(run.spec.split)} reviews at "
               f"threshold 0.5 · model {views.escape_markdown(run.spec.model)}")


CURVE_TABS = {"ROC": "roc", "Precision-recall": "pr", "Calibration": "calibration"}


def show_curves(url: str, run: Run, runs: list[Run], preds: pd.DataFrame | None) -> None:
    curves = run.evaluation.curves
    names = [name for name, kind in CURVE_TABS.items() if kind in curves]
    if not names:
        st.info("This run has no stored curves.")
        return
    # Lazy tabs: only the open curve is drawn, so the page loads with one chart, not three.
    tabs = st.tabs(names, key="eval_curve_tab", on_change="rerun")
    for name, tab in zip(names, tabs, strict=True):
        if tab.open:
            with tab:
                show_curve(url, run, runs, preds, CURVE_TABS[name])
    st.caption(f"Curves of {views.escape_markdown(views.curve_label(run))}.")


def show_curve(url: str, run: Run, runs: list[Run], preds: pd.DataFrame | None,
               kind: str) -> None:
    if kind != "roc":
        frame = views.curve_frame(run.evaluation.curves[kind], views.curve_label(run))
        chart = charts.curves_chart(frame, "pr") if kind == "pr" \
            else charts.calibration_chart(frame)
        st.altair_chart(chart, key=f"eval_{kind}")
        return
    others = {r.id: r for r in runs if r.id != run.id and "roc" in r.evaluation.curves}
    compare = st.selectbox("Compare the ROC curve with", [None, *others], key="eval_compare",
                           format_func=lambda i: "—" if i is None else others[i].label,
                           help="Curves are overlaid only on the reviews both runs scored.")
    roc = roc_frame(url, run, others.get(compare), preds)
    if roc is not None:  # full width, so that a legend shows both runs' full names
        st.altair_chart(charts.curves_chart(roc, "roc"), key="eval_roc")


def roc_frame(url: str, run: Run, other: Run | None,
              preds: pd.DataFrame | None) -> pd.DataFrame | None:
    """The ROC rows to draw: the run's own, or both runs' on the reviews both scored."""
    own = views.curve_frame(run.evaluation.curves["roc"], views.curve_label(run)) \
        if "roc" in run.evaluation.curves else None
    if other is None:
        return own
    other_preds = resources.predictions(url, other.id, texts=False)
    frame, note = views.roc_comparison(run, other, preds, other_preds)
    if frame is None:
        st.warning(views.escape_markdown(note))
        return own
    st.caption(views.escape_markdown(note))
    return frame


def show_threshold(run: Run, preds) -> float:
    st.subheader("Decision threshold")
    threshold = st.slider("Call a review positive when its probability is at least",
                          0.01, 0.99, 0.5, 0.01, key="eval_threshold")
    confusion, per_class = views.at_threshold(preds, threshold)
    found = views.accuracy_at(preds, threshold)
    st.metric(f"accuracy at threshold {threshold:.2f}",
              "–" if found["accuracy"] is None else f"{found['accuracy']:.3f}")
    st.caption(views.escape_markdown(views.accuracy_sentence(found, threshold, run.spec.split))
               + " (95% interval: Wilson's score)")
    left, right = st.columns([1, 2])
    left.altair_chart(charts.confusion_chart(confusion), key="eval_confusion")
    number = st.column_config.NumberColumn
    right.dataframe(views.class_intervals(confusion, per_class), hide_index=True,
                    key="eval_per_class", column_config={
                        "predicted": number(help="reviews called this class: n of precision"),
                        "support": number(help="reviews of this class: n of recall")})
    right.altair_chart(charts.histogram_chart(views.probability_histogram(preds), threshold),
                       key="eval_histogram")
    return threshold


def show_errors(preds, threshold: float) -> None:
    st.subheader("Misclassified reviews, most confident first")
    lengths = preds["length"].dropna()
    if lengths.empty:
        st.info("The texts of these reviews were not stored, so there is nothing to browse.")
        return
    low, high = int(lengths.min()), max(int(lengths.max()), int(lengths.min()) + 1)
    chosen = st.slider("Review length (characters)", low, high, (low, high), key="eval_length")
    errors = views.errors_frame(preds, threshold, chosen[0], chosen[1], limit=MAX_ERRORS_SHOWN)
    total = len(views.misclassified(preds, threshold, chosen[0], chosen[1]))
    st.caption(views.errors_caption(len(errors), total))
    st.dataframe(errors, hide_index=True, key="eval_errors",
                 column_config={"confidence": st.column_config.NumberColumn(format="%.3f"),
                                "text": st.column_config.TextColumn(width="large")})
    if not errors.empty:
        pick = st.selectbox("Read a review", errors["review_id"], key="eval_read")
        st.text(errors.loc[errors["review_id"] == pick, "text"].iloc[0])


def stored_predictions(url: str, run: Run) -> pd.DataFrame:
    try:
        return resources.predictions(url, run.id)
    except StorageError:
        resources.runs.clear()  # a running trial may have replaced its row (new id)
        resources.trial_runs.clear()
        if run.spec.stage != Stage.TRIAL or run.id in {
                r.id for r in resources.trial_runs(url, run.spec.study).values()}:
            raise  # not that: show the error rather than rerun forever
        st.rerun()


def show(url: str) -> None:
    runs = [r for stage in COMPARED_STAGES for r in resources.runs(url, stage)]
    run = pick_run(url, runs)
    if run is None:
        st.info(f"The database holds no evaluated model yet. {widgets.FILL_HINT}")
        return
    for warning in run.spec.warnings:  # ours, with `commands`; names in it are escaped
        st.warning(views.markdown_with_code(warning))
    preds = stored_predictions(url, run)
    scored = preds["prob"].notna().sum() > 0
    show_scalars(run, preds if scored else None)
    show_curves(url, run, runs, preds if scored else None)
    if not scored:
        st.info("This run has no stored predictions; the threshold slider and the error "
                "browser need them. Runs saved by `python -m trainer` store them.")
        return
    show_errors(preds, show_threshold(run, preds))


with widgets.page_errors("read the evaluations"):
    if widgets.open_database(url) is not None:
        show(url)
