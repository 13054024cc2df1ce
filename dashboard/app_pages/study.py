"""Study explorer: trials, history, importance, hyperparameters, time, each trial's diagnostics."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, resources, views, widgets
from dashboard import study_views as sv

REFRESH_S = 10

st.title("Study explorer")
url = widgets.database_url()


def show_counts(table: pd.DataFrame, direction: str) -> None:
    counts = sv.state_counts(table)
    best = sv.best_number(table, direction)
    cells = [("complete", counts["COMPLETE"]), ("pruned", counts["PRUNED"]),
             ("failed", counts["FAIL"]), ("running", counts["RUNNING"])]
    columns = st.columns(len(cells) + 1)
    for column, (name, count) in zip(columns, cells):
        column.metric(f"{name} trials", f"{count:,}")
    if best is not None:
        value = table.loc[table["number"] == best, "value"].iloc[0]
        columns[-1].metric(f"best ({direction})", f"{value:.4f}", help=f"trial {best}")


def show_trials(url: str, name: str, table: pd.DataFrame, direction: str) -> None:
    left, middle, right = st.columns([2, 1, 1])
    states = left.multiselect("States", sv.STATES, default=[s for s in sv.STATES
                                                             if s in set(table["state"])],
                              key="study_states")
    by = middle.selectbox("Sort by", list(table.columns), key="study_sort")
    descending = right.toggle("Descending", key="study_descending")
    shown = sv.sort_trials(sv.filter_trials(table, states), by, descending)
    event = st.dataframe(shown, hide_index=True, key="study_table", on_select="rerun",
                         selection_mode="single-row")
    st.download_button("Download these trials as CSV", views.safe_csv(shown),
                       file_name="trials.csv", mime="text/csv", key="study_csv")
    rows = event.selection.rows
    show_trial(url, name, table, direction, int(shown["number"].iloc[rows[0]]) if rows else None)


def show_trial(url: str, name: str, table: pd.DataFrame, direction: str,
               picked: int | None) -> None:
    st.subheader("One trial's diagnostics")
    best = sv.best_number(table, direction)
    if picked is None:
        number = st.selectbox("Select a row above, or pick a trial", table["number"].tolist(),
                              index=None, key="study_trial",
                              placeholder=f"best: trial {best}" if best is not None
                              else "choose a trial")
    else:
        number = picked
        st.caption(f"Trial {picked}, the selected row (clear the selection to pick another).")
    if number is None:
        return
    row = table[table["number"] == number].iloc[0]
    reason = f" · {views.escape_markdown(row['fail_reason'])}" if row["fail_reason"] else ""
    value = "–" if pd.isna(row["value"]) else f"{row['value']:.4f}"
    st.caption(f"state {row['state']} · value {value} · {row['epochs']} epochs{reason}")
    run = resources.trial_runs(url, name).get(number)
    if run is None:
        st.info(f"Trial {number} has no stored evaluation (it failed before its first epoch "
                "ended, or it is still running its first epoch).")
        return
    ev = run.evaluation
    left, middle, right = st.columns([1, 2, 2])
    left.altair_chart(charts.confusion_chart(views.confusion_frame(ev.confusion)),
                      key="study_confusion")
    if "roc" in ev.curves:
        middle.altair_chart(charts.curves_chart(views.curves_frame([run], "roc"), "roc"),
                            key="study_roc")
    right.dataframe(views.per_class_frame(ev.per_class), hide_index=True, key="study_classes")
    right.caption(f"validation accuracy {ev.scalars.get('accuracy', float('nan')):.4f} on "
                  f"{ev.n:,} reviews (epoch {run.spec.config.get('epoch', '?')})")


def show_history(table: pd.DataFrame, trials: list, direction: str) -> None:
    st.altair_chart(charts.history_chart(sv.history_frame(table, direction)),
                    key="study_history")
    lines = sv.intermediate_frame(trials)
    if lines.empty:
        st.info("No trial reported per-epoch values yet.")
        return
    st.altair_chart(charts.intermediate_chart(lines), key="study_intermediate")
    shown, reported = lines["number"].nunique(), sum(1 for t in trials if t.intermediate_values)
    if shown < reported:
        st.caption(f"{shown} of {reported} trials drawn (evenly thinned to keep the chart light)")


def show_importance(url: str, name: str, table: pd.DataFrame) -> None:
    left, right = st.columns(2)
    evaluator = left.selectbox("Evaluator", resources.EVALUATORS, key="study_evaluator")
    target = right.selectbox("Target", sv.IMPORTANCE_TARGETS, key="study_target",
                             help="the objective, or a metric of each trial's stored evaluation")
    metrics = sv.trial_metrics_frame(resources.trial_runs(url, name)) \
        if target != "objective" else pd.DataFrame()
    values = sv.target_values(table, metrics, target)
    if len(values) < sv.MIN_TRIALS_FOR_IMPORTANCE:
        st.warning(f"Only {len(values)} complete trials have this target; importance is not "
                   f"trustworthy below {sv.MIN_TRIALS_FOR_IMPORTANCE}. Run more trials.")
    if len(values) < 2 or not sv.param_names(table):
        return
    try:
        result = resources.importances(url, name, evaluator, target,
                                       tuple(sorted(values.index)))
    except (ValueError, RuntimeError) as e:
        widgets.say("warning", f"{evaluator} could not rate these trials ({e}); "
                                "try another evaluator.")
        return
    st.altair_chart(charts.importance_chart(sv.importance_frame(result), target),
                    key="study_importance")


def show_parameters(table: pd.DataFrame, trials: list) -> None:
    kinds = sv.param_kinds(trials)
    st.altair_chart(charts.parallel_chart(sv.parallel_frame(table, kinds)),
                    key="study_parallel")
    slices = sv.slices_frame(table, kinds)
    if not slices.empty:
        st.altair_chart(charts.slices_chart(slices), key="study_slices")


def show_time(table: pd.DataFrame) -> None:
    savings = sv.pruning_savings(table)
    left, right = st.columns(2)
    left.metric("time in trials", f"{savings.total_s / 60:,.1f} min")
    right.metric("saved by pruning (estimate)", f"{savings.saved_s / 60:,.1f} min",
                 help=f"{savings.n_pruned} pruned trials × the epochs they did not run, "
                      "at the pace they had")
    st.altair_chart(charts.duration_chart(sv.duration_frame(table)), key="study_durations")


def explore(url: str, name: str) -> None:
    direction, trials = resources.study_trials(url, name)
    table = sv.trials_table(trials)
    show_counts(table, direction)
    if (table["state"] == "RUNNING").any():
        st.caption(f"Trials are running: this page refreshes every {REFRESH_S} s.")
    if table.empty:
        st.info("This study has no trial yet. Start one with `python -m trainer tune`.")
        return
    finished = (table["state"] == "COMPLETE").any()
    names = ["Trials", "History", "Importance", "Hyperparameters", "Time"] if finished \
        else ["Trials"]
    if not finished:
        st.info("No trial of this study has finished yet; the history, importance and "
                "hyperparameter charts appear once one completes.")
    # Lazy tabs: only the open one runs, so each stays fast with 1,000 trials; the open tab
    # is in the URL (?study_tab=History), so a view can be linked.
    tabs = dict(zip(names, st.tabs(names, key="study_tab", on_change="rerun",
                                   bind="query-params")))
    sections = {"Trials": lambda: show_trials(url, name, table, direction),
                "History": lambda: show_history(table, trials, direction),
                "Importance": lambda: show_importance(url, name, table),
                "Hyperparameters": lambda: show_parameters(table, trials),
                "Time": lambda: show_time(table)}
    for label, tab in tabs.items():
        if tab.open:
            with tab:
                sections[label]()


def show(url: str) -> None:
    names = resources.study_names(url)
    if not names:
        st.info("The database holds no Optuna study yet. Run `python -m trainer tune` (or "
                "`python -m trainer run`), then reload this page.")
        return
    name = st.selectbox("Study", names, key="study_name")
    try:
        _, trials = resources.study_trials(url, name)
    except KeyError:  # deleted since the list was read
        widgets.say("error", f"The study {name} is no longer in the database; reload the page.")
        return
    if any(t.state.name == "RUNNING" for t in trials):
        st.fragment(explore, run_every=REFRESH_S)(url, name)
    else:
        explore(url, name)


with widgets.page_errors("read the study"):
    if widgets.open_database(url) is not None:
        show(url)
