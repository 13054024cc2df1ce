"""The study explorer's pure views, on trials made with Optuna's create_trial."""
from __future__ import annotations

import datetime as dt
import math
from datetime import UTC, datetime

import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from dashboard import study_views as sv
from storage.records import ClassMetrics, Evaluation, Run, RunSpec

SPACE = {"lr": FloatDistribution(1e-5, 1e-3, log=True), "epochs": IntDistribution(1, 4),
         "batch": CategoricalDistribution([8, 16])}


def trial(number: int, state: TrialState, value: float | None, steps: dict[int, float],
          seconds: float, lr: float = 1e-4, epochs: int = 4, batch: int = 8):
    t = create_trial(state=state, value=value, intermediate_values=steps,
                     params={"lr": lr, "epochs": epochs, "batch": batch}, distributions=SPACE,
                     user_attrs={"fail_reason": "out of memory"} if state == TrialState.FAIL
                     else {})
    t.number = number
    t.datetime_start = dt.datetime(2026, 1, 1)
    if state.is_finished():
        t.datetime_complete = t.datetime_start + dt.timedelta(seconds=seconds)
    return t


@pytest.fixture
def trials() -> list:
    C, P, F, R = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING
    return [trial(0, C, 0.80, {1: 0.7, 2: 0.75, 3: 0.78, 4: 0.80}, 400, lr=1e-5),
            trial(1, P, None, {1: 0.6}, 100, lr=1e-3, batch=16),
            trial(2, C, 0.85, {1: 0.8, 2: 0.85}, 200, lr=1e-4, epochs=2),
            trial(3, F, None, {}, 5),
            trial(4, C, 0.83, {1: 0.83}, 100, epochs=1),
            trial(5, R, None, {1: 0.5}, 0)]


def test_trials_table_has_one_row_per_trial_with_params_and_fail_reason(trials) -> None:
    table = sv.trials_table(trials)
    assert table["number"].tolist() == [0, 1, 2, 3, 4, 5]
    assert table["state"].tolist() == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL", "COMPLETE",
                                       "RUNNING"]
    assert table.loc[0, "duration_s"] == 400 and math.isnan(table.loc[5, "duration_s"])
    assert table.loc[3, "fail_reason"] == "out of memory"
    assert sv.param_names(table) == ["batch", "epochs", "lr"]
    assert math.isnan(table.loc[1, "value"])


def test_trials_table_of_no_trials_keeps_its_columns() -> None:
    table = sv.trials_table([])
    assert table.empty and "state" in table and "value" in table


def test_state_counts_filter_and_sort(trials) -> None:
    table = sv.trials_table(trials)
    assert sv.state_counts(table) == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 1, "RUNNING": 1,
                                      "WAITING": 0}
    pruned_or_failed = sv.filter_trials(table, ["PRUNED", "FAIL"])
    assert pruned_or_failed["number"].tolist() == [1, 3]
    by_value = sv.sort_trials(table, "value", descending=True)
    assert by_value["number"].tolist()[:3] == [2, 4, 0]
    assert by_value["value"].iloc[3:].isna().all()


def test_history_frame_tracks_best_so_far_for_either_direction(trials) -> None:
    table = sv.trials_table(trials)
    up = sv.history_frame(table, "maximize")
    assert up["number"].tolist() == [0, 2, 4] and up["best"].tolist() == [0.80, 0.85, 0.85]
    down = sv.history_frame(table, "minimize")
    assert down["best"].tolist() == [0.80, 0.80, 0.80]
    assert sv.best_number(table, "maximize") == 2 and sv.best_number(table, "minimize") == 0


def test_best_number_is_none_without_a_complete_trial(trials) -> None:
    assert sv.best_number(sv.trials_table(trials[1:2]), "maximize") is None


def test_intermediate_frame_keeps_pruned_trials_and_thins_whole_trials(trials) -> None:
    lines = sv.intermediate_frame(trials)
    assert set(lines["number"]) == {0, 1, 2, 4, 5}
    assert lines[lines["number"] == 1]["state"].tolist() == ["PRUNED"]
    thin = sv.intermediate_frame(trials, max_points=5)
    assert len(thin) <= 5 + 3  # whole trials only: every kept trial has all its epochs
    for number, group in thin.groupby("number"):
        assert len(group) == len(trials[number].intermediate_values)


def test_param_kinds_read_the_distributions(trials) -> None:
    assert sv.param_kinds(trials) == {"lr": "log", "epochs": "int", "batch": "categorical"}


