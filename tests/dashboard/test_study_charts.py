"""The study explorer's chart specs (`chart.to_dict()`) on a study built with Optuna's API."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import optuna
import pandas as pd
import pytest

from dashboard import study_charts as sc
from dashboard import study_views as sv
from tests.dashboard import builders


@pytest.fixture(scope="module")
def trials() -> list:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(builders.make_trials(60, seed=3))
    return study.get_trials()


@pytest.fixture(scope="module")
def table(trials) -> pd.DataFrame:
    return sv.trials_table(trials)


def spec_of(chart: Any) -> dict[str, Any]:
    return chart.to_dict()


def rows(spec: dict[str, Any]) -> list[dict]:
    return [row for data in spec.get("datasets", {}).values() for row in data]


def integer_axis(encoding: dict) -> bool:
    axis = encoding.get("axis", {})
    return axis.get("format") == "d" and axis.get("tickMinStep") == 1


def test_history_marks_pruned_trials_and_counts_trials_in_whole_numbers(trials, table) -> None:
    spec = spec_of(sc.history_chart(sv.history_frame(table, "maximize"), sv.pruned_frame(trials)))
    dots, best = spec["layer"]
    assert integer_axis(dots["encoding"]["x"]) and dots["encoding"]["x"]["scale"]["nice"] is False
    assert dots["encoding"]["shape"]["scale"] == {"domain": ["COMPLETE", "PRUNED"],
                                                  "range": ["circle", "cross"]}
    states = {r["state"] for r in rows(spec)}
    assert states == {"COMPLETE", "PRUNED"}
    assert best["mark"]["interpolate"] == "step-after" and best["encoding"]["y"]["field"] == "best"
    assert dots["encoding"]["color"]["legend"]["labelLimit"] == 0


def test_intermediate_values_grey_the_mass_and_colour_the_best(trials) -> None:
    spec = spec_of(sc.intermediate_chart(sv.intermediate_frame(trials, "maximize")))
    others, best = spec["layer"]
    assert others["mark"]["color"] == sc.OTHERS_GREY and others["mark"]["opacity"] < 0.3
    assert others["transform"] == [{"filter": "(datum.group === 'other')"}]
    assert best["encoding"]["color"]["field"] == "group"
    assert best["encoding"]["color"]["legend"]["labelLimit"] == 0
    assert integer_axis(best["encoding"]["x"]) and best["encoding"]["x"]["title"] == "epoch"
    assert len({r["group"] for r in rows(spec)} - {"other"}) == sv.HIGHLIGHTED


def test_parallel_coordinates_have_an_objective_axis_values_and_a_brush(table, trials) -> None:
    frame = sv.parallel_frame(table, sv.param_kinds(trials))
    spec = spec_of(sc.parallel_chart(frame, sv.parallel_ticks(frame)))
    lines, labels = spec["layer"]
    x = lines["encoding"]["x"]
    assert x["axis"]["values"] == list(range(6)) and x["axis"]["labelLimit"] == 0
    names = json.loads(x["axis"]["labelExpr"].split("[datum.value]")[0])
    assert names == ["learning rate", "epochs (planned)", "batch size", "warmup ratio",
                     "weight decay", "objective"]
    assert spec["params"][0]["name"] == sc.BRUSH
    assert spec["params"][0]["select"] == {"type": "interval", "encodings": ["x", "y"]}
    assert labels["mark"]["type"] == "text" and labels["encoding"]["text"]["field"] == "label"
    printed = [r["label"] for r in rows(spec) if "index" in r and "number" not in r]
    assert {"8", "16", "32"} <= set(printed)  # every batch size printed on its axis


def test_slices_use_log_whole_number_and_categorical_axes(table, trials) -> None:
    spec = spec_of(sc.slices_chart(sv.slices_frame(table, sv.param_kinds(trials))))
    panels = {p["encoding"]["x"]["title"]: p["encoding"]["x"] for p in spec["concat"]}
    assert spec["columns"] == 3
    assert panels["learning rate (log scale)"]["scale"]["type"] == "log"
    assert integer_axis(panels["epochs (planned)"])
    batch = panels["batch size"]
    assert batch["type"] == "nominal" and batch["sort"] == ["8", "16", "32"]
    assert panels["warmup ratio"]["type"] == "quantitative"


def test_contour_colours_cells_by_the_mean_objective_with_trials_as_points(table,
                                                                           trials) -> None:
    kinds = sv.param_kinds(trials)
    frame = sv.contour_frame(table, kinds, "learning_rate", "per_device_train_batch_size")
    spec = spec_of(sc.contour_chart(frame, ("learning rate", "log"),
                                    ("batch size", "categorical")))
    cells, points = spec["layer"]
    assert cells["mark"]["type"] == "rect"
    assert cells["encoding"]["color"]["aggregate"] == "mean"
    assert cells["encoding"]["x"]["scale"]["type"] == "log" and "x2" in cells["encoding"]
    assert cells["encoding"]["y"]["field"] == "y_label"
    assert points["encoding"]["x"]["scale"]["type"] == "log"
    assert points["encoding"]["y"]["sort"] == ["8", "16", "32"]
    assert "learning rate and batch size" in spec["title"]


def test_contour_of_a_whole_number_parameter_draws_one_band_per_value(table, trials) -> None:
    kinds = sv.param_kinds(trials)
    frame = sv.contour_frame(table, kinds, "warmup_ratio", "num_train_epochs")
    spec = spec_of(sc.contour_chart(frame, ("warmup ratio", "linear"),
                                    ("epochs (planned)", "int")))
    cells, points = spec["layer"]
    assert cells["encoding"]["y"]["type"] == "nominal"
    assert points["encoding"]["y"]["sort"] == ["1", "2", "3", "4", "5"]
    assert cells["encoding"]["x"]["field"] == "x_lo" and cells["encoding"]["x2"]["field"] == "x_hi"


def test_edf_timeline_duration_and_importance_charts(table) -> None:
    edf = spec_of(sc.edf_chart(sv.edf_frame(table)))
    assert edf["mark"]["interpolate"] == "step-after"
    assert edf["encoding"]["y"]["scale"]["domain"] == [0, 1]
    timeline = spec_of(sc.timeline_chart(sv.timeline_frame(table, dt.datetime(2026, 1, 2))))
    encoding = timeline["encoding"]
    assert encoding["x"]["type"] == "temporal" and encoding["x2"]["field"] == "end"
    assert integer_axis(encoding["y"]) and encoding["color"]["field"] == "state"
    duration = spec_of(sc.duration_chart(sv.duration_frame(table)))
    assert integer_axis(duration["encoding"]["x"])
    assert duration["encoding"]["y"]["title"] == "duration (s)"
    importance = spec_of(sc.importance_chart(
        pd.DataFrame({"param": ["learning rate"], "importance": [1.0]}), "f1_negative"))
    assert importance["encoding"]["x"]["title"] == "importance for f1_negative"
    assert importance["encoding"]["y"]["axis"]["labelLimit"] == 0


def test_thousand_trials_ship_bounded_rows(trials) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(builders.make_trials(1000, seed=7, running=0))
    many = study.get_trials()
    spec = spec_of(sc.intermediate_chart(sv.intermediate_frame(many, "maximize")))
    assert len(rows(spec)) <= sv.MAX_LINE_POINTS + 5 * 5


def test_timeline_ends_at_the_last_recorded_event_not_at_a_stale_running_trial() -> None:
    start = dt.datetime(2026, 1, 1, 8, 0)
    frame = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE", "RUNNING"],
                          "start": [start, start + dt.timedelta(minutes=10)],
                          "end": [start + dt.timedelta(minutes=5), dt.datetime(2026, 12, 1)]})
    scale = spec_of(sc.timeline_chart(frame))["encoding"]["x"]["scale"]
    assert scale["domain"][0] == {"year": 2026, "month": 1, "date": 1, "hours": 8, "minutes": 0,
                                  "seconds": 0}
    assert scale["domain"][1] == {"year": 2026, "month": 1, "date": 1, "hours": 8,
                                  "minutes": 10, "seconds": 30}  # the last start, 5% beyond


def test_timeline_rows_are_workers_where_the_study_recorded_them() -> None:
    start = dt.datetime(2026, 1, 1, 8, 0)
    frame = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE", "PRUNED", "COMPLETE"],
                          "worker": ["gpu-1:40", "gpu-2:77", "gpu-1:40"],
                          "start": [start + dt.timedelta(minutes=m) for m in (0, 1, 6)],
                          "end": [start + dt.timedelta(minutes=m) for m in (5, 3, 9)]})
    encoding = spec_of(sc.timeline_chart(frame))["encoding"]
    assert encoding["y"]["field"] == "worker" and encoding["y"]["type"] == "nominal"
    assert {"field": "worker", "type": "nominal"} in encoding["tooltip"]
    before = spec_of(sc.timeline_chart(frame.assign(worker="")))["encoding"]["y"]
    assert before["field"] == "number" and integer_axis(before)  # older studies: by trial
