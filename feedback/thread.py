"""Threads: the record Chainlit stores a conversation in (fields: `keys.thread`), and deleting
one with everything in it.

Chainlit creates threads through the data layer, but an answer replayed from the spool, or a
step whose thread Chainlit hasn't stored yet, must still land in a thread its user owns: the Lua
scripts that may write first create the record when it is missing (feedback/lua/ensure_thread.lua).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from feedback import keys
from feedback.event import RatingEvent
from feedback.scripts import lua

FORGET_SCRIPT = lua("forget_ratings")  # the ratings leave the approval counts and review queue


def iso(ts: float) -> str:
    """Chainlit's timestamp format."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def delete(r: Redis, thread_id: str) -> bool:
    """Delete the thread with its steps, elements, answers and ratings, in one transaction (one
    slot: the thread's bucket): the user's data is gone, a "delete" event per rated answer tells
    the retraining job to forget those ratings, and they leave the approval counts and the review
    queue. Then, on their own slots, the user's thread list and the reviewed marks. False when
    there was no such thread."""
    data = cast("dict[str, str]", await r.hgetall(keys.thread(thread_id)))
    if not data:
        return False
    user = data.get("userId", "")
    step_ids = cast("list[str]", await r.zrange(keys.thread_steps(thread_id), 0, -1))
    exchange_ids = cast("list[str]", await r.zrange(keys.thread_exchanges(thread_id), 0, -1))
    element_ids = cast("set[str]", await r.smembers(keys.thread_elements(thread_id)))
    rated = cast("list[str]", await r.hkeys(keys.thread_ratings(thread_id)))
    bucket = keys.bucket(thread_id)
    async with r.pipeline(transaction=True) as pipe:
        if exchange_ids:
            # A script, first in the transaction: it reads the ratings as they are when deleted
            # (one changed since the reads above still leaves the counts exact).
            answer_keys = (k for e in exchange_ids for k in (keys.exchange(thread_id, e), keys.rating(thread_id, e)))
            script_keys = [keys.approval_counts(bucket), keys.review_queue(bucket), *answer_keys]
            pipe.eval(FORGET_SCRIPT, len(script_keys), *script_keys, *(keys.review_member(thread_id, e) for e in exchange_ids))
        for s in step_ids:
            pipe.delete(keys.step(thread_id, s))
        for e in exchange_ids:
            pipe.delete(keys.exchange(thread_id, e), keys.rating(thread_id, e))
        for el in element_ids:
            pipe.delete(keys.element(thread_id, el))
        now = time.time()
        for e in rated:
            pipe.xadd(keys.events(bucket), RatingEvent("delete", e, thread_id, user, now).to_fields())
        pipe.delete(
            keys.thread(thread_id),
            keys.thread_steps(thread_id),
            keys.thread_exchanges(thread_id),
            keys.thread_elements(thread_id),
            keys.thread_ratings(thread_id),
            keys.thread_favorites(thread_id),
        )
        await pipe.execute()
    async with r.pipeline(transaction=False) as pipe:
        if user:
            pipe.zrem(keys.user_threads(user), thread_id)
        if exchange_ids:
            pipe.hdel(keys.reviewed(), *exchange_ids)
        await pipe.execute()
    return True
