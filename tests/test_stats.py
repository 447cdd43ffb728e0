"""The operator console's store: approval counts and the review queue kept by the writers (rate,
re-rate, unrate, thread deletion) equal to a recount of the stored ratings and to `stats.rebuild`;
approval over time; the review queue's filters and paging; the audit log. Real Redis, the app's
own write paths (support/seed.py)."""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import cast

import pytest
from redis.asyncio import Redis

from feedback import audit, keys, review, stats
from feedback import rating as ratings
from feedback.connection import connect
from feedback.report import wilson
from support import seed
from support.services import RedisServer

T0 = 1_700_000_000.0  # a round hour: 1699999200 + 800 s
HOUR = 3600


@pytest.fixture
async def ar(redis_db: RedisServer) -> AsyncIterator[Redis]:
    r = connect(redis_db.url)
    yield r
    await r.aclose()


Counts = dict[int, dict[str, str]]  # bucket -> approval counts field -> count (buckets with none left out)
Queue = dict[int, dict[str, float]]  # bucket -> review queue member -> score (empty buckets left out)


def recount(redis_db: RedisServer, threads: list[str]) -> tuple[Counts, Queue]:
    """The aggregates as they should be, counted here from the stored ratings (every one in one of
    `threads`) and their answers."""
    c = redis_db.client
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    queue: Queue = defaultdict(dict)
    for key in c.scan_iter(match=keys.rating(keys.ANY, keys.ANY)):
        exchange_id = cast(str, key).rsplit(":", 1)[1]
        bucket_of = [t for t in threads if keys.rating(t, exchange_id) == key]  # its bucket's threads: its answer names which
        assert bucket_of, f"rating {key} of no known thread"
        ex = cast("dict[str, str]", c.hgetall(keys.exchange(bucket_of[0], exchange_id)))
        thread, b = ex["thread_id"], keys.bucket(bucket_of[0])
        assert thread in bucket_of
        rating = cast("dict[str, str]", c.hgetall(key))
        hour = math.floor(float(ex["created_at"]) / HOUR) * HOUR
        counts[b][f"{hour}|{ex['prompt_version']}|{ex['model_version']}|{rating['value']}"] += 1
        if rating["value"] == "0":
            queue[b][keys.review_member(thread, exchange_id)] = float(rating["updated_at"])
    return {b: {k: str(v) for k, v in cb.items()} for b, cb in counts.items()}, dict(queue)


def aggregates(redis_db: RedisServer) -> tuple[Counts, Queue]:
    """What the writers keep, per bucket."""
    c = redis_db.client
    counts = {b: cast("dict[str, str]", c.hgetall(keys.approval_counts(b))) for b in range(keys.BUCKETS)}
    queue = {b: dict(cast("list[tuple[str, float]]", c.zrange(keys.review_queue(b), 0, -1, withscores=True))) for b in range(keys.BUCKETS)}
    return {b: cb for b, cb in counts.items() if cb}, {b: qb for b, qb in queue.items() if qb}