def test_parallel_frame_rescales_each_axis_to_unit_interval(trials) -> None:
    table = sv.trials_table(trials)
    frame = sv.parallel_frame(table, sv.param_kinds(trials))
    lr = frame[frame["axis"] == "lr"].set_index("number")["position"]
    assert lr.to_dict() == pytest.approx({0: 0.0, 2: 1.0, 4: 1.0})  # log10 1e-5 .. 1e-4
    batch = frame[frame["axis"] == "batch"]
    assert set(batch["position"]) == {0.5}  # one category among complete trials: centred
    assert set(frame["number"]) == {0, 2, 4}
    objective = frame[frame["axis"] == "objective"].set_index("number")["position"]
    assert objective.to_dict() == pytest.approx({0: 0.0, 2: 1.0, 4: 0.6})  # 0.80 .. 0.85
    assert frame.drop_duplicates("axis")["axis"].tolist()[-1] == "objective"
    assert frame.groupby("axis")["index"].nunique().eq(1).all()


def test_parallel_frame_orders_numeric_categories_by_value(trials) -> None:
    trials[4] = trial(4, TrialState.COMPLETE, 0.83, {1: 0.83}, 100, batch=16)
    trials[0] = trial(0, TrialState.COMPLETE, 0.80, {1: 0.8}, 100, batch=8)
    frame = sv.parallel_frame(sv.trials_table(trials), sv.param_kinds(trials))
    batch = frame[frame["axis"] == "batch"].set_index("number")["position"]
    assert batch.to_dict() == {0: 0.0, 2: 0.0, 4: 1.0}  # 8 before 16, not "16" before "8"


def test_slices_frame_keeps_raw_values_and_each_parameters_kind(trials) -> None:
    frame = sv.slices_frame(sv.trials_table(trials), sv.param_kinds(trials))
    assert set(frame["param"]) == {"lr", "epochs", "batch"}
    lr = frame[frame["param"] == "lr"]
    assert set(lr["kind"]) == {"log"} and lr["x"].tolist() == pytest.approx([1e-5, 1e-4, 1e-4])
    assert lr["label"].tolist() == ["1e-05", "0.0001", "0.0001"]
    epochs = frame[frame["param"] == "epochs"][["number", "x", "value"]]
    assert epochs.values.tolist() == [[0, 4, 0.8], [2, 2, 0.85], [4, 1, 0.83]]
    assert set(frame.loc[frame["param"] == "epochs", "kind"]) == {"int"}


def test_pruning_savings_extrapolates_the_epochs_not_run(trials) -> None:
    table = sv.trials_table(trials)
    savings = sv.pruning_savings(table, epochs_param="epochs")
    # trial 1: 100 s for 1 of 4 planned epochs -> 300 s saved
    assert savings.saved_s == pytest.approx(300) and savings.n_pruned == 1
    assert savings.total_s == pytest.approx(400 + 100 + 200 + 5 + 100)
    fallback = sv.pruning_savings(table, epochs_param="absent")
    assert fallback.saved_s == pytest.approx(300)  # most epochs a complete trial ran: 4


def run_for(trial_number: int, f1_negative: float) -> Run:
    ev = Evaluation(n=10, scalars={"accuracy": 0.8, "accuracy_ci_low": 0.7, "loss": 0.3},
                    per_class={"negative": ClassMetrics(0.8, 0.8, f1_negative, 5),
                               "positive": ClassMetrics(0.8, 0.8, 0.8, 5)},
                    confusion=((4, 1), (1, 4)))
    spec = RunSpec("trial", "m", "validation", "d", study="s", trial=trial_number)
    return Run(trial_number + 10, spec, datetime(2026, 1, 1, tzinfo=UTC), ev)


def test_trial_metrics_and_targets_for_importance(trials) -> None:
    metrics = sv.trial_metrics_frame({0: run_for(0, 0.7), 2: run_for(2, 0.9),
                                      1: run_for(1, 0.1)})
    assert "accuracy_ci_low" not in metrics
    assert {"f1_negative", "accuracy", "loss"} <= set(metrics.columns)
    table = sv.trials_table(trials)
    objective = sv.target_values(table, metrics, "objective")
    assert objective.to_dict() == {0: 0.80, 2: 0.85, 4: 0.83}
    f1 = sv.target_values(table, metrics, "f1_negative")
    assert f1.to_dict() == {0: 0.7, 2: 0.9}  # trial 1 was pruned: not a complete trial
    assert sv.target_values(table, metrics, "unknown").empty
    assert sv.metric_direction("loss") == "minimize"
    assert sv.metric_direction("f1_negative") == "maximize"


def test_importance_and_duration_frames() -> None:
    frame = sv.importance_frame({"a": 0.2, "b": 0.7, "c": 0.1})
    assert frame["param"].tolist() == ["b", "a", "c"]
    table = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "RUNNING"],
                          "duration_s": [3.0, math.nan]})
    assert sv.duration_frame(table)["number"].tolist() == [0]


