"""Inline SVG charts for the console, drawn in Python: no JavaScript, no CDN, works offline.

`approval_chart` draws approval over time, one line per group (model or prompt version), with its
95% interval as a band and the number of rated answers above each point; `volume_chart` draws
ratings per bucket as bars. The time axis picks tick steps that fit the span shown: hours, days,
weeks or months (UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Protocol

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
HOUR = 3600
DAY = 24 * HOUR
# Tick steps from an hour to a year: (seconds, months). Months are calendar months, not 30 days.
STEPS: tuple[tuple[int, int], ...] = (
    (HOUR, 0), (3 * HOUR, 0), (6 * HOUR, 0), (12 * HOUR, 0), (DAY, 0), (2 * DAY, 0), (7 * DAY, 0), (14 * DAY, 0),
    (0, 1), (0, 3), (0, 6), (0, 12),
)  # fmt: skip
MAX_TICKS = 8


class Point(Protocol):
    """One time bucket of a group (feedback.stats.Point): rated answers, liked, Wilson interval."""

    @property
    def start(self) -> float: ...
    @property
    def liked(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def lo(self) -> float: ...
    @property
    def hi(self) -> float: ...


def _month_floor(ts: float, months: int) -> datetime:
    d = datetime.fromtimestamp(ts, UTC)
    index = (d.year * 12 + d.month - 1) // months * months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _add_months(d: datetime, months: int) -> datetime:
    index = d.year * 12 + d.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def time_ticks(t0: float, t1: float) -> list[tuple[float, str]]:
    """Tick positions and labels for the span [t0, t1]: the smallest step giving at most
    MAX_TICKS ticks, labelled to suit the step (13:00 / Mar 04 / Mar 2025)."""
    span = max(t1 - t0, 1.0)
    for seconds, months in STEPS:
        if months:
            if span / (months * 30.44 * DAY) > MAX_TICKS:
                continue
            ticks: list[tuple[float, str]] = []
            d = _month_floor(t0, months)
            if d.timestamp() < t0:
                d = _add_months(d, months)
            while d.timestamp() <= t1:
                label = str(d.year) if months == 12 else d.strftime("%b %Y")
                ticks.append((d.timestamp(), label))
                d = _add_months(d, months)
            return ticks or [(t0, datetime.fromtimestamp(t0, UTC).strftime("%b %Y"))]
        if span / seconds > MAX_TICKS:
            continue
        first = math.ceil(t0 / seconds) * seconds
        out = []
        t = first
        year = datetime.fromtimestamp(t0, UTC).year
        while t <= t1:
            d = datetime.fromtimestamp(t, UTC)
            if seconds < DAY:  # the date on the first tick and at midnight, else the time
                label = d.strftime("%b %d %H:%M") if (d.hour == 0 or t == first) else d.strftime("%H:%M")
            else:  # the year where it changes
                label = d.strftime("%b %d") if d.year == year else d.strftime("%b %d %Y")
            year = d.year
            out.append((float(t), label))
            t += seconds
        return out or [(t0, datetime.fromtimestamp(t0, UTC).strftime("%b %d %H:%M"))]
    return []  # unreachable: the last step always fits


def describe_bucket(bucket_s: float) -> str:
    """A bucket width in words: "1 h", "6 h", "1 day", "7 days"."""
    if bucket_s >= DAY and bucket_s % DAY == 0:
        days = int(bucket_s // DAY)
        return "1 day" if days == 1 else f"{days} days"
    if bucket_s >= HOUR and bucket_s % HOUR == 0:
        return f"{int(bucket_s // HOUR)} h"
    return f"{bucket_s / 60:g} min"


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


class _Frame:
    """The plot area and its mapping from (time, value) to pixels."""

    def __init__(self, t0: float, t1: float, y_max: float, width: int, height: int, left: int = 48, right: int = 16, top: int = 18, bottom: int = 34) -> None:
        self.t0, self.t1, self.y_max = t0, max(t1, t0 + 1), y_max or 1.0
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, width - right, top, height - bottom

    def x(self, t: float) -> float:
        return self.left + (t - self.t0) / (self.t1 - self.t0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - v / self.y_max * (self.bottom - self.top)

    def axes(self, y_ticks: Sequence[tuple[float, str]]) -> list[str]:
        parts = [f'<line class="axis" x1="{self.left}" y1="{self.bottom}" x2="{self.right}" y2="{self.bottom}"/>']
        for value, label in y_ticks:
            y = self.y(value)
            parts.append(f'<line class="grid" x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}"/>')
            parts.append(f'<text class="tick" x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        for t, label in time_ticks(self.t0, self.t1):
            x = self.x(t)
            parts.append(f'<line class="axis" x1="{x:.1f}" y1="{self.bottom}" x2="{x:.1f}" y2="{self.bottom + 4}"/>')
            parts.append(f'<text class="tick" x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle">{escape(label)}</text>')
        return parts


def _svg(width: int, height: int, label: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">\n{body}\n</svg>'


def _span(points: Sequence[Point], bucket_s: float) -> tuple[float, float]:
    return min(p.start for p in points), max(p.start for p in points) + bucket_s


def approval_chart(groups: Mapping[str, Sequence[Point]], bucket_s: float, title: str, width: int = 760, height: int = 280) -> str:
    """Approval per bucket and group: a line through the rates, the 95% interval as a band, the
    bucket's count of rated answers above each point (every point has a tooltip with all of it)."""
    drawn = {g: sorted((p for p in pts if p.n > 0), key=lambda p: p.start) for g, pts in groups.items()}
    drawn = {g: pts for g, pts in drawn.items() if pts}
    if not drawn:
        return f'<p class="empty">{escape(title)}: no rated answers yet.</p>'
    t0, t1 = _span([p for pts in drawn.values() for p in pts], bucket_s)
    frame = _Frame(t0, t1, 1.0, width, height)
    parts = [f"<title>{escape(title)}</title>", *frame.axes([(v / 4, f"{v * 25}%") for v in range(5)])]
    label_every = max(1, math.ceil(max(len(p) for p in drawn.values()) / 24))  # counts stay legible
    for i, (group, pts) in enumerate(drawn.items()):
        colour = PALETTE[i % len(PALETTE)]
        mid = [(frame.x(p.start + bucket_s / 2), p) for p in pts]
        band = [f"{x:.1f},{frame.y(p.hi):.1f}" for x, p in mid] + [f"{x:.1f},{frame.y(p.lo):.1f}" for x, p in reversed(mid)]
        if len(mid) == 1:  # a single bucket: a bar for its interval
            x, p = mid[0]
            band = [f"{x - 4:.1f},{frame.y(p.hi):.1f}", f"{x + 4:.1f},{frame.y(p.hi):.1f}", f"{x + 4:.1f},{frame.y(p.lo):.1f}", f"{x - 4:.1f},{frame.y(p.lo):.1f}"]
        parts.append(f'<g class="series" data-group="{escape(group)}">')
        parts.append(f'<polygon class="band" fill="{colour}" points="{" ".join(band)}"/>')
        line = " ".join(f"{x:.1f},{frame.y(p.liked / p.n):.1f}" for x, p in mid)
        parts.append(f'<polyline class="line" stroke="{colour}" points="{line}"/>')
        for k, (x, p) in enumerate(mid):
            y = frame.y(p.liked / p.n)
            tip = f"{group}, {_stamp(p.start)} (+{describe_bucket(bucket_s)}): {p.liked}/{p.n} liked = {p.liked / p.n:.0%}, 95% interval {p.lo:.0%} to {p.hi:.0%}"
            parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(tip)}</title></circle>')
            if k % label_every == 0:
                parts.append(f'<text class="count" x="{x:.1f}" y="{max(frame.y(p.hi) - 4, frame.top - 6):.1f}" text-anchor="middle" fill="{colour}">{p.n}</text>')
        parts.append("</g>")
    return _svg(width, height, title, parts)


