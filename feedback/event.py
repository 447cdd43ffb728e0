"""The rating event: one entry of the streams `keys.events(bucket)` (one per bucket of threads),
which tell the retraining job which answers' ratings changed since its watermark; and the
watermark itself: how far the job has read each stream.

Written by the rating script (feedback/lua/rate.lua: rate, unrate) and by thread deletion
(feedback/thread.py: delete); read by training/collect.py and the job. The fields are defined here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, cast

import redis
from redis.typing import EncodableT, FieldT

from feedback import keys

Action = Literal["rate", "unrate", "delete"]
ACTIONS: tuple[Action, ...] = ("rate", "unrate", "delete")


class Unknown(Enum):
    """What an event says of the rating before it when it says nothing (thread deletion, and
    events written before the rating script recorded it)."""

    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN


@dataclass(frozen=True, slots=True)
class RatingEvent:
    action: Action
    exchange: str  # the answer whose rating changed
    thread: str
    user: str  # who rated it (thread deletion: the thread's owner)
    ts: float  # when it happened (a spooled rating: when the user clicked)
    value: int | None = None  # 1 up, 0 down; only for "rate"
    # The answer's value just before this event (None: unrated). The first event after the job's
    # watermark thus says what the last run saw, however much of the stream was trimmed since:
    # the trigger (training/job.py) does not count an answer back at that value as new.
    prev: int | Literal[Unknown.UNKNOWN] | None = UNKNOWN

    @property
    def after(self) -> int | None:
        """The answer's value after this event (None: unrated or gone)."""
        return self.value if self.action == "rate" else None

    def to_fields(self) -> dict[FieldT, EncodableT]:
        """The stream entry's fields (what XADD takes); "prev" is "" for unrated."""
        fields: dict[FieldT, EncodableT] = {"action": self.action, "exchange": self.exchange, "thread": self.thread, "user": self.user, "ts": f"{self.ts:.6f}"}
        if self.value is not None:
            fields["value"] = str(self.value)
        if self.prev is not UNKNOWN:
            fields["prev"] = "" if self.prev is None else str(self.prev)
        return fields

    @classmethod
    def from_fields(cls, data: Mapping[str, str]) -> RatingEvent:
        """ValueError for an entry that is not an event (a missing field or an unknown action)."""
        try:
            action, value, prev = data["action"], data.get("value"), data.get("prev")
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}")
            before: int | Literal[Unknown.UNKNOWN] | None = UNKNOWN if prev is None else int(prev) if prev else None
            return cls(action, data["exchange"], data["thread"], data["user"], float(data["ts"]), None if value is None else int(value), before)
        except KeyError as exc:
            raise ValueError(f"rating event without {exc}") from None


Entry = tuple[str, dict[str, str]]  # (stream id, fields) as a decoding client returns it


def positions(watermark: str | None) -> dict[int, str]:
    """The watermark (keys.retrain_watermark) as {bucket: last stream id read}; a bucket left out
    is read from its start. A plain stream id (the first layout's single stream, whose entries
    the migration copied with their ids) stands for every bucket."""
    if not watermark:
        return {}
    if not watermark.startswith("{"):
        return dict.fromkeys(range(keys.BUCKETS), watermark)
    return {int(b): str(i) for b, i in json.loads(watermark).items() if 0 <= int(b) < keys.BUCKETS}


def watermark_of(read: Mapping[int, str]) -> str | None:
    """`positions` written back (None when no stream was read)."""
    return json.dumps({str(b): read[b] for b in sorted(read)}, separators=(",", ":")) if read else None


def latest(r: redis.Redis) -> dict[int, str]:
    """The last entry id of every bucket's stream that has one."""
    pipe = r.pipeline(transaction=False)
    for b in range(keys.BUCKETS):
        pipe.xrevrange(keys.events(b), count=1)
    return {b: last[0][0] for b, last in enumerate(pipe.execute()) if last}


def count(r: redis.Redis) -> int:
    """Entries in all the streams."""
    pipe = r.pipeline(transaction=False)
    for b in range(keys.BUCKETS):
        pipe.xlen(keys.events(b))
    return sum(cast("list[int]", pipe.execute()))


def read_after(r: redis.Redis, watermark: str | None, batch: int = 5000) -> Iterator[tuple[int, list[Entry]]]:
    """(bucket, entries) after the watermark, every bucket's stream, `batch` entries a stream per
    round trip; each stream's entries in order."""
    start = positions(watermark)
    todo = list(range(keys.BUCKETS))
    while todo:
        pipe = r.pipeline(transaction=False)
        for b in todo:
            pipe.xrange(keys.events(b), min=f"({start[b]}" if b in start else "-", max="+", count=batch)
        more = []
        for b, entries in zip(todo, cast("list[list[Entry]]", pipe.execute()), strict=True):
            if entries:
                yield b, entries
                start[b] = entries[-1][0]
            if len(entries) == batch:
                more.append(b)
        todo = more


def trim(r: redis.Redis, watermark: str) -> None:
    """Drop the entries up to the watermark (the dataset has them), every stream at once."""
    pipe: Any = r.pipeline(transaction=False)
    for b, last in positions(watermark).items():
        pipe.xtrim(keys.events(b), minid=last, approximate=False)
    pipe.execute()
