"""Did approval go up? Approval rate per model version and per prompt version, from Redis.

Approval = thumbs up / rated answers, on each answer's current rating (the last click wins),
with a Wilson 95% interval: small groups get honest, wide intervals instead of lucky rates.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from feedback import keys
from feedback import rating as ratings

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Rated:
    model_version: str
    prompt_version: str  # "<prompt id>@<version>"
    created_at: float
    value: int

    @property
    def cell(self) -> str:
        """Prompt version x model version: a prompt compared across a promotion is two cells."""
        return f"{self.prompt_version} x {self.model_version}"


@dataclass(frozen=True)
class Approval:
    group: str
    rated: int
    liked: int
    low: float  # Wilson 95% interval
    high: float
    first: float  # time of the group's first and last answer
    last: float

    @property
    def rate(self) -> float:
        return self.liked / self.rated if self.rated else 0.0


def wilson(liked: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (z=1.96: 95%)."""
    if n == 0:
        return 0.0, 1.0
    p = liked / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rated_answers(r: redis.Redis, batch: int = 5000) -> list[Rated]:
    """Every rated answer with its versions: the rating indexes listed (SCAN), pipelined reads."""
    out: list[Rated] = []
    for rated in ratings.rated_sync(r, batch):
        pipe = r.pipeline(transaction=False)
        for thread_id, exchange_id, _ in rated:
            pipe.hmget(keys.exchange(thread_id, exchange_id), "model_version", "prompt_id", "prompt_version", "created_at")
        for (_, _, value), (model_version, prompt_id, prompt_version, created_at) in zip(rated, pipe.execute(), strict=True):
            if created_at is None:
                continue  # deleted between the listing and the read
            out.append(Rated(model_version or "base", f"{prompt_id}@{prompt_version}", float(created_at), int(value)))
    return out


def _approval(group: str, rows: list[Rated]) -> Approval:
    liked = sum(x.value for x in rows)
    low, high = wilson(liked, len(rows))
    return Approval(group, len(rows), liked, low, high, min(x.created_at for x in rows), max(x.created_at for x in rows))


def approval_by(rows: Iterable[Rated], by: str) -> list[Approval]:
    """Approval per model_version, prompt_version or cell (both), in order of first use."""
    groups: dict[str, list[Rated]] = defaultdict(list)
    for x in rows:
        groups[getattr(x, by)].append(x)
    return sorted((_approval(g, xs) for g, xs in groups.items()), key=lambda a: a.first)


def over_time(rows: Iterable[Rated], by: str, bucket_s: float) -> dict[str, list[Approval]]:
    """Approval per group and time bucket (bucket start as `group`), oldest first."""
    buckets: dict[str, dict[float, list[Rated]]] = defaultdict(lambda: defaultdict(list))
    for x in rows:
        buckets[getattr(x, by)][x.created_at // bucket_s * bucket_s].append(x)
    return {g: [_approval(str(start), xs) for start, xs in sorted(b.items())] for g, b in buckets.items()}


# Time buckets the plot may use: the smallest that gives at most MAX_BUCKETS over the data's span.
BUCKETS_S = (3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 40


def auto_bucket_s(rows: Iterable[Rated]) -> float:
    """A bucket fitting the data's span: hours for a day of ratings, days for weeks, weeks or
    months beyond."""
    times = [x.created_at for x in rows]
    span = max(times) - min(times) if times else 0.0
    return float(next((b for b in BUCKETS_S if span / b <= MAX_BUCKETS), BUCKETS_S[-1]))


def bucket_label(bucket_s: float) -> str:
    days, hours = bucket_s / 86400, bucket_s / 3600
    return f"{days:g} d" if days >= 1 and days == int(days) else f"{hours:g} h"


def time_limits(rows: Iterable[Rated], bucket_s: float) -> tuple[datetime, datetime]:
    """The x axis: the data's span (bucket starts to bucket ends), padded a little on both sides,
    at least an hour wide. Matplotlib's own limits for a single date span years."""
    starts = [x.created_at // bucket_s * bucket_s for x in rows]
    low, high = min(starts), max(starts) + bucket_s
    pad = max((high - low) * 0.03, 300.0)
    if high - low + 2 * pad < 3600:
        pad = (3600 - (high - low)) / 2
    return datetime.fromtimestamp(low - pad), datetime.fromtimestamp(high + pad)


def figure(rows: list[Rated], bucket_s: float | None = None) -> Figure:
    """Approval with 95% intervals per model version (left) and prompt version (right), one point
    per time bucket (at its middle); `bucket_s` None: auto_bucket_s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    bucket = bucket_s or auto_bucket_s(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, by, title in ((axes[0], "model_version", "per model version"), (axes[1], "prompt_version", "per prompt version")):
        for group, points in over_time(rows, by, bucket).items():
            xs = [datetime.fromtimestamp(float(p.group) + bucket / 2) for p in points]
            ys = [p.rate for p in points]
            err = [[p.rate - p.low for p in points], [p.high - p.rate for p in points]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{group} (n={sum(p.rated for p in points)})")
        if rows:
            ax.set_xlim(*time_limits(rows, bucket))
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_title(f"Approval {title}")
        ax.set_xlabel(f"time ({bucket_label(bucket)} buckets)")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(0, 1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("thumbs up / rated (95% CI)")
    fig.tight_layout()
    return fig


def plot(rows: list[Rated], path: Path, bucket_s: float | None = None) -> Path:
    """figure() written to a PNG file."""
    import matplotlib.pyplot as plt

    fig = figure(rows, bucket_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
