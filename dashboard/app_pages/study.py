"""Study explorer: trials, history, importance, hyperparameters, time, each trial's diagnostics."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from dashboard import resources, views, widgets
from dashboard import study_charts as sc
from dashboard import study_views as sv

REFRESH_S = 10
TABS = ("Trials", "History", "Importance", "Parallel coordinates", "Contour", "Slices", "Time")
SCOPE_KEY = "study_scope"  # the database and study the filters below were set for
TRIAL_PARAM = "trial"  # ?trial=N opens that trial's diagnostics
NO_PARAMETERS = "This study tunes no hyperparameter."
BRUSHED = "study_brushed"  # the trials inside the parallel-coordinates brush, or absent
# Widgets whose choices belong to one study of one database: reset when either changes.
SCOPED_KEYS = ("study_states", "study_sort", "study_descending", "study_table", "study_trial",
               "study_parallel", "study_contour_x", "study_contour_y", BRUSHED,
               "study_only_brushed")

FILTER_DEFAULTS = {"study_states": list(sv.STATES), "study_sort": "number",
                   "study_descending": False, "study_only_brushed": True}

st.title("Study explorer")
url = widgets.database_url()


def reset_on_change(url: str, name: str) -> None:
    """Forget filters, selections and the linked trial when the database or study changes."""
    state, scope = st.session_state, f"{url}\n{name}"
    if state.get(SCOPE_KEY) == scope:
        return
    if SCOPE_KEY in state:  # not on the first visit: its ?trial=N is the link followed
        st.query_params.pop(TRIAL_PARAM, None)
    for key in SCOPED_KEYS:
        state.pop(key, None)  # keep_filters then writes the filters' defaults in
    state[SCOPE_KEY] = scope


def keep_filters() -> None:
    """Write the Trials tab's filters through the Session State API, their defaults where
    unset. Streamlit forgets the value of a widget that a run does not draw (the States filter
    came back empty after a visit to another tab, hiding every trial), and popping a widget's
    key is not enough where the browser still holds its old value: written values persist."""
    state = st.session_state
    for key, default in FILTER_DEFAULTS.items():
        state[key] = state.get(key, default)


def show_counts(table: pd.DataFrame, direction: str) -> None:
    counts = sv.state_counts(table)
    cells = [("complete", counts["COMPLETE"]), ("pruned", counts["PRUNED"]),
             ("failed", counts["FAIL"]), ("running", counts["RUNNING"])]
    columns = st.columns(len(cells) + 1)
    for column, (name, count) in zip(columns, cells, strict=False):
        column.metric(f"{name} trials", f"{count:,}")
    best = sv.best_number(table, direction)
    if best is not None:
        value = table.loc[table["number"] == best, "value"].iloc[0]
        columns[-1].metric(f"best ({direction})", f"{value:.4f}",
                           help="validation accuracy of the best complete trial")
        st.caption(sv.best_summary(table, direction))


def show_trials(url: str, name: str, table: pd.DataFrame, direction: str) -> None:
    left, middle, right = st.columns([3, 1, 1])
    states = left.multiselect("States", sv.STATES, key="study_states")
    sortable = ["number", "value", "n", "duration_s", "epochs", "started",
                *(c for c in table.columns if c.startswith(sv.PARAM_PREFIX))]
    by = middle.selectbox("Sort by", sortable, key="study_sort", format_func=column_label)
    descending = right.toggle("Descending", key="study_descending")
    shown = sv.sort_trials(sv.filter_trials(table, states), by, descending)
    brushed = st.session_state.get(BRUSHED)
    if brushed is not None and st.toggle(
            f"Only the {len(brushed):,} trials inside the parallel coordinates' brush",
            key="study_only_brushed",
            help="Brush the chart on the Parallel coordinates tab to change them."):
        shown = shown[shown["number"].isin(brushed)]
    event = show_table(shown, key="study_table", selectable=True)
    # Written when clicked, not at every rerun (15 ms for 1,000 trials).
    st.download_button("Download these trials as CSV", lambda: views.safe_csv(shown),
                       file_name="trials.csv", mime="text/csv", key="study_csv")
    rows = event.selection.rows if event is not None else []
    show_trial(url, name, table, direction, int(shown["number"].iloc[rows[0]]) if rows else None)


def column_label(column: str) -> str:
    if column.startswith(sv.PARAM_PREFIX):
        return sv.param_label(column[len(sv.PARAM_PREFIX):])
    return sv.COLUMN_LABELS.get(column, column)


def show_table(table: pd.DataFrame, key: str, selectable: bool = False):
    """The trials as shown: readable names, value with n and 95% interval, no column cut."""
    config = {"value": st.column_config.NumberColumn(format="%.4f", width="small"),
              "duration (s)": st.column_config.NumberColumn(format="%.1f", width="small"),
              "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")}
    shown = sv.display_table(table)
    if not selectable:
        st.dataframe(shown, hide_index=True, key=key, column_config=config, width="stretch")
        return None
    return st.dataframe(shown, hide_index=True, key=key, column_config=config, width="stretch",
                        on_select="rerun", selection_mode="single-row")


def linked_trial(options: list[int]) -> int | None:
    """The trial named by ?trial=N, or None (with a warning when it names none of this study)."""
    raw = st.query_params.get(TRIAL_PARAM)
    if raw is None:
        return None
    try:
        number = int(raw)
    except ValueError:
        number = None
    if number not in options:
        widgets.say("warning", f"The link asks for trial {raw}, which this study does not "
                               "have; showing the best trial instead.")
        return None
    return number


def choose_trial(table: pd.DataFrame, best: int | None) -> int | None:
    """The trial to inspect: ?trial=N on arrival, else the best trial, else the user's pick.

    A number box rather than a list: a select box of 1,000 trials took 0.1-0.2 s of each page
    load to draw in the browser (2 cores)."""
    options = [int(n) for n in table["number"]]
    state = st.session_state
    if state.get("study_trial") not in options:
        linked = linked_trial(options)
        state["study_trial"] = linked if linked is not None else best
    left, right = st.columns([3, 1])
    number = left.number_input("Trial to inspect (or select a row above)", min(options),
                               max(options), step=1, key="study_trial",
                               placeholder="a trial number")
    if best is not None:
        right.button(f"Show the best trial ({best})", key="study_best",
                     on_click=lambda: state.update(study_trial=best))
    return number  # Optuna numbers a study's trials 0, 1, 2...: every number in range is one


def show_trial(url: str, name: str, table: pd.DataFrame, direction: str,
               picked: int | None) -> None:
    st.subheader("One trial's diagnostics")
    best = sv.best_number(table, direction)
    if picked is None:
        number = choose_trial(table, best)
    else:
        number = picked
        st.caption(f"Trial {picked}, the selected row (clear the selection to pick another).")
    if number is None:
        st.info("No trial has finished yet: pick one above to see what it stored.")
        return
    st.query_params[TRIAL_PARAM] = str(number)  # so this view can be linked
    show_trial_details(url, name, table, number, number == best)


def show_trial_details(url: str, name: str, table: pd.DataFrame, number: int,
                       is_best: bool) -> None:
    row = table[table["number"] == number].iloc[0]
    reason = f" · {views.escape_markdown(row['fail_reason'])}" if row["fail_reason"] else ""
    value = "–" if pd.isna(row["value"]) else f"{row['value']:.4f}"
    evidence = "" if pd.isna(row["n"]) else \
        f" on {int(row['n']):,} validation reviews (95% interval " \
        f"{sv.interval_text(row['ci_low'], row['ci_high'])})"
    best = " · the study's best trial" if is_best else ""
    st.caption(f"Trial {number}: state {row['state']} · value {value}{evidence} · "
               f"{row['epochs']} epochs{reason}{best} · link: ?{TRIAL_PARAM}={number}")
    run_id = resources.trial_run_ids(url, name).get(number)
    run = resources.stored_run(url, run_id) if run_id is not None else None
    if run is None:
        st.info(f"Trial {number} has no stored evaluation (it failed before its first epoch "
                "ended, or it is still running its first epoch).")
        return
    ev = run.evaluation
    left, middle, right = st.columns(3)
    confusion, roc = resources.run_chart_specs(url, run_id)
    left.vega_lite_chart(spec=confusion, key="study_confusion")
    if roc is not None:
        middle.vega_lite_chart(spec=roc, key="study_roc")
    right.dataframe(views.per_class_frame(ev.per_class), hide_index=True, key="study_classes")
    right.caption(f"validation accuracy {ev.scalars.get('accuracy', float('nan')):.4f} on "
                  f"{ev.n:,} reviews (epoch {run.spec.config.get('epoch', '?')})")


def show_history(table: pd.DataFrame, trials: list, direction: str) -> None:
    st.altair_chart(sc.history_chart(sv.history_frame(table, direction), sv.pruned_frame(trials)),
                    key="study_history")
    st.altair_chart(sc.edf_chart(sv.edf_frame(table)), key="study_edf")
    lines = sv.intermediate_frame(trials, direction)
    if lines.empty:
        st.info("No trial reported per-epoch values yet.")
        return
    st.altair_chart(sc.intermediate_chart(lines), key="study_intermediate")
    shown, reported = lines["number"].nunique(), sum(1 for t in trials if t.intermediate_values)
    if shown < reported:
        st.caption(f"{shown} of {reported} trials drawn (the others evenly thinned to keep the "
                   f"chart light; the {sv.HIGHLIGHTED} best are always drawn)")


def show_importance(url: str, name: str, table: pd.DataFrame) -> None:
    left, right = st.columns(2)
    evaluator = left.selectbox("Evaluator", resources.EVALUATORS, key="study_evaluator")
    target = right.selectbox("Target", sv.IMPORTANCE_TARGETS, key="study_target",
                             help="the objective, or a metric of each trial's stored evaluation")
    metrics = sv.trial_metrics_frame(resources.trial_runs(url, name)) \
        if target != "objective" else pd.DataFrame()
    values = sv.target_values(table, metrics, target)
    if len(values) < sv.MIN_TRIALS_FOR_IMPORTANCE or not sv.param_names(table):
        st.info(f"Importance is not drawn: only {len(values)} complete trials have this target, "
                f"and it needs at least {sv.MIN_TRIALS_FOR_IMPORTANCE}. With fewer, the model "
                "fitted to rate the hyperparameters follows noise, so its ranking would look "
                "confident and mean nothing. Run more trials.")
        return
    try:
        result = resources.importances(url, name, evaluator, target,
                                       tuple(sorted(values.index)))
    except (ValueError, RuntimeError) as e:
        widgets.say("warning", f"{evaluator} could not rate these trials ({e}); "
                                "try another evaluator.")
        return
    st.altair_chart(sc.importance_chart(sv.importance_frame(result), target),
                    key="study_importance")
    st.caption(f"Rated on {len(values)} complete trials.")


def show_parallel(table: pd.DataFrame, trials: list) -> None:
    frame = sv.parallel_frame(table, sv.param_kinds(trials))
    if frame.empty:
        st.info(NO_PARAMETERS)
        return
    event = st.altair_chart(sc.parallel_chart(frame, sv.parallel_ticks(frame)),
                            key="study_parallel", on_select="rerun")
    selection = (event or {}).get("selection") or {}
    show_brushed(table, frame, selection.get(sc.BRUSH))


def show_slices(table: pd.DataFrame, trials: list) -> None:
    frame = sv.slices_frame(table, sv.param_kinds(trials))
    if frame.empty:
        st.info(NO_PARAMETERS)
        return
    st.altair_chart(sc.slices_chart(frame), key="study_slices")


def show_brushed(table: pd.DataFrame, frame: pd.DataFrame, brush: dict | None) -> None:
    numbers = sv.brushed_numbers(frame, brush or {})
    if numbers is None:
        st.session_state.pop(BRUSHED, None)
        st.caption("Drag a box over one or more axes above to list the trials inside it; the "
                   "Trials tab then shows only those.")
        return
    st.session_state[BRUSHED] = numbers  # the Trials tab's table filters by it
    st.caption(f"{len(numbers)} of {frame['number'].nunique()} complete trials inside the "
               "brushed range (drag elsewhere or double-click the chart to clear it); the "
               "Trials tab shows only these:")
    show_table(table[table["number"].isin(numbers)], key="study_brushed_table")


def show_contour(table: pd.DataFrame, trials: list) -> None:
    names, kinds = sv.param_names(table), sv.param_kinds(trials)
    if len(names) < 2:
        st.info("A contour plot needs two tuned hyperparameters; this study has "
                f"{len(names)}.")
        return
    left, right = st.columns(2)
    x = left.selectbox("Contour: x axis", names, index=0, key="study_contour_x",
                       format_func=sv.param_label)
    y = right.selectbox("Contour: y axis", names, index=1, key="study_contour_y",
                        format_func=sv.param_label)
    if x == y:
        st.info("Pick two different hyperparameters for the contour plot.")
        return
    frame = sv.contour_frame(table, kinds, x, y)
    axes = [(sv.param_label(n), kinds.get(n, "linear")) for n in (x, y)]
    st.altair_chart(sc.contour_chart(frame, *axes), key="study_contour")


def show_time(table: pd.DataFrame) -> None:
    savings = sv.pruning_savings(table)
    left, right = st.columns(2)
    left.metric("time in trials", f"{savings.total_s / 60:,.1f} min")
    right.metric("saved by pruning (estimate)", f"{savings.saved_s / 60:,.1f} min",
                 help=f"{savings.n_pruned} pruned trials × the epochs they did not run, "
                      "at the pace they had")
    now = dt.datetime.now()  # naive local time, as Optuna stamps a trial's start
    st.altair_chart(sc.timeline_chart(sv.timeline_frame(table, now)), key="study_timeline")
    if not (table["worker"] != "").any():
        st.caption("These trials were run before workers were recorded, so each row is a trial "
                   "rather than the worker (host:process) that ran it.")
    st.altair_chart(sc.duration_chart(sv.duration_frame(table)), key="study_durations")


def explore(url: str, name: str) -> None:
    direction, trials = resources.study_trials(url, name)
    table = sv.trials_table(trials)
    finished = tuple(int(n) for n in table.loc[table["state"] != "RUNNING", "number"])
    table = sv.with_intervals(table, resources.trial_intervals(url, name, finished))
    show_counts(table, direction)
    if (table["state"] == "RUNNING").any():
        st.caption(f"Trials are running: this page refreshes every {REFRESH_S} s.")
    if table.empty:
        st.info("This study has no trial yet. Start one with `python -m trainer tune`.")
        return
    finished = (table["state"] == "COMPLETE").any()
    names = list(TABS) if finished else ["Trials"]
    if not finished:
        st.info("No trial of this study has finished yet; the history, importance and "
                "hyperparameter charts appear once one completes.")
    # Lazy tabs: only the open one runs and only its charts are drawn, so each stays within a
    # second with 1,000 trials (the parameter charts on one tab took 1.3-1.6 s to draw); the
    # open tab is in the URL (?study_tab=History), so a view can be linked.
    tabs = dict(zip(names, st.tabs(names, key="study_tab", on_change="rerun",
                                   bind="query-params"), strict=True))
    sections = {"Trials": lambda: show_trials(url, name, table, direction),
                "History": lambda: show_history(table, trials, direction),
                "Importance": lambda: show_importance(url, name, table),
                "Parallel coordinates": lambda: show_parallel(table, trials),
                "Contour": lambda: show_contour(table, trials),
                "Slices": lambda: show_slices(table, trials),
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
    reset_on_change(url, name)
    keep_filters()
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