async def test_random_rates_unrates_and_deletions_keep_the_aggregates_equal_to_a_recount_and_to_rebuild(ar: Redis, redis_db: RedisServer) -> None:
    rng = random.Random(7)
    answers: dict[str, tuple[str, str]] = {}  # exchange id -> (thread, user)
    threads = [f"t{i}" for i in range(8)]
    owner = {t: f"user{i % 3}" for i, t in enumerate(threads)}
    deleted: set[str] = set()
    for step in range(300):
        live = [t for t in threads if t not in deleted]
        roll = rng.random()
        if roll < 0.3 or not answers:
            thread = rng.choice(live)
            exchange_id = await seed.seed_exchange(
                ar, thread=thread, user=owner[thread], question=f"q{step}", answer=f"a{step}", value=rng.choice([None, 0, 1]),
                prompt_version=rng.choice(["1.0.0", "1.1.0"]), model_version=rng.choice(["base", "mv-1", "mv-2"]),
                created_at=T0 + rng.uniform(0, 30 * HOUR), rated_at=T0 + step, comment=rng.choice([None, "meh"]),
            )  # fmt: skip
            answers[exchange_id] = (thread, owner[thread])
        elif roll < 0.97:
            exchange_id = rng.choice(list(answers))
            thread, user = answers[exchange_id]
            if rng.random() < 0.25:
                await seed.unrate(ar, exchange_id, thread=thread, user=user)  # also of an unrated answer: nothing changes
            else:
                await seed.rate(ar, exchange_id, thread=thread, user=user, value=rng.choice([0, 1]), ts=T0 + step, reasons=rng.choice([[], ["wrong"]]))
        elif len(live) > 3:
            thread = rng.choice(live)
            await seed.delete_thread(ar, thread)
            deleted.add(thread)
            answers = {e: tu for e, tu in answers.items() if tu[0] != thread}
        if step % 50 == 0:
            assert aggregates(redis_db) == recount(redis_db, threads), step
    assert deleted, "the sequence deletes threads"

    # A replayed write (same op id) changes nothing, nor does an identical re-rate.
    exchange_id = next(iter(answers))
    thread, user = answers[exchange_id]
    rating = ratings.RatingInput(value=0)
    for _ in range(2):
        await ratings.apply(ar, op_id="replayed", user=user, thread_id=thread, exchange_id=exchange_id, rating=rating, ts=T0 + 1000)
    await seed.rate(ar, exchange_id, thread=thread, user=user, value=0, ts=T0 + 1001)

    expected = recount(redis_db, threads)
    assert aggregates(redis_db) == expected
    assert all(int(v) > 0 for cb in expected[0].values() for v in cb.values())  # a count that reached 0 is gone
    c = redis_db.client
    assert c.zscore(keys.review_queue(keys.bucket(thread)), keys.review_member(thread, exchange_id)) == T0 + 1001  # scored by the current rating's time

    # rebuild recounts the same, from scratch, and again (idempotent).
    c.delete(*(keys.approval_counts(b) for b in range(keys.BUCKETS)))
    c.zadd(keys.review_queue(keys.bucket(thread)), {"stale": 1.0})
    counted = len(list(c.scan_iter(match=keys.rating(keys.ANY, keys.ANY))))
    assert not stats.built(c)
    assert stats.rebuild(c) == counted > 0
    assert aggregates(redis_db) == expected and stats.built(c)
    assert {c.ttl(keys.approval_counts(b)) for b in expected[0]} == {c.ttl(keys.review_queue(b)) for b in expected[1]} == {-1}
    assert stats.rebuild(c) == counted
    assert aggregates(redis_db) == expected
    assert [k for k in c.scan_iter(match="*rebuild*")] == []


async def test_rebuild_of_no_ratings_empties_the_aggregates(redis_db: RedisServer) -> None:
    c = redis_db.client
    c.hset(keys.approval_counts(0), "0|x|base|1", "3")
    c.zadd(keys.review_queue(keys.BUCKETS - 1), {keys.review_member("gone", "gone"): 1.0})
    assert stats.rebuild(c) == 0
    assert aggregates(redis_db) == ({}, {}) and stats.built(c)


async def test_a_deleted_thread_leaves_the_counts_the_queue_and_the_reviewed_marks(ar: Redis, redis_db: RedisServer) -> None:
    kept = await seed.seed_exchange(ar, thread="keep", user="alice", question="q", answer="a", value=0, created_at=T0)
    gone = [await seed.seed_exchange(ar, thread="gone", user="alice", question=f"q{i}", answer="a", value=i % 2, created_at=T0) for i in range(3)]
    c = redis_db.client
    assert review.mark_reviewed(c, [("keep", kept), ("gone", gone[0])], "ops") == 2
    await seed.delete_thread(ar, "gone")
    b = keys.bucket("keep")
    rated_at = float(cast(str, c.hget(keys.rating("keep", kept), "updated_at")))
    assert aggregates(redis_db) == recount(redis_db, ["keep", "gone"]) == ({b: {f"{math.floor(T0 / HOUR) * HOUR}|1.0.0|base|0": "1"}}, {b: {keys.review_member("keep", kept): rated_at}})
    assert list(cast("dict[str, str]", c.hgetall(keys.reviewed()))) == [kept]


