"""Seed rated exchanges the way the app writes them, for dataset and job tests and benchmarks.

The async helpers go through the app's own write paths (`feedback.exchange.save`,
`feedback.rating.apply`, the data layer's `delete_thread`), so keys, formats and events are
exactly the app's. `bulk_seed` writes the same records with pipelined commands instead of the
Lua scripts: the only way to put a million ratings in Redis in seconds, for benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import cast

import redis
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from feedback import exchange as exchanges
from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.event import RatingEvent

SYSTEM = "You are a helpful assistant."

# About the size of the real prompt spec (bot/prompts/assistant/1.1.0.yaml rendered): every
# stored prompt repeats it, which is what makes the export heavy.
BULK_SYSTEM = (
    "You are Loop, a friendly and precise assistant. Answer the user's question directly, then add "
    "only the detail that helps. Prefer short paragraphs and lists over walls of text.\n\nGuidelines:\n"
    + "\n".join(f"- Guideline {i}: be accurate, say when you are unsure, never invent sources, keep code runnable." for i in range(10))
)
BULK_EXAMPLES = [
    ("What is the capital of France?", "Paris."),
    ("How do I reverse a list in Python?", "Use `xs[::-1]` for a reversed copy or `xs.reverse()` to reverse in place."),
]


def new_id() -> str:
    return str(uuid.uuid4())


def numbered_exchange(i: int, thread: str = "th", user: str = "alice") -> exchanges.Exchange:
    """The i-th answer of a simple series: one question, one answer, its own user message."""
    return exchanges.Exchange(
        id=f"ex{i:04d}",
        thread_id=thread,
        user=user,
        prompt_message_id=f"msg{i:04d}",
        messages=[exchanges.PromptMessage(role="user", content=f"question {i}")],
        completion=f"answer {i}",
        prompt_id="assistant",
        prompt_version="1.0.0",
        model="echo",
    )


def seed_rated_series(
    url: str,
    n: int,
    liked: Sequence[str],
    disliked: Sequence[str],
    question: Callable[[int], str],
    *,
    threads: int,
    users: int,
    paired: bool = True,
    thread_prefix: str = "t",
    offset: int = 0,
) -> list[str]:
    """n rated answers (the job's and the gate's test data): even ones liked, odd ones disliked,
    over `threads` threads and `users` users; returns their ids. paired: answers 2k and 2k+1 share
    a thread, so every thread holds both kinds (whichever threads the split holds out, the gate has
    both to compare on); else answer i goes to thread i % threads."""

    async def go() -> list[str]:
        r = connect(url)
        ids = []
        for i in range(offset, offset + n):
            good = i % 2 == 0
            pool = liked if good else disliked
            thread = (i // 2) % threads if paired else i % threads
            ids.append(await seed_exchange(r, thread=f"{thread_prefix}-{thread}", user=f"user-{i % users}", question=question(i), answer=pool[(i // 2) % len(pool)], value=int(good)))
        await r.aclose()
        return ids

    return asyncio.run(go())


async def seed_exchange(
    r: Redis,
    *,
    thread: str,
    user: str,
    question: str,
    answer: str,
    value: int | None,
    prompt_message_id: str | None = None,
    history: Sequence[tuple[str, str]] = (),
    system: str = SYSTEM,
    prompt_id: str = "assistant",
    prompt_version: str = "1.0.0",
    model: str = "echo",
    model_version: str = "base",
    exchange_id: str | None = None,
    created_at: float | None = None,
    rated_at: float | None = None,
    comment: str | None = None,
    reasons: Sequence[str] = (),
) -> str:
    """Store one answer (system prompt, earlier (question, answer) turns, the question) and, unless
    value is None, rate it. Returns the exchange id. Pass the prompt_message_id of an earlier
    exchange to store a regenerated alternative of it."""
    messages = [{"role": "system", "content": system}]
    for q, a in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": question})
    ex = exchanges.Exchange(
        id=exchange_id or new_id(),
        thread_id=thread,
        user=user,
        prompt_message_id=prompt_message_id or new_id(),
        messages=[exchanges.PromptMessage(**m) for m in messages],
        completion=answer,
        prompt_id=prompt_id,
        prompt_version=prompt_version,
        model=model,
        model_version=model_version,
        created_at=created_at if created_at is not None else time.time(),
    )
    assert await exchanges.save(r, ex, op_id=new_id())
    if value is not None:
        await rate(r, ex.id, thread=thread, user=user, value=value, ts=rated_at, comment=comment, reasons=reasons)
    return ex.id


async def rate(
    r: Redis,
    exchange_id: str,
    *,
    thread: str,
    user: str,
    value: int,
    ts: float | None = None,
    comment: str | None = None,
    reasons: Sequence[str] = (),
) -> str:
    """Rate (or re-rate) an answer through the app's rating script. Returns the event id."""
    rating = ratings.RatingInput.model_validate({"value": value, "comment": comment, "reasons": list(reasons)})
    return await ratings.apply(r, op_id=new_id(), user=user, thread_id=thread, exchange_id=exchange_id, rating=rating, ts=ts)


