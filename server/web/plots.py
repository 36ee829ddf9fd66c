"""Trend plots drawn at the server as inline SVG: readable without JavaScript, printable, no library.

A plot shows the visits' values, the guideline thresholds as labelled dashed lines, the fitted
trend line, and the predicted crossing date of the diabetes cut-point with its range when the
registry predicts one (server.registry.fit_trend).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

from server.registry import DAYS_PER_YEAR, Trend

W, H = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 24, 40
SERIES_COLOURS = ("#1f5fa8", "#b8500f", "#2e7d32")


@dataclass
class Series:
    label: str
    points: list[tuple[datetime, float]]
    colour: str = SERIES_COLOURS[0]


@dataclass
class Plot:
    title: str
    unit: str
    series: list[Series]
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    trend: Trend | None = None


def _years(t: datetime, t0: datetime) -> float:
    return (t - t0).total_seconds() / 86400 / DAYS_PER_YEAR


def render(plot: Plot) -> str:
    """The plot as an <svg> element (empty-state text when there is nothing to draw)."""
    points = [p for s in plot.series for p in s.points]
    title = escape(plot.title)
    if not points:
        return (f'<svg class="plot" viewBox="0 0 {W} 60" role="img" aria-label="{title}: no values">'
                f'<text x="8" y="34">{title}: no values recorded</text></svg>')
    times = [t for t, _ in points]
    t_lo, t_hi = min(times), max(times)
    trend = plot.trend
    if trend and trend.crossing_range:
        t_hi = max(t_hi, min(trend.crossing_range[1], t_lo + timedelta(days=365 * 15)))
    if t_hi - t_lo < timedelta(days=30):
        t_lo, t_hi = t_lo - timedelta(days=15), t_hi + timedelta(days=15)
    values = [v for _, v in points] + [v for v, _ in plot.thresholds]
    v_lo, v_hi = min(values), max(values)
    pad = (v_hi - v_lo) * 0.12 or 1.0
    v_lo, v_hi = max(0.0, v_lo - pad), v_hi + pad
    span_s = (t_hi - t_lo).total_seconds()

    def x(t: datetime) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - t_lo).total_seconds() / span_s

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - (v - v_lo) / (v_hi - v_lo))

    out = [f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-label="{title} over time">',
           f'<title>{title} ({escape(plot.unit)})</title>',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="frame"/>']
    for i in range(5):  # value grid
        v = v_lo + (v_hi - v_lo) * i / 4
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{v:.1f}</text>')
    for i in range(4):  # time ticks
        t = t_lo + (t_hi - t_lo) * i / 3
        anchor = ("start", "middle", "middle", "end")[i]
        out.append(f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="{anchor}" class="tick">{t:%Y-%m-%d}</text>')
    out.append(f'<text x="{LEFT}" y="{TOP - 8}" class="axis">{title} ({escape(plot.unit)})</text>')
    if trend and trend.slope_per_year is not None and trend.intercept is not None:
        t0 = min(t for t, _ in plot.series[0].points)
        end = trend.crossing if trend.crossing and trend.crossing <= t_hi else max(t for t, _ in plot.series[0].points)
        y0 = trend.intercept
        y1 = trend.intercept + trend.slope_per_year * _years(end, t0)
        out.append(f'<line x1="{x(t0):.1f}" y1="{y(y0):.1f}" x2="{x(end):.1f}" y2="{y(y1):.1f}" class="trend"/>')
    if trend and trend.crossing and trend.crossing_range and trend.crossing <= t_hi:
        lo, hi = trend.crossing_range
        out.append(f'<rect x="{x(max(lo, t_lo)):.1f}" y="{TOP}" width="{max(1.0, x(min(hi, t_hi)) - x(max(lo, t_lo))):.1f}"'
                   f' height="{H - TOP - BOTTOM}" class="crossing-range"/>'
                   f'<line x1="{x(trend.crossing):.1f}" x2="{x(trend.crossing):.1f}" y1="{TOP}" y2="{H - BOTTOM}"'
                   f' class="crossing"/>')
        # At the foot of the line, on the side with room: the threshold labels sit at the top right.
        right_half = x(trend.crossing) > (LEFT + W - RIGHT) / 2
        out.append(f'<text x="{x(trend.crossing) + (-4 if right_half else 4):.1f}" y="{H - BOTTOM - 6}"'
                   f' text-anchor="{"end" if right_half else "start"}" class="crossing-label">'
                   f'predicted {trend.crossing:%Y-%m-%d}</text>')
    placed: list[float] = []  # label baselines so far: a label too close to one goes below its line
    for value, label in sorted(plot.thresholds, key=lambda item: -item[0]):
        above = y(value) - 4
        baseline = above if all(abs(above - b) >= 11 for b in placed) else y(value) + 12
        placed.append(baseline)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="threshold"/>'
                   f'<text x="{W - RIGHT - 4}" y="{baseline:.1f}" text-anchor="end" class="threshold-label">'
                   f'{escape(label)} {value:g}</text>')
    for series in plot.series:
        pts = sorted(series.points)
        if len(pts) > 1:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{series.colour}" stroke-width="1.5"/>')
        for t, v in pts:
            out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="4" fill="{series.colour}">'
                       f'<title>{escape(series.label)} {t:%Y-%m-%d}: {v:.2f}</title></circle>')
    if len(plot.series) > 1:
        for i, series in enumerate(plot.series):
            out.append(f'<rect x="{LEFT + 8 + i * 120}" y="{H - 14}" width="10" height="10" fill="{series.colour}"/>'
                       f'<text x="{LEFT + 22 + i * 120}" y="{H - 5}" class="tick">{escape(series.label)}</text>')
    out.append("</svg>")
    return "".join(out)
