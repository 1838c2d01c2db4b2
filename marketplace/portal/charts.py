"""The best-score-over-time chart, drawn server-side as SVG geometry (no JavaScript library)."""

from dataclasses import dataclass

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 12, 36


# Each metric's possible values: an axis never runs past them (an AUC axis stops at 1.0).
METRIC_RANGES: dict[str, tuple[float | None, float | None]] = {
    "accuracy": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0), "roc_auc": (0.0, 1.0), "f1": (0.0, 1.0),
    "log_loss": (0.0, None), "mean_squared_error": (0.0, None), "mean_absolute_error": (0.0, None),
    "r2": (None, 1.0),
}  # fmt: skip

# Past this many models the chart draws every model that set a new best and an even sample of
# the rest (the step line stays exact): 1,000 dots are a blob, and weigh the page down.
MAX_DOTS = 120


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    path: str
    points: list[dict]
    y_ticks: list[dict]
    x_ticks: list[dict]
    baseline_y: float
    total: int = 0
    summary: str = ""


def clamp_axis(v0: float, v1: float, *, step: float, metric: str | None) -> tuple[float, float]:
    """The value axis: at least four steps of the shown precision tall, inside the metric's range."""
    if v1 - v0 < 4 * step:  # too flat to label: widen to four steps of the shown precision
        middle = (v0 + v1) / 2
        v0, v1 = middle - 2 * step, middle + 2 * step
    lo, hi = METRIC_RANGES.get(metric or "", (None, None))
    if hi is not None and v1 > hi:
        v0, v1 = v0 - (v1 - hi), hi
    if lo is not None and v0 < lo:
        v0, v1 = lo, (v1 + (lo - v0)) if hi is None else min(hi, v1 + (lo - v0))
    return v0, v1


def _sampled(indices: list[int], keep: set[int], limit: int) -> list[int]:
    """`keep` (the records) and an even sample of the other indices, `limit` in all, in order."""
    others = [i for i in indices if i not in keep]
    room = max(limit - len(keep), 0)
    if len(others) > room:
        others = [others[round(k * (len(others) - 1) / max(room - 1, 1))] for k in range(room)] if room else []
    return sorted(keep | set(others))


def best_score_chart(points: list[dict], *, decimals: int, metric: str | None = None) -> Chart | None:
    """A step line of the running best: `points` are {"at", "best", "value", "model_name"} in time
    order. The value axis is clamped to the metric's range; past MAX_DOTS models the dots are the
    records plus a sample (each with its value on hover)."""
    if not points:
        return None
    times = [p["at"].timestamp() for p in points]
    values = [p["best"] for p in points] + [p["value"] for p in points]
    t0, t1 = min(times), max(times)
    v0, v1 = clamp_axis(min(values), max(values), step=10 ** (-decimals), metric=metric)
    span_t = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(t: float) -> float:
        return round(PAD_LEFT + (t - t0) / span_t * plot_w if t1 > t0 else PAD_LEFT + plot_w / 2, 1)

    def y(v: float) -> float:
        return round(PAD_TOP + (1 - (v - v0) / (v1 - v0)) * plot_h, 1)

    segments, last_best = [], None
    for i, (t, p) in enumerate(zip(times, points, strict=True)):
        if i == 0:
            segments.append(f"M{x(t)},{y(p['best'])}")
        elif p["best"] != last_best:  # the line moves only where the best moved
            segments.append(f"H{x(t)}V{y(p['best'])}")
        last_best = p["best"]
    if t1 > t0:
        segments.append(f"H{x(t1)}")
    records = {i for i, p in enumerate(points) if p["value"] == p["best"]}
    shown = _sampled(list(range(len(points))), records, MAX_DOTS) if len(points) > MAX_DOTS else range(len(points))
    drawn = [
        {"x": x(times[i]), "y": y(points[i]["value"]), "best_y": y(points[i]["best"]),
         "label": f"{points[i]['model_name']}: {points[i]['value']:.{decimals}f} ({points[i]['at']:%Y-%m-%d %H:%M})",
         "is_best": points[i]["value"] == points[i]["best"]}
        for i in shown
    ]  # fmt: skip
    y_ticks, labels = [], set()
    for v in (v0 + (v1 - v0) * k / 4 for k in range(5)):
        label = f"{v:.{decimals}f}"
        if label not in labels:
            labels.add(label)
            y_ticks.append({"y": y(v), "label": label})
    first, last = points[0]["at"], points[-1]["at"]
    x_ticks = [{"x": x(t0), "label": first.strftime("%Y-%m-%d %H:%M"), "anchor": "start"}]
    if t1 > t0:
        x_ticks.append({"x": x(t1), "label": last.strftime("%Y-%m-%d %H:%M"), "anchor": "end"})
    best = points[-1]["best"]
    summary = (
        f"{len(points)} scored model{'s' if len(points) != 1 else ''} from {first:%Y-%m-%d} to {last:%Y-%m-%d}; "
        f"best {best:.{decimals}f}" + (f"; {len(drawn)} shown as dots (every new best and a sample)" if len(drawn) < len(points) else "")
    )
    return Chart(WIDTH, HEIGHT, "".join(segments), drawn, y_ticks, x_ticks, HEIGHT - PAD_BOTTOM, len(points), summary)


