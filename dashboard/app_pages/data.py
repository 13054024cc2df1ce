"""Data & models page: duplicates, leakage, label issues, truncation, behaviour, slices, diffs."""
from __future__ import annotations

import streamlit as st

from dashboard import audit_views, charts, resources, views, widgets
from storage.records import Audit, Run
from trainer.comparison import review_diff
from trainer.errors import TrainerError

AUDIT_HINT = ("Run `python -m trainer audit` to fill it (it reuses the stored stages: run "
              "`python -m trainer run` or `python -m trainer baseline` first).")
number, text_column = st.column_config.NumberColumn, st.column_config.TextColumn

st.title("Data & models")
url = widgets.database_url()


def pick_audit(url: str, runs: list[Run]) -> Audit | None:
    sources = sorted({r.spec.data_source for r in runs})
    source = None
    if len(sources) > 1:
        source = st.selectbox("Data source", sources, key="data_source")
    return resources.latest_audit(url, source)


def show_duplicates(audit: Audit) -> None:
    st.subheader("Duplicates and leakage")
    counts = audit_views.duplicate_counts(audit)
    st.dataframe(counts, hide_index=True, key="data_dup_counts",
                 column_config={"reviews": number("reviews in groups", format="%d"),
                                "conflicting": number("groups with conflicting labels",
                                                      format="%d")})
    st.caption(f"{len(audit.leaked_test_ids):,} test reviews also appear in train (same text "
               "after normalising whitespace and case); the deduplicated figures below leave "
               "them out.")
    conflicting = int(counts["conflicting"].sum())
    if conflicting:
        st.warning(f"{conflicting:,} duplicate groups carry conflicting labels.")
    with st.expander(f"Duplicate groups ({len(audit.duplicates):,})"):
        left, middle, right = st.columns(3)
        kind = left.selectbox("Kind", ["all", *audit_views.DUPLICATE_KINDS], key="data_dup_kind")
        scope = middle.selectbox("Scope", ["all", *audit_views.SCOPES], key="data_dup_scope")
        only = right.checkbox("Only conflicting labels", key="data_dup_conflicting")
        groups = audit_views.duplicate_groups(audit, kind=None if kind == "all" else kind,
                                              scope=None if scope == "all" else scope,
                                              conflicting_only=only)
        st.caption(f"{len(groups):,} groups shown (at most {audit_views.MAX_GROUPS:,}), "
                   "conflicting ones first")
        st.dataframe(groups, hide_index=True, key="data_dup_groups")


def show_dedup(url: str, audit: Audit, stages: list[Run]) -> None:
    st.subheader("Test accuracy: all reviews and deduplicated")
    preds = {r.id: resources.predictions(url, r.id, texts=False) for r in stages}
    table = audit_views.dedup_accuracy(stages, preds, audit.leaked_test_ids)
    if table.empty:
        st.info("No stage scored on the test split has stored predictions yet.")
        return
    st.caption("Recomputed from each stage's stored predictions; 95% Wilson intervals.")
    st.dataframe(table, hide_index=True, key="data_dedup",
                 column_config={"n_full": number("n (all)", format="%d"),
                                "accuracy_full": number("accuracy (all)", format="%.4f"),
                                "ci_full": text_column("95% CI (all)"),
                                "n_dedup": number("n (deduplicated)", format="%d"),
                                "accuracy_dedup": number("accuracy (deduplicated)",
                                                         format="%.4f"),
                                "ci_dedup": text_column("95% CI (deduplicated)"),
                                "left_out": number("leaked reviews left out", format="%d")})


def show_label_issues(url: str, audit: Audit, stages: list[Run]) -> None:
    st.subheader("Label-issue candidates")
    summary = audit_views.label_issue_summary(audit)
    if summary.empty:
        st.info("The audit found no label-issue candidates.")
        return
    st.dataframe(summary, hide_index=True, key="data_issue_summary")
    splits = sorted(summary["split"].unique())
    split = st.selectbox("Split", ["all", *splits], key="data_issue_split")
    texts = {}
    tested = [r for r in stages if r.spec.split == "test"]
    if tested:  # test reviews' texts come with a stage's stored predictions
        preds = resources.predictions(url, tested[0].id)
        texts = dict(zip(preds["review_id"], preds["text"]))
    table = audit_views.label_issue_table(audit, None if split == "all" else split, texts)
    st.caption(f"{len(table):,} candidates: reviews whose given label the model finds unlikely. "
               "No label is changed; export the list to check them by hand.")
    st.dataframe(table, hide_index=True, key="data_issues",
                 column_config={"prob_positive": number("p positive", format="%.3f"),
                                "prob_given": number("p of the given label", format="%.3f")})
    st.download_button("Download the candidates (CSV)", audit_views.label_issues_csv(table),
                       file_name="label-issue-candidates.csv", mime="text/csv",
                       key="data_issues_csv")


