"""The review queue: thumbs-down answers for operators to read, newest first, with their question,
comment and reasons, marked reviewed once read; and a rated conversation as a whole.

`keys.review_queue(bucket)` holds every answer of the bucket's threads whose current rating is a
thumbs down (as `keys.review_member`), scored by the rating's time (kept by the rating script and thread
deletion); the queue shown is the buckets' queues merged by score. Filters are applied here, on
bounded pages of it, so that no request reads the whole queue. `r` decodes responses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import redis

from feedback import exchange as exchanges
from feedback import keys
from feedback.exchange import Exchange
from feedback.rating import StoredRating, from_hash

PAGE = 200  # candidates read per round trip (and at most per bucket)
MAX_PAGES = 20  # then what matched is returned: a filter matching little costs bounded work


@dataclass(frozen=True)
class ReviewItem:
    exchange_id: str
    thread_id: str
    user: str
    question: str  # the last user message the answer replied to
    answer: str
    comment: str
    reasons: list[str]
    prompt_version: str
    model_version: str
    rated_at: float
    reviewed_by: str | None
    reviewed_at: float | None


@dataclass(frozen=True)
class Turn:
    """One answer of a conversation with its current rating (None: unrated)."""

    exchange: Exchange
    rating: StoredRating | None


def _merged(r: redis.Redis, high: str, low: str, first: int) -> Iterator[list[tuple[str, float]]]:
    """The buckets' queues merged, newest first: a page of `first` members, then pages of PAGE.
    Each bucket is read a page's size at a time, only when what was read of it may come next."""
    read: dict[int, list[tuple[str, float]]] = {b: [] for b in range(keys.BUCKETS)}
    offsets = dict.fromkeys(range(keys.BUCKETS), 0)
    done: set[int] = set()
    size = first
    while True:
        low_on = [b for b in range(keys.BUCKETS) if b not in done and len(read[b]) < size]
        if low_on:
            pipe = r.pipeline(transaction=False)
            for b in low_on:
                pipe.zrevrangebyscore(keys.review_queue(b), high, low, start=offsets[b], num=size, withscores=True)
            for b, got in zip(low_on, pipe.execute(), strict=True):
                got = cast("list[tuple[str, float]]", got)
                offsets[b] += len(got)
                read[b] += got
                if len(got) < size:
                    done.add(b)
        page = sorted((m for b in read for m in read[b]), key=lambda m: -m[1])[:size]
        if not page:
            return
        taken = set(page)
        for b in read:
            read[b] = [m for m in read[b] if m not in taken]
        yield page
        size = PAGE


def size(r: redis.Redis) -> int:
    """How many answers the queue holds (every bucket's)."""
    pipe = r.pipeline(transaction=False)
    for b in range(keys.BUCKETS):
        pipe.zcard(keys.review_queue(b))
    return sum(pipe.execute())


def question_of(exchange: Exchange) -> str:
    return next((m.content for m in reversed(exchange.messages) if m.role == "user"), "")


@dataclass(frozen=True)
class _Candidate:
    """What the filters look at: a few small fields, so that a page costs little to read."""

    exchange_id: str
    rated_at: float
    thread_id: str
    user: str
    prompt_version: str
    model_version: str
    reasons: list[str]
    reviewed_by: str | None
    reviewed_at: float | None


