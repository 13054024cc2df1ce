"""Chart specs (`chart.to_dict()`): encodings, layers and how much data each chart ships."""
from __future__ import annotations

from typing import Any

import pandas as pd

from dashboard import charts, views
from storage.records import Curve


def spec_of(chart: Any) -> dict[str, Any]:
    return chart.to_dict()


def rows_shipped(spec: dict[str, Any]) -> int:
    return sum(len(rows) for rows in spec.get("datasets", {}).values())


def layer_marks(spec: dict[str, Any]) -> list[str]:
    marks = []
    for layer in spec.get("layer", [spec]):
        mark = layer["mark"]
        marks.append(mark["type"] if isinstance(mark, dict) else mark)
    return marks


def test_confusion_chart_shows_each_cells_count_and_share_of_its_true_class() -> None:
    frame = views.confusion_frame(((5, 1), (2, 7)))
    spec = spec_of(charts.confusion_chart(frame))
    assert layer_marks(spec) == ["rect", "text", "text"]
    assert spec["layer"][1]["encoding"]["text"] == {"field": "count", "format": ",d",
                                                    "type": "quantitative"}
    assert spec["layer"][2]["encoding"]["text"] == {"field": "share", "format": ".1%",
                                                    "type": "quantitative"}
    assert spec["title"] == charts.CONFUSION_TITLE and rows_shipped(spec) == 4


def test_roc_chart_has_chance_diagonal_and_one_colour_per_model() -> None:
    curve = Curve((0.0, 0.2, 1.0), (0.0, 0.8, 1.0), (1.0, 0.5, 0.0))
    frame = pd.concat([views.curve_frame(curve, "a"), views.curve_frame(curve, "b")])
    spec = spec_of(charts.curves_chart(frame, "roc"))
    assert layer_marks(spec) == ["line", "line"]
    lines = spec["layer"][1]["encoding"]
    assert lines["color"]["field"] == "model" and lines["x"]["title"] == "false positive rate"
    assert rows_shipped(spec) == 2 + 6


def test_pr_chart_is_titled_and_has_no_diagonal() -> None:
    curve = Curve((0.0, 1.0), (1.0, 0.5), (1.0, 0.0))
    spec = spec_of(charts.curves_chart(views.curve_frame(curve, "a"), "pr"))
    assert spec["mark"]["type"] == "line" and spec["encoding"]["y"]["title"] == "precision"
    assert spec["title"] == "precision-recall curve"


def test_calibration_chart_sizes_points_by_bin_count() -> None:
    curve = Curve((0.1, 0.9), (0.2, 0.8), (50.0, 50.0))
    spec = spec_of(charts.calibration_chart(views.curve_frame(curve, "a")))
    assert layer_marks(spec) == ["line", "line", "circle"]
    assert spec["layer"][2]["encoding"]["size"]["field"] == "w"


def test_histogram_chart_ships_bins_not_reviews() -> None:
    probs = pd.DataFrame({"label": [0, 1] * 12_500, "prob": [0.3, 0.7] * 12_500})
    spec = spec_of(charts.histogram_chart(views.probability_histogram(probs), 0.4))
    assert rows_shipped(spec) == 40 + 1  # 20 bins per class and the threshold rule
    assert layer_marks(spec) == ["bar", "rule"]


def test_contributions_chart_colours_words_by_direction() -> None:
    words = spec_of(charts.contributions_chart(pd.DataFrame(
        {"token": ["good"], "weight": [0.5], "towards": ["positive"]})))
    assert words["encoding"]["color"]["scale"]["range"] == ["#d62728", "#2ca02c"]
