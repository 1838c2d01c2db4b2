from datetime import UTC, datetime, timedelta

from marketplace.portal.charts import best_score_chart

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_no_points_no_chart():
    assert best_score_chart([], decimals=4) is None


def test_best_so_far_is_a_step_line_and_ticks_are_distinct():
    points = [
        {"at": T0, "best": 0.8, "value": 0.8, "model_name": "a"},
        {"at": T0 + timedelta(hours=1), "best": 0.8, "value": 0.7, "model_name": "b"},
        {"at": T0 + timedelta(hours=2), "best": 0.9, "value": 0.9, "model_name": "c"},
    ]
    chart = best_score_chart(points, decimals=2)
    assert chart.path.startswith("M56") and chart.path.count("H") == 3
    assert [p["is_best"] for p in chart.points] == [True, False, True]
    labels = [t["label"] for t in chart.y_ticks]
    assert len(labels) == len(set(labels)) and labels[0] == "0.70" and labels[-1] == "0.90"


def test_a_single_flat_point_still_gets_readable_ticks():
    chart = best_score_chart([{"at": T0, "best": 1.0, "value": 1.0, "model_name": "a"}], decimals=4)
    labels = [t["label"] for t in chart.y_ticks]
    assert len(labels) == len(set(labels)) == 5