def volume_chart(points: Sequence[Point], bucket_s: float, title: str, width: int = 760, height: int = 160) -> str:
    """Rated answers per bucket as bars (thumbs up part darker), with tooltips."""
    pts = sorted((p for p in points if p.n > 0), key=lambda p: p.start)
    if not pts:
        return f'<p class="empty">{escape(title)}: no ratings yet.</p>'
    t0, t1 = _span(pts, bucket_s)
    top = max(p.n for p in pts)
    frame = _Frame(t0, t1, float(top), width, height)
    ticks = sorted({(float(v), str(v)) for v in (0, top // 2, top)})
    parts = [f"<title>{escape(title)}</title>", *frame.axes(ticks)]
    bar = max(1.0, (frame.x(t0 + bucket_s) - frame.x(t0)) * 0.8)
    for p in pts:
        x = frame.x(p.start) + bar * 0.1
        tip = f"{_stamp(p.start)} (+{describe_bucket(bucket_s)}): {p.n} rated, {p.liked} up, {p.n - p.liked} down"
        parts.append(
            f'<g class="bar"><title>{escape(tip)}</title>'
            f'<rect class="down" x="{x:.1f}" y="{frame.y(p.n):.1f}" width="{bar:.1f}" height="{frame.y(0) - frame.y(p.n - p.liked):.1f}"/>'
            f'<rect class="up" x="{x:.1f}" y="{frame.y(p.liked):.1f}" width="{bar:.1f}" height="{frame.y(0) - frame.y(p.liked):.1f}"/></g>'
        )
    return _svg(width, height, title, parts)