async def test_approval_over_time_per_model_and_prompt_version(ar: Redis, redis_db: RedisServer) -> None:
    hour0 = math.floor(T0 / HOUR) * HOUR
    plan = [  # (hours after hour0, prompt version, model version, value)
        (0, "1.0.0", "base", 1), (0, "1.0.0", "base", 0), (0, "1.1.0", "base", 1),
        (2, "1.1.0", "mv-1", 1), (2, "1.1.0", "mv-1", 1), (2.5, "1.0.0", "mv-1", 0),
        (30, "1.1.0", "mv-1", 1),
    ]  # fmt: skip
    for i, (h, pv, mv, value) in enumerate(plan):
        await seed.seed_exchange(ar, thread=f"t{i}", user="alice", question="q", answer="a", value=value, prompt_version=pv, model_version=mv, created_at=hour0 + h * HOUR + 5)
    c = redis_db.client

    hourly = stats.approval(c, "model_version", bucket_s=HOUR)
    assert hourly.bucket_s == HOUR
    assert list(hourly.groups) == ["base", "mv-1"]  # in order of first use
    assert [(p.start - hour0, p.liked, p.n) for p in hourly.groups["base"]] == [(0, 2, 3)]
    assert [(p.start - hour0, p.liked, p.n) for p in hourly.groups["mv-1"]] == [(2 * HOUR, 2, 3), (30 * HOUR, 1, 1)]  # empty hours left out
    total = hourly.totals["mv-1"]
    assert (total.start, total.liked, total.n) == (hour0 + 2 * HOUR, 3, 4)
    assert (total.lo, total.hi) == wilson(3, 4) and total.rate == 0.75 and total.lo < 0.75 < total.hi
    assert [(p.start - hour0, p.liked, p.n) for p in hourly.volume] == [(0, 2, 3), (2 * HOUR, 2, 3), (30 * HOUR, 1, 1)]

    day, day0 = 24 * HOUR, hour0 // (24 * HOUR) * (24 * HOUR)
    assert hour0 - day0 == 22 * HOUR  # so +2 h is the next day and +30 h the day after
    daily = stats.approval(c, "prompt_version", bucket_s=day)
    assert {g: [(p.start - day0, p.liked, p.n) for p in ps] for g, ps in daily.groups.items()} == {
        "1.0.0": [(0, 1, 2), (day, 0, 1)],
        "1.1.0": [(0, 1, 1), (day, 2, 2), (2 * day, 1, 1)],
    }
    assert [(p.start - day0, p.liked, p.n) for p in daily.volume] == [(0, 2, 3), (day, 2, 3), (2 * day, 1, 1)]

    auto = stats.approval(c, "model_version")  # 31 hours of data: hourly buckets fit in 60
    assert auto.bucket_s == HOUR and auto.groups == hourly.groups
    # A thumb moved: the same read sees it at once.
    ex = cast("list[str]", c.zrange(keys.thread_exchanges("t6"), 0, -1))[0]
    await seed.rate(ar, ex, thread="t6", user="alice", value=0)
    assert [(p.liked, p.n) for p in stats.approval(c, "model_version").groups["mv-1"]] == [(2, 3), (0, 1)]
    assert stats.approval(c, "model_version", bucket_s=HOUR).totals["base"] == hourly.totals["base"]


def test_auto_bucket_is_the_smallest_giving_at_most_60_points(redis_db: RedisServer) -> None:
    day, week, month = 24 * HOUR, 7 * 24 * HOUR, 30 * 24 * HOUR
    h0 = 1_699_999_200  # an hour start
    assert stats.auto_bucket(h0, h0) == HOUR
    assert stats.auto_bucket(h0, h0 + 59 * HOUR) == HOUR
    assert stats.auto_bucket(h0, h0 + 60 * HOUR) == day
    assert stats.auto_bucket(h0, h0 + 40 * day) == day
    assert stats.auto_bucket(h0, h0 + 100 * day) == week
    assert stats.auto_bucket(h0, h0 + 2 * 365 * day) == month
    assert stats.auto_bucket(h0, h0 + 20 * 365 * day) == month  # the largest, past 5 years
    assert stats.approval(redis_db.client, "model_version") == stats.Series(HOUR, {}, {}, [])
    with pytest.raises(ValueError, match="bucket_s"):
        stats.approval(redis_db.client, "model_version", bucket_s=0)


def test_a_prompt_version_holding_the_separator_still_parses() -> None:
    assert stats.parse_field("1699999200|exp|a|mv-1|0") == (1699999200, "exp|a", "mv-1", 0)
    assert stats.cell(str(T0), "1.0.0", None) == f"{math.floor(T0 / HOUR) * HOUR}|1.0.0|base|"


