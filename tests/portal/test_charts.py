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
    # The line moves where the best moved (c) and runs on to the last point: b adds no segment.
    assert chart.path.startswith("M56") and chart.path.count("H") == 2
    assert [p["is_best"] for p in chart.points] == [True, False, True]
    labels = [t["label"] for t in chart.y_ticks]
    assert len(labels) == len(set(labels)) and labels[0] == "0.70" and labels[-1] == "0.90"


def test_a_single_flat_point_still_gets_readable_ticks():
    chart = best_score_chart([{"at": T0, "best": 1.0, "value": 1.0, "model_name": "a"}], decimals=4)
    labels = [t["label"] for t in chart.y_ticks]
    assert len(labels) == len(set(labels)) == 5


def test_round_curves_have_one_path_per_series_and_break_where_a_site_is_missing():
    from marketplace.portal.charts import round_curves_chart

    chart = round_curves_chart(
        [
            {"label": "All sites (weighted)", "values": [(0, 0.9), (1, 0.6), (2, 0.4)]},
            {"label": "north", "values": [(0, 1.0), (1, None), (2, 0.5)]},
        ],
        decimals=2,
    )
    weighted, north = chart.series
    assert weighted["path"].startswith("M56") and weighted["path"].count("L") == 2 and not weighted["dashed"]
    assert north["path"].count("M") == 2 and "L" not in north["path"] and north["dashed"]
    assert [t["label"] for t in chart.x_ticks] == ["round 0", "round 2"]
    assert chart.y_ticks[0]["label"] == "0.40" and chart.y_ticks[-1]["label"] == "1.00"
    assert "All sites (weighted): 0.40 at the last round" in chart.summary


def test_no_values_no_round_chart():
    from marketplace.portal.charts import round_curves_chart

    assert round_curves_chart([{"label": "a", "values": [(0, None)]}]) is None
    assert round_curves_chart([]) is None
    single = round_curves_chart([{"label": "a", "values": [(0, 0.5)]}], decimals=3)
    assert len({t["label"] for t in single.y_ticks}) == 5 and single.x_ticks[0]["anchor"] == "middle"


def test_axis_stays_inside_the_metrics_range():
    """A flat board at 1.0 widened the axis to 1.002 (issue 11); the range caps it."""
    points = [{"at": T0 + timedelta(minutes=i), "best": 1.0, "value": v, "model_name": str(i)}
              for i, v in enumerate([0.9995, 1.0, 0.9998])]  # fmt: skip
    chart = best_score_chart(points, decimals=4, metric="roc_auc")
    labels = [float(t["label"]) for t in chart.y_ticks]
    assert max(labels) == 1.0 and min(labels) < 1.0
    low = best_score_chart([{"at": T0, "best": 0.0, "value": 0.0, "model_name": "a"}], decimals=3, metric="log_loss")
    assert min(float(t["label"]) for t in low.y_ticks) == 0.0


def test_many_points_draw_every_record_and_a_sample_with_hover_values():
    import random

    rng = random.Random(7)
    points, best = [], 0.0
    for i in range(1000):
        value = round(rng.uniform(0.5, 0.9) + i / 20000, 4)
        best = max(best, value)
        points.append({"at": T0 + timedelta(minutes=i), "best": best, "value": value, "model_name": f"m{i}"})
    chart = best_score_chart(points, decimals=4, metric="accuracy")
    records = sum(1 for p in points if p["value"] == p["best"])
    assert len(chart.points) <= 120 and sum(p["is_best"] for p in chart.points) == records
    assert all(": 0." in p["label"] for p in chart.points)  # the value on hover (<title>)
    assert chart.total == 1000 and "1000 scored models" in chart.summary
    assert chart.path.count("V") == records - 1  # the step line stays exact