def show_truncation(audit: Audit, labels: dict[int, str]) -> None:
    st.subheader("Truncation")
    table = audit_views.truncation_frame(audit, labels)
    if table.empty:
        st.info("No transformer stage was audited (the TF-IDF baseline reads whole reviews).")
        return
    st.dataframe(table, hide_index=True, key="data_truncation",
                 column_config={"share_truncated": number("share truncated", format="%.3f"),
                                "accuracy_truncated": number("accuracy (truncated)",
                                                             format="%.4f"),
                                "accuracy_untruncated": number("accuracy (untruncated)",
                                                               format="%.4f")})


def show_behaviour(audit: Audit) -> None:
    st.subheader("Behavioural tests")
    frame = audit_views.behaviour_frame(audit)
    if frame.empty:
        st.info("The audit holds no behavioural test results.")
        return
    st.caption("CheckList-style tests (Ribeiro et al., 2020): MFT expects a label, INV expects "
               "the prediction to survive a change, DIR expects the probability to move one "
               "way. Failure rates with n and 95% Wilson intervals.")
    st.dataframe(frame[["test", "kind", "model", "n", "failures", "failure_rate", "interval"]],
                 hide_index=True, key="data_behaviour",
                 column_config={"failure_rate": number("failure rate", format="%.3f"),
                                "interval": text_column("95% CI")})
    st.altair_chart(charts.behaviour_chart(frame), key="data_behaviour_chart")
    left, right = st.columns(2)
    model = left.selectbox("Failing examples of", list(dict.fromkeys(frame["model"])),
                           key="data_behaviour_model")
    test = right.selectbox("Test", list(dict.fromkeys(frame["test"])), key="data_behaviour_test")
    examples = audit_views.behaviour_examples(audit, model, test)
    if examples.empty:
        st.caption("No failing example stored for this test and model.")
    else:
        st.dataframe(examples, hide_index=True, key="data_behaviour_examples")


def show_slices(audit: Audit, labels: dict[int, str]) -> None:
    st.subheader("Slices")
    kinds = audit_views.slice_kinds(audit)
    if not kinds:
        st.info("The audit holds no slices.")
        return
    for by in kinds:
        frame = audit_views.slices_frame(audit, by, labels)
        st.altair_chart(charts.slice_accuracy_chart(frame, by), key=f"data_slices_{by}")
        st.dataframe(frame[["model", "bucket", "n", "accuracy", "interval"]], hide_index=True,
                     key=f"data_slices_table_{by}",
                     column_config={"accuracy": number(format="%.4f"),
                                    "interval": text_column("95% CI")})


def show_diff(url: str, runs: list[Run]) -> None:
    st.subheader("Review by review: where exactly one model is right")
    choices = audit_views.diff_choices(runs)
    if len(choices) < 2:
        st.info("The review diff needs two stored models scored on the same reviews.")
        return
    ids = list(choices)
    left, right = st.columns(2)
    a = left.selectbox("Model A", ids, key="data_diff_a", format_func=choices.get)
    b = right.selectbox("Model B", ids, index=1, key="data_diff_b", format_func=choices.get)
    if a == b:
        st.info("Pick two different models.")
        return
    try:
        diff = review_diff(resources.predictions(url, a), resources.predictions(url, b))
    except TrainerError as e:
        widgets.say("warning", str(e))
        return
    st.markdown(f"**{views.escape_markdown(audit_views.diff_sentence(diff, 'A', 'B'))}**")
    table = audit_views.diff_table(diff, "A", "B")
    st.caption(f"{len(diff.rows):,} reviews differ; the largest probability gap first (at most "
               f"{audit_views.MAX_DIFF_ROWS:,} shown). Click a column to sort.")
    st.dataframe(table, hide_index=True, key="data_diff",
                 column_config={"right": text_column("right model"),
                                "prob_a": number("p positive (A)", format="%.3f"),
                                "prob_b": number("p positive (B)", format="%.3f"),
                                "gap": number("gap", format="%.3f")})
    readable = table.dropna(subset=["text"])
    if not readable.empty:
        pick = st.selectbox("Read a review", readable["review_id"], key="data_diff_read")
        st.text(readable.loc[readable["review_id"] == pick, "text"].iloc[0])


def show(url: str) -> None:
    runs = resources.runs(url)
    if not runs:
        st.info(f"The database holds no evaluated model yet. {widgets.FILL_HINT}")
        return
    labels = {r.id: r.label for r in runs}
    stages = list(views.latest_by_stage(runs).values())
    audit = pick_audit(url, runs)
    if audit is None:
        st.info(f"The database holds no audit of this data yet. {AUDIT_HINT}")
    else:
        st.caption(f"Audit of {views.escape_markdown(audit.data_source)}"
                   + (f", {audit.created_at:%Y-%m-%d %H:%M}" if audit.created_at else ""))
        show_duplicates(audit)
        show_dedup(url, audit, stages)
        show_label_issues(url, audit, stages)
        show_truncation(audit, labels)
        show_behaviour(audit)
        show_slices(audit, labels)
    show_diff(url, runs)


with widgets.page_errors("read the audit"):
    if widgets.open_database(url) is not None:
        show(url)