def test_every_importance_target_is_a_metric_that_evaluate_stores() -> None:
    from trainer.metrics import evaluate

    ev = evaluate([0, 1, 0, 1], [0.2, 0.7, 0.6, 0.9], n_bootstrap=0)
    spec = RunSpec("trial", "m", "validation", "d", study="s", trial=0)
    metrics = sv.trial_metrics_frame({0: Run(1, spec, datetime(2026, 1, 1, tzinfo=UTC), ev)})
    assert sv.IMPORTANCE_TARGETS[0] == "objective"
    assert set(sv.IMPORTANCE_TARGETS[1:]) <= set(metrics.columns)


def run_with(trial_number: int, accuracy: float, n: int, ci: tuple[float, float]) -> Run:
    ev = Evaluation(n=n, scalars={"accuracy": accuracy, "accuracy_ci_low": ci[0],
                                  "accuracy_ci_high": ci[1]},
                    per_class={}, confusion=((0, 0), (0, 0)))
    spec = RunSpec("trial", "m", "validation", "d", study="s", trial=trial_number)
    return Run(trial_number + 10, spec, datetime(2026, 1, 1, tzinfo=UTC), ev)


def test_trial_intervals_prefer_the_trials_own_bootstrap_then_wilson(trials) -> None:
    trials[2].set_user_attr("epoch_metrics", [{"epoch": 2, "accuracy": 0.85,
                                                "accuracy_ci_low": 0.81,
                                                "accuracy_ci_high": 0.88}])
    runs = {0: run_with(0, 0.80, 64, (0.70, 0.90)), 2: run_with(2, 0.85, 200, (math.nan,) * 2),
            4: run_with(4, 0.75, 100, (0.6, 0.9))}  # trial 4's run is not its final value
    got = sv.trial_intervals(trials, runs).set_index("number")
    assert got.loc[0, ["n", "ci_low", "ci_high"]].tolist() == [64, 0.70, 0.90]
    assert got.loc[2, ["n", "ci_low", "ci_high"]].tolist() == [200, 0.81, 0.88]
    from trainer.metrics import wilson_interval
    assert tuple(got.loc[4, ["ci_low", "ci_high"]]) == pytest.approx(wilson_interval(83, 100))
    assert got.loc[[1, 3, 5]].isna().all().all()  # no value or no stored run: unknown


def test_best_summary_states_n_and_the_interval(trials) -> None:
    table = sv.trials_table(trials)
    assert sv.best_summary(table, "maximize") == "Best: trial 2, value 0.8500."
    runs = {2: run_with(2, 0.85, 64, (0.7421, 0.9312))}
    table = sv.with_intervals(table, sv.trial_intervals(trials, runs))
    assert sv.best_summary(table, "maximize") == \
        "Best: trial 2, value 0.8500 on 64 validation reviews, 95% interval 0.742–0.931."
    assert sv.best_summary(sv.trials_table(trials[1:2]), "maximize") is None


def test_display_table_names_columns_and_keeps_three_significant_digits(trials) -> None:
    trials[0].params["lr"], trials[2].params["lr"] = 1.78e-5, 2.04e-5
    table = sv.with_intervals(sv.trials_table(trials),
                              sv.trial_intervals(trials, {0: run_with(0, 0.8, 64, (0.7, 0.9))}))
    shown = sv.display_table(table)
    assert list(shown.columns) == ["trial", "state", "value", "95% interval", "n (reviews)",
                                   "batch", "epochs", "lr", "duration (s)", "epochs run",
                                   "started", "fail reason"]
    assert shown["lr"].tolist()[:3] == ["1.78e-05", "0.001", "2.04e-05"]
    assert shown["batch"].tolist()[:2] == ["8", "16"]
    assert shown["95% interval"].tolist()[:2] == ["0.700–0.900", "–"]
    assert shown["n (reviews)"].iloc[0] == 64 and pd.isna(shown["n (reviews)"].iloc[1])
    assert sv.param_label("per_device_train_batch_size") == "batch size"
    assert sv.param_label("max_grad_norm") == "max grad norm"


def test_pruned_frame_places_pruned_trials_at_their_last_value(trials) -> None:
    frame = sv.pruned_frame(trials)
    assert frame.to_dict("records") == [{"number": 1, "value": 0.6, "state": "PRUNED",
                                         "epoch": 1}]


def test_intermediate_frame_highlights_the_best_and_keeps_them_when_thinning(trials) -> None:
    lines = sv.intermediate_frame(trials, "maximize", highlighted=2)
    groups = lines.drop_duplicates("number").set_index("number")["group"].to_dict()
    assert groups == {0: "other", 1: "other", 2: "trial 2 (best 1)", 4: "trial 4 (best 2)",
                      5: "other"}
    low = sv.intermediate_frame(trials, "minimize", highlighted=1)
    assert set(low.loc[low["group"] != "other", "number"]) == {0}
    thin = sv.intermediate_frame(trials, "maximize", max_points=2, highlighted=2)
    assert {2, 4} <= set(thin["number"]) and thin["number"].nunique() < 5


