"""Approval over time for the operator console, from the aggregates the writers keep.

`keys.approval_counts(bucket)` counts the current ratings of a bucket's threads per hour of the
rated answer, prompt version, model version and value; the rating script and thread deletion move
the counts in the same atomic step as the rating (feedback/lua/approval.lua). The overview reads
the buckets' hashes (one round trip), whatever the number of answers; `rebuild` recounts them (and
the review queues) from the stored ratings: the migration for data written before the aggregates,
and a repair.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal, cast

import redis

from feedback import keys
from feedback import rating as ratings
from feedback.report import wilson
from feedback.scripts import lua

HOUR = 3600
BUCKETS = (HOUR, 24 * HOUR, 7 * 24 * HOUR, 30 * 24 * HOUR)  # what `approval` picks from
MAX_BUCKETS = 60  # points on a chart: auto picks the smallest bucket giving at most this many
FORMAT = "1"  # keys.stats_version: bump when the aggregates' format changes (then `up` rebuilds)
REBUILD_TTL_S = 3600  # a crashed rebuild's temporary keys expire
REPLACE = lua("replace_stats")

By = Literal["model_version", "prompt_version"]


@dataclass(frozen=True)
class Point:
    start: float  # bucket start, epoch s
    liked: int
    n: int
    lo: float  # Wilson 95% interval of the approval rate
    hi: float

    @property
    def rate(self) -> float:
        return self.liked / self.n if self.n else 0.0


@dataclass(frozen=True)
class Series:
    bucket_s: int
    groups: dict[str, list[Point]]  # group -> its buckets with ratings, oldest first; groups in order of first use
    totals: dict[str, Point]  # group -> all its ratings (start: its first bucket)
    volume: list[Point]  # every group together, per bucket


def point(start: float, liked: int, n: int) -> Point:
    lo, hi = wilson(liked, n)
    return Point(start, liked, n, lo, hi)


def cell(created_at: str | None, prompt_version: str | None, model_version: str | None) -> str:
    """The field prefix of an answer, as feedback/lua/approval.lua computes it ("<value>" follows)."""
    try:
        at = float(created_at) if created_at is not None else 0.0
    except ValueError:
        at = 0.0  # Lua's tonumber gives nil, then 0
    return f"{math.floor(at / HOUR) * HOUR}|{prompt_version or ''}|{model_version or 'base'}|"


def parse_field(field: str) -> tuple[int, str, str, int]:
    """(hour start, prompt version, model version, value) of an approval_counts field. The model
    version is an id (no '|'), so a prompt version holding one still parses."""
    hour, rest = field.split("|", 1)
    prompt_version, model_version, value = rest.rsplit("|", 2)
    return int(hour), prompt_version, model_version, int(value)


def auto_bucket(first: int, last: int) -> int:
    """The smallest bucket giving at most MAX_BUCKETS buckets from `first` to `last` (hour starts)."""
    for size in BUCKETS:
        if last // size - first // size + 1 <= MAX_BUCKETS:
            return size
    return BUCKETS[-1]


def approval(r: redis.Redis, by: By, bucket_s: int | None = None) -> Series:
    """Approval per `by` and time bucket (None: auto_bucket over the data's span), from the one
    counts hash: a few thousand fields for a year of hourly cells, read in one round trip.
    `r` decodes responses (feedback.connection.connect_sync)."""
    pipe = r.pipeline(transaction=False)
    for b in range(keys.BUCKETS):
        pipe.hgetall(keys.approval_counts(b))
    counts: dict[str, int] = defaultdict(int)
    for bucket_counts in cast("list[dict[str, str]]", pipe.execute()):
        for field, raw in bucket_counts.items():
            counts[field] += int(raw)
    cells: list[tuple[int, str, int, int]] = []  # hour, group, value, count
    for field, n in counts.items():
        hour, prompt_version, model_version, value = parse_field(field)
        if n > 0:
            cells.append((hour, prompt_version if by == "prompt_version" else model_version, value, n))
    if bucket_s is None:
        bucket_s = auto_bucket(min(c[0] for c in cells), max(c[0] for c in cells)) if cells else HOUR
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be positive, not {bucket_s}")
    per_group: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))  # group -> start -> [liked, n]
    for hour, group, value, count in cells:
        tally = per_group[group][hour // bucket_s * bucket_s]
        tally[0] += count * value
        tally[1] += count
    by_first_use = sorted(per_group.items(), key=lambda gb: (min(gb[1]), gb[0]))
    groups = {g: [point(start, liked, n) for start, (liked, n) in sorted(b.items())] for g, b in by_first_use}
    totals = {g: point(points[0].start, sum(p.liked for p in points), sum(p.n for p in points)) for g, points in groups.items()}
    together: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for points in groups.values():
        for p in points:
            together[p.start][0] += p.liked
            together[p.start][1] += p.n
    volume = [point(start, liked, n) for start, (liked, n) in sorted(together.items())]
    return Series(bucket_s, groups, totals, volume)


def built(r: redis.Redis) -> bool:
    """Whether the aggregates were built (by `rebuild`): else data written before them is missing."""
    return bool(r.exists(keys.stats_version()))


def rebuild(r: redis.Redis, batch: int = 5000) -> int:
    """Recount the approval counts and the review queue from every current rating, written beside
    the real keys and renamed over them in one transaction; then mark them built. Idempotent.
    Returns the ratings counted. Run it while no ratings are written (`chatbot up` runs it before
    the web app starts): a rating changed during the scan may be counted as it was."""
    counts: list[dict[str, int]] = [defaultdict(int) for _ in range(keys.BUCKETS)]
    queues: list[dict[str, float]] = [{} for _ in range(keys.BUCKETS)]
    counted = 0
    for rated in ratings.rated_sync(r, batch):
        pipe = r.pipeline(transaction=False)
        for thread_id, exchange_id, _ in rated:
            pipe.hmget(keys.rating(thread_id, exchange_id), "value", "updated_at")
            pipe.hmget(keys.exchange(thread_id, exchange_id), "created_at", "prompt_version", "model_version")
        rows = pipe.execute()
        for (thread_id, exchange_id, _), (value, updated_at), (created_at, prompt_version, model_version) in zip(rated, rows[::2], rows[1::2], strict=True):
            if value is None:
                continue  # un-rated between the listing and the read
            b = keys.bucket(thread_id)
            counts[b][cell(created_at, prompt_version, model_version) + value] += 1
            if value == "0":
                queues[b][keys.review_member(thread_id, exchange_id)] = float(updated_at or 0)
            counted += 1

    # Per bucket, temporary keys in its slot, unique per rebuild, expiring if it crashes.
    rebuild_id = uuid.uuid4().hex
    for b in range(keys.BUCKETS):
        tmp_counts, tmp_queue = keys.approval_counts_rebuilding(b, rebuild_id), keys.review_queue_rebuilding(b, rebuild_id)
        pipe = r.pipeline(transaction=False)
        items = list(counts[b].items())
        for start in range(0, len(items), batch):
            pipe.hset(tmp_counts, mapping=dict(items[start : start + batch]))
        members = list(queues[b].items())
        for start in range(0, len(members), batch):
            pipe.zadd(tmp_queue, dict(members[start : start + batch]))
        for tmp in (tmp_counts, tmp_queue):
            pipe.expire(tmp, REBUILD_TTL_S)
        pipe.execute()
        r.eval(REPLACE, 4, tmp_counts, keys.approval_counts(b), tmp_queue, keys.review_queue(b))
    r.set(keys.stats_version(), FORMAT)
    return counted