async def test_review_queue_filters_pages_and_marks(ar: Redis, redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    downs: list[str] = []  # oldest rating first
    for i in range(24):
        exchange_id = await seed.seed_exchange(
            ar, thread=f"t{i % 6}", user=f"user{i % 6 % 2}", question=f"question {i}", answer=f"answer {i}", value=0,
            history=[("earlier", "reply")], prompt_version="1.0.0" if i % 3 else "1.1.0", model_version="mv-1" if i % 4 == 0 else "base",
            rated_at=T0 + i, comment=f"bad {i}", reasons=["wrong"] if i % 2 else ["unhelpful", "too_long"],
        )  # fmt: skip
        downs.append(exchange_id)
        await seed.seed_exchange(ar, thread=f"t{i % 6}", user=f"user{i % 6 % 2}", question="fine", answer="good", value=1, rated_at=T0 + i)
    c = redis_db.client
    monkeypatch.setattr(review, "PAGE", 5)  # several pages for 24 candidates

    everything = review.queue(c, limit=100)
    assert [x.exchange_id for x in everything] == downs[::-1]  # newest first, thumbs down only
    first = everything[0]
    assert (first.question, first.answer, first.comment, first.reasons, first.rated_at) == ("question 23", "answer 23", "bad 23", ["wrong"], T0 + 23)
    assert (first.thread_id, first.user, first.prompt_version, first.model_version, first.reviewed_by, first.reviewed_at) == ("t5", "user1", "1.0.0", "base", None, None)

    def ids(**filters: object) -> list[str]:
        return [x.exchange_id for x in review.queue(c, limit=100, **filters)]  # type: ignore[arg-type]

    assert ids(reason="wrong") == [downs[i] for i in range(23, -1, -1) if i % 2]
    assert ids(reason="too_long", model_version="mv-1") == [downs[i] for i in (20, 16, 12, 8, 4, 0)]
    assert ids(prompt_version="1.1.0", user="user0") == [downs[i] for i in range(23, -1, -1) if i % 3 == 0 and i % 6 % 2 == 0]
    assert ids(since=T0 + 5, until=T0 + 9) == downs[9:4:-1]
    assert ids(reason="nonexistent") == []
    # Pages of matches: offset and limit count matching answers, not candidates read.
    wrong = ids(reason="wrong")
    assert [x.exchange_id for x in review.queue(c, reason="wrong", offset=3, limit=4)] == wrong[3:7]
    assert [x.exchange_id for x in review.queue(c, offset=20, limit=10)] == downs[3::-1]

    before = time.time()
    assert review.mark_reviewed(c, [("t5", downs[23]), ("t4", downs[22]), ("t5", "not-in-queue")], "ops") == 2
    assert review.mark_reviewed(c, [("t5", downs[23])], "ops") == 0  # already marked
    assert ids(reviewed=True) == [downs[23], downs[22]]
    assert ids(reviewed=False) == downs[21::-1]
    marked = review.queue(c, reviewed=True, limit=1)[0]
    assert marked.reviewed_by == "ops" and marked.reviewed_at is not None and marked.reviewed_at >= before
    with pytest.raises(keys.KeyPartError):
        review.mark_reviewed(c, [("t5", "bad id")], "ops")

    # Bounded work: a filter matching nothing reads at most MAX_PAGES pages.
    monkeypatch.setattr(review, "PAGE", 1)
    monkeypatch.setattr(review, "MAX_PAGES", 3)
    assert ids(reason="unhelpful") == [downs[22]]  # among the 3 newest candidates only (not 20, 18, ...)

    turns = review.conversation(c, "t5")
    assert [t.exchange.completion for t in turns] == [a for i in range(5, 24, 6) for a in (f"answer {i}", "good")]
    assert [t.rating["value"] if t.rating else None for t in turns] == [0, 1] * 4
    assert review.question_of(turns[0].exchange) == "question 5"
    assert review.conversation(c, "no-such-thread") == []


def test_audit_records_newest_first_and_filters_by_target(redis_db: RedisServer) -> None:
    c = redis_db.client
    ids = [audit.record(c, "ops", "review.mark", f"exchange:e{i}" if i % 2 else f"thread:t{i}", detail=str(i)) for i in range(12)]
    latest = audit.recent(c, count=5)
    assert [e.id for e in latest] == ids[:-6:-1]
    assert (latest[0].who, latest[0].action, latest[0].target, latest[0].detail) == ("ops", "review.mark", "exchange:e11", "11")
    assert latest[0].ts >= latest[-1].ts > 0
    # A kind of target ("thread:") or one target, from the indexes (tests/test_console.py: behind 12,000 others).
    assert [e.detail for e in audit.recent(c, target="thread:", count=4)] == ["10", "8", "6", "4"]
    assert [e.detail for e in audit.recent(c, target="exchange:e1")] == ["1"]
    assert [e.detail for e in audit.recent(c, target="exchange:e11")] == ["11"]
    assert audit.recent(c, target="model:") == []