def test_parallel_ticks_print_every_category_or_the_ends_and_middle() -> None:
    frame = pd.DataFrame({"number": range(8), "axis": ["a"] * 4 + ["b"] * 4,
                          "index": [0] * 4 + [1] * 4,
                          "position": [0.0, 1.0, 0.0, 0.5] + [0.0, 0.1, 0.7, 1.0],
                          "label": ["8", "32", "8", "16", "1", "2", "3", "4"], "value": 0.9})
    ticks = sv.parallel_ticks(frame)
    assert ticks[ticks["axis"] == "a"]["label"].tolist() == ["8", "16", "32"]
    many = frame.assign(position=[i / 7 for i in range(8)], axis="c", index=0)
    assert sv.parallel_ticks(many)["label"].tolist() == ["8", "1", "4"]


def test_brushed_numbers_keep_trials_inside_the_range_on_every_covered_axis(trials) -> None:
    frame = sv.parallel_frame(sv.trials_table(trials), sv.param_kinds(trials))
    order = frame.drop_duplicates("axis").set_index("axis")["index"].to_dict()
    assert sv.brushed_numbers(frame, {}) is None
    lr = order["lr"]
    assert sv.brushed_numbers(frame, {"index": [lr - 0.2, lr + 0.2],
                                      "position": [0.5, 1.0]}) == [2, 4]
    both = sorted([order["lr"], order["objective"]])
    assert sv.brushed_numbers(frame, {"index": [both[0] - 0.1, both[1] + 0.1],
                                      "position": [0.9, 1.0]}) == [2]  # lr high, best value
    assert sv.brushed_numbers(frame, {"index": [lr + 0.3, lr + 0.4],
                                      "position": [0.0, 1.0]}) == []  # between axes
    assert sv.brushed_numbers(frame, {"position": [0.0, 0.01]}) == []


def test_contour_frame_bins_log_parameters_geometrically_and_keeps_categories() -> None:
    table = pd.DataFrame({"number": range(9), "state": "COMPLETE", "value": range(9),
                          "params_lr": [10.0 ** (-6 + i / 4) for i in range(9)],
                          "params_batch": [8, 16, 32] * 3})
    frame = sv.contour_frame(table, {"lr": "log", "batch": "categorical"}, "lr", "batch",
                             bins=2)
    assert frame["x_lo"].tolist()[:2] == pytest.approx([1e-6, 1e-6])
    assert frame["x_hi"].iloc[0] == pytest.approx(1e-5)  # geometric middle of 1e-6 .. 1e-4
    assert frame["x_lo"].iloc[-1] == pytest.approx(1e-5)
    assert frame["x_bin"].iloc[0] == "1e-06–1e-05"
    assert frame["y_lo"].isna().all() and frame["y_bin"].tolist()[:3] == ["8", "16", "32"]
    linear = sv.contour_frame(table, {"lr": "linear"}, "lr", "batch", bins=2)
    assert linear["x_hi"].iloc[0] == pytest.approx((1e-6 + 1e-4) / 2)


def test_edf_frame_counts_the_share_of_trials_at_or_below_each_value(trials) -> None:
    frame = sv.edf_frame(sv.trials_table(trials))
    assert frame["value"].tolist() == [0.80, 0.83, 0.85]
    assert frame["fraction"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert frame["number"].tolist() == [0, 4, 2]


def test_timeline_frame_runs_a_running_trial_until_now(trials) -> None:
    now = dt.datetime(2026, 1, 1, 1, 0)
    frame = sv.timeline_frame(sv.trials_table(trials), now).set_index("number")
    assert frame.loc[0, "end"] - frame.loc[0, "start"] == dt.timedelta(seconds=400)
    assert frame.loc[5, "state"] == "RUNNING" and frame.loc[5, "end"] == now


def test_sig_gives_three_significant_digits_and_whole_numbers() -> None:
    assert [sv.sig(v) for v in (1.78e-5, 2.04e-5, 0.09234, 16, 0.1)] == \
        ["1.78e-05", "2.04e-05", "0.0923", "16", "0.1"]
    assert sv.sig(math.nan) == "–" and sv.sig("adamw") == "adamw"
    assert sv.category_order(pd.Series(["16", "8", "32"])) == ["8", "16", "32"]
    assert sv.category_order(pd.Series(["sgd", "adamw"])) == ["adamw", "sgd"]