def queue(
    r: redis.Redis,
    *,
    reason: str | None = None,
    prompt_version: str | None = None,
    model_version: str | None = None,
    user: str | None = None,
    since: float | None = None,
    until: float | None = None,
    reviewed: bool | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[ReviewItem]:
    """Thumbs-down answers rated in [since, until], newest first, that pass every filter given;
    `offset` and `limit` count matches. Reads at most MAX_PAGES pages of candidates (their small
    fields only; question and answer only for what is returned), so a rare match deep in the
    queue may be missed (then fewer than `limit` come back)."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must be >= 0")
    wanted = offset + limit
    found: list[_Candidate] = []
    high = "+inf" if until is None else repr(float(until))
    low = "-inf" if since is None else repr(float(since))
    first = max(1, min(PAGE, wanted))  # unfiltered, one page is exactly what is shown
    for pages, page in enumerate(_merged(r, high, low, first)):
        found += [c for c in _candidates(r, page) if _passes(c, reason, prompt_version, model_version, user, reviewed)]
        if len(found) >= wanted or pages + 1 >= MAX_PAGES:
            break
    return _items(r, found[offset:wanted])


def _candidates(r: redis.Redis, page: list[tuple[str, float]]) -> list[_Candidate]:
    if not page:
        return []
    refs = [(keys.parse_review_member(m), rated_at) for m, rated_at in page]
    listed = [(ref, rated_at) for ref, rated_at in refs if ref is not None]  # (members this code did not write: left out)
    if not listed:
        return []
    pipe = r.pipeline(transaction=False)
    for (thread_id, exchange_id), _ in listed:
        pipe.hmget(keys.exchange(thread_id, exchange_id), "thread_id", "user", "prompt_version", "model_version")
        pipe.hget(keys.rating(thread_id, exchange_id), "reasons")
    pipe.hmget(keys.reviewed(), [exchange_id for (_, exchange_id), _ in listed])
    rows = pipe.execute()
    marks = cast("list[str | None]", rows.pop())
    out = []
    for ((_, exchange_id), rated_at), (thread_id, owner, pv, mv), reasons, done in zip(listed, rows[::2], rows[1::2], marks, strict=True):
        if thread_id is None or reasons is None:
            continue  # deleted or re-rated between the queue read and this one
        mark = json.loads(done) if done else {}
        out.append(_Candidate(exchange_id, rated_at, thread_id, owner or "", pv or "", mv or "base", json.loads(reasons), mark.get("by"), mark.get("at")))
    return out


def _passes(c: _Candidate, reason: str | None, prompt_version: str | None, model_version: str | None, user: str | None, reviewed: bool | None) -> bool:
    return (
        (reason is None or reason in c.reasons)
        and (prompt_version is None or c.prompt_version == prompt_version)
        and (model_version is None or c.model_version == model_version)
        and (user is None or c.user == user)
        and (reviewed is None or (c.reviewed_by is not None) == reviewed)
    )


def _items(r: redis.Redis, chosen: list[_Candidate]) -> list[ReviewItem]:
    """The chosen candidates with what a reviewer reads: question, answer, comment."""
    pipe = r.pipeline(transaction=False)
    for c in chosen:
        pipe.hmget(keys.exchange(c.thread_id, c.exchange_id), exchanges.QUESTION_FIELD, exchanges.LEGACY_FIELD, "completion")
        pipe.hget(keys.rating(c.thread_id, c.exchange_id), "comment")
    rows = pipe.execute() if chosen else []
    items = []
    for c, (question_field, legacy, completion), comment in zip(chosen, rows[::2], rows[1::2], strict=True):
        if completion is None:
            continue  # deleted since
        question = exchanges.question_of({exchanges.QUESTION_FIELD: question_field, exchanges.LEGACY_FIELD: legacy})
        item = ReviewItem(
            c.exchange_id, c.thread_id, c.user, question, completion or "", comment or "", c.reasons,
            c.prompt_version, c.model_version, c.rated_at, c.reviewed_by, c.reviewed_at,
        )  # fmt: skip
        items.append(item)
    return items


def mark_reviewed(r: redis.Redis, answers: list[tuple[str, str]], by: str) -> int:
    """Mark answers (thread id, exchange id) of the queue reviewed by `by` (now); returns how many
    were newly marked. Answers not in the queue (re-rated up, deleted) are left out. KeyPartError
    for an invalid id."""
    for thread_id, exchange_id in answers:
        if not (keys.valid_id(thread_id) and keys.valid_id(exchange_id)):
            raise keys.KeyPartError(f"invalid answer {thread_id[:80]!r}/{exchange_id[:80]!r}")
    if not answers:
        return 0
    pipe = r.pipeline(transaction=False)
    for thread_id, exchange_id in answers:
        pipe.zscore(keys.review_queue(keys.bucket(thread_id)), keys.review_member(thread_id, exchange_id))
    queued = [e for (_, e), score in zip(answers, pipe.execute(), strict=True) if score is not None]
    if not queued:
        return 0
    mark = json.dumps({"by": by, "at": time.time()})
    return int(r.hset(keys.reviewed(), mapping=dict.fromkeys(queued, mark)))


def conversation(r: redis.Redis, thread_id: str) -> list[Turn]:
    """The answers of a thread in order, each with its current rating (what a reviewer reads
    around a thumbs down). Empty for an unknown thread."""
    ids = cast("list[str]", r.zrange(keys.thread_exchanges(thread_id), 0, -1))
    pipe = r.pipeline(transaction=False)
    for exchange_id in ids:
        pipe.hgetall(keys.exchange(thread_id, exchange_id))
        pipe.hgetall(keys.rating(thread_id, exchange_id))
    rows = pipe.execute()
    ratings = {ex["id"]: from_hash(rt) for ex, rt in zip(rows[::2], rows[1::2], strict=True) if ex}
    return [Turn(e, ratings[e.id]) for e in exchanges.rebuild_sync(r, rows[::2])]