async def unrate(r: Redis, exchange_id: str, *, thread: str, user: str) -> str:
    """Remove a rating (the 'unrate' event). Returns the event id."""
    return await ratings.apply(r, op_id=new_id(), user=user, thread_id=thread, exchange_id=exchange_id, rating=None)


async def delete_thread(r: Redis, thread_id: str) -> None:
    """Delete a thread as the app does (data layer), which logs a 'delete' event per rating."""
    from bot.datalayer import RedisDataLayer  # chainlit import: only the tests that delete pay it
    from feedback.store import Store

    await RedisDataLayer(r, cast(Store, None)).delete_thread(thread_id)


# --- bulk, for benchmarks -----------------------------------------------------------------------


def _words(rng: random.Random, n: int) -> str:
    vocab = "the a model answer list python data value report table sort key time user thread split rate query index".split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def bulk_seed(
    r: redis.Redis,
    n: int,
    *,
    users: int = 200,
    turns_per_thread: int = 4,
    pii_share: float = 0.05,
    batch: int = 2000,
    seed: int = 0,
    start_ts: float = 1_700_000_000.0,
    system: str = BULK_SYSTEM,
    examples: Sequence[tuple[str, str]] = tuple(BULK_EXAMPLES),
) -> list[str]:
    """Write n rated exchanges (with their threads, 3 Chainlit steps each, indexes, ratings and
    'rate' events) in the formats of exchange.save and rating.apply. Each thread has
    `turns_per_thread` turns whose prompts carry the earlier turns, like the app's. Returns the ids."""
    rng = random.Random(seed)
    ids: list[str] = []
    pipe = r.pipeline(transaction=False)
    thread = ""
    history: list[dict[str, str]] = []
    user = ""
    base = [{"role": "system", "content": system}]
    for q, a in examples:
        base += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    for i in range(n):
        if i % turns_per_thread == 0:
            thread, user, history = new_id(), f"user{rng.randrange(users)}", []
            created = start_ts + i
            pipe.hset(keys.thread(thread), mapping={"id": thread, "userId": user, "userIdentifier": user, "createdAt": str(created), "updatedAt": str(created), "name": "seeded"})
            pipe.zadd(keys.user_threads(user), {thread: created})
        question = _words(rng, rng.randint(8, 40)) + "?"
        if rng.random() < pii_share:
            question += f" Reach me at u{i}@example.com or +1 415-555-{rng.randrange(10000):04d}."
        answer = _words(rng, rng.randint(40, 120)) + "."
        ex_id, msg_id = new_id(), new_id()
        ts = start_ts + i
        ex: dict[FieldT, EncodableT] = {
            "id": ex_id, "thread_id": thread, "user": user, "prompt_message_id": msg_id,
            "messages": json.dumps([*base, *history, {"role": "user", "content": question}], ensure_ascii=False),
            "completion": answer, "prompt_id": "assistant", "prompt_version": rng.choice(["1.0.0", "1.1.0"]),
            "model": "echo", "model_version": "base", "created_at": str(ts), "latency_ms": "120.0", "deleted": "0",
        }
        value = str(int(rng.random() < 0.6))
        pipe.hset(keys.exchange(ex_id), mapping=ex)
        pipe.zadd(keys.thread_exchanges(thread), {ex_id: ts})
        pipe.rpush(keys.alternatives(msg_id), ex_id)
        for step_id in (msg_id, ex_id, new_id()):  # user message, run step, assistant message
            pipe.hset(keys.step(step_id), mapping={"data": '{"type": "seeded"}', "threadId": thread})
            pipe.zadd(keys.thread_steps(thread), {step_id: ts})
        pipe.hset(keys.rating(ex_id), mapping={"value": value, "comment": "", "reasons": "[]", "user": user, "updated_at": f"{ts + 1:.6f}"})
        pipe.hset(keys.thread_ratings(thread), ex_id, value)
        pipe.xadd(keys.events(), RatingEvent("rate", ex_id, thread, user, ts + 1, int(value)).to_fields())
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        ids.append(ex_id)
        if len(pipe) >= batch * 10:
            pipe.execute()
    pipe.execute()
    return ids
