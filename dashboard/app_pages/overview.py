"""Overview page: the three stages side by side, McNemar's test between them, one sentence."""
from __future__ import annotations

import pandas as pd
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
        for warning in run.spec.warnings:  # ours, with `commands`; the label is escaped
            st.warning(views.markdown_with_code(f"{run.label}: {warning}"))
    preds = {run.id: resources.predictions(url, run.id, texts=False)
             for run in latest.values()}
    shared = views.shared_figures(latest, preds)
    show_tiles(views.accuracy_tiles(latest, shared))
    if (sentence := views.shortfall(latest, shared)) is not None:
        st.warning(views.markdown_with_code(sentence))
    st.subheader("Side by side")
    st.caption("Each model on every review it scored (n, split); the tiles above compare the "
               "stages on the same reviews.")
    st.dataframe(views.overview_table(views.runs_frame(latest.values())), key="overview_table",
                 height="content")
    show_tests(latest, preds)


def show_tiles(tiles: pd.DataFrame) -> None:
    headings = {"same": "Accuracy on the same reviews: those every stage scored",
                "own": "Accuracy on every review each model scored"}
    for row, group in tiles.groupby("row", sort=False):
        if tiles["row"].nunique() > 1 or row == "same":
            st.markdown(f"**{headings[row]}**")
        for column, tile in zip(st.columns(len(group)), group.itertuples()):
            column.metric(tile.label, f"{tile.accuracy:.3f}")
            column.caption(tile.caption)  # our own text: numbers and a split name
    st.caption("Accuracy at threshold 0.5; 95% intervals by bootstrap (a run's own reviews) or "
               "Wilson's score (the shared reviews).")


def show_tests(latest: dict, preds: dict) -> None:
    st.subheader("Are the differences real? McNemar's test")
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
    st.dataframe(shown[["comparison", "n", "accuracy_before", "accuracy_after", "b", "c", "p"]],
                 hide_index=True, key="overview_tests",
                 # Short headers and fixed widths: the seven columns fit a laptop's page
                 # instead of scrolling the p value out of sight; help= says the rest.
                 column_config={
                     "comparison": st.column_config.TextColumn("comparison", width="medium"),
                     "n": number("shared reviews (n)", format="localized", width="small",
                                 help="reviews both models scored"),
                     "accuracy_before": number("accuracy, first", format="%.3f", width="small",
                                               help="the first model's accuracy on them"),
                     "accuracy_after": number("accuracy, second", format="%.3f", width="small",
                                              help="the second model's accuracy on them"),
                     "b": number("only first right", format="localized", width="small"),
                     "c": number("only second right", format="localized", width="small"),
                     "p": st.column_config.TextColumn("p (exact)", width="small",
                                                      help="McNemar's exact test")})
    st.caption("Each pair on the n reviews both scored, so accuracies here can differ from a "
               "model's figure on all its reviews.")
    if len(tests) > 1:  # the first is the headline above the table
        st.markdown("\n".join(f"- {views.escape_markdown(s)}" for s in tests["sentence"][1:]))


with widgets.page_errors("read the database"):
    if widgets.open_database(url) is not None:
        show_stages(url)