# Per-series strokes for round curves: the weighted line first, then one per site (colour-blind safe).
SERIES_STYLES = ["#0969da", "#bc4c00", "#8250df", "#1a7f37", "#cf222e", "#57606a", "#9a6700", "#e85aad"]


@dataclass(frozen=True)
class RoundChart:
    width: int
    height: int
    series: list[dict]
    y_ticks: list[dict]
    x_ticks: list[dict]
    baseline_y: float
    summary: str


def round_curves_chart(series: list[dict], *, decimals: int = 3) -> RoundChart | None:
    """Line chart of one metric per round: `series` are {"label", "values": [(round, value), ...]};
    None values (a site that did not contribute to a round) break the line instead of joining it."""
    drawn_series = [s for s in series if any(v is not None for _, v in s["values"])]
    if not drawn_series:
        return None
    rounds = [r for s in drawn_series for r, v in s["values"] if v is not None]
    values = [v for s in drawn_series for _, v in s["values"] if v is not None]
    r0, r1 = min(rounds), max(rounds)
    v0, v1 = min(values), max(values)
    step = 10 ** (-decimals)
    if v1 - v0 < 4 * step:
        middle = (v0 + v1) / 2
        v0, v1 = middle - 2 * step, middle + 2 * step
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(r: float) -> float:
        return round(PAD_LEFT + (r - r0) / (r1 - r0) * plot_w if r1 > r0 else PAD_LEFT + plot_w / 2, 1)

    def y(v: float) -> float:
        return round(PAD_TOP + (1 - (v - v0) / (v1 - v0)) * plot_h, 1)

    out, summary = [], []
    for i, s in enumerate(drawn_series):
        segments, pen_down, points = [], False, []
        for r, v in s["values"]:
            if v is None:
                pen_down = False
                continue
            segments.append(f"{'L' if pen_down else 'M'}{x(r)},{y(v)}")
            pen_down = True
            points.append({"x": x(r), "y": y(v), "label": f"{s['label']}, round {r}: {v:.{decimals}f}"})
        style = SERIES_STYLES[i % len(SERIES_STYLES)]
        out.append({"label": s["label"], "path": "".join(segments), "points": points, "color": style,
                    "dashed": i > 0})  # fmt: skip
        last = next((v for _, v in reversed(s["values"]) if v is not None), None)
        summary.append(f"{s['label']}: {last:.{decimals}f} at the last round")
    y_ticks, labels = [], set()
    for v in (v0 + (v1 - v0) * k / 4 for k in range(5)):
        label = f"{v:.{decimals}f}"
        if label not in labels:
            labels.add(label)
            y_ticks.append({"y": y(v), "label": label})
    x_ticks = [{"x": x(r0), "label": f"round {r0}", "anchor": "start" if r1 > r0 else "middle"}]
    if r1 > r0:
        x_ticks.append({"x": x(r1), "label": f"round {r1}", "anchor": "end"})
    return RoundChart(WIDTH, HEIGHT, out, y_ticks, x_ticks, HEIGHT - PAD_BOTTOM, "; ".join(summary))
