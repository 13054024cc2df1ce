"""Overview page: the three stages side by side, McNemar's test between them, one sentence."""
from __future__ import annotations

import streamlit as st

from dashboard import resources, views, widgets
from storage.records import COMPARED_STAGES, Stage

st.title("Overview")
url = widgets.database_url()


def show_stages(url: str) -> None:
    latest = views.latest_by_stage(r for stage in COMPARED_STAGES
                                   for r in resources.runs(url, stage))
    if not latest:
        st.info(f"The database holds no evaluated model yet. {widgets.FILL_HINT}")
        return
    for run in latest.values():
        for warning in run.spec.warnings:
            widgets.say("warning", f"{run.label}: {warning}")
    columns = st.columns(len(latest))
    for column, (stage, run) in zip(columns, latest.items()):
        ev = run.evaluation
        column.metric(stage.display, f"{ev.scalars.get('accuracy', float('nan')):.3f}",
                      help=f"accuracy on {ev.n:,} {views.escape_markdown(run.spec.split)} reviews")
    st.subheader("Side by side")
    st.dataframe(views.overview_table(views.runs_frame(latest.values())), key="overview_table",
                 height="content")
    show_tests(url, latest)


def show_tests(url: str, latest: dict) -> None:
    st.subheader("Are the differences real? McNemar's test")
    preds = {run.id: resources.predictions(url, run.id, texts=False)
             for run in latest.values()}
    tests = views.stage_comparisons(latest, preds)
    if tests.empty:
        st.info("McNemar's test needs two stages scored on the same reviews with stored "
                "predictions; run at least two stages on the same test split.")
        return
    st.markdown(f"**{views.escape_markdown(tests['sentence'].iloc[0])}**")  # names a stored split
    shown = tests.assign(
        comparison=[f"{Stage(a).display} → {Stage(b).display}"
                    for a, b in zip(tests["before"], tests["after"])],
        p=[views.format_p(p) for p in tests["p_value"]])
    number = st.column_config.NumberColumn
    st.dataframe(shown[["comparison", "n", "accuracy_before", "accuracy_after", "b", "c", "p",
                        "sentence"]], hide_index=True, key="overview_tests",
                 column_config={"accuracy_before": number("accuracy before", format="%.3f"),
                                "accuracy_after": number("accuracy after", format="%.3f"),
                                "b": number("only the first right", format="%d"),
                                "c": number("only the second right", format="%d")})


with widgets.page_errors("read the database"):
    if widgets.open_database(url) is not None:
        show_stages(url)
