"""Seed rated exchanges the way the app writes them, for dataset and job tests and benchmarks.

The async helpers go through the app's own write paths (`feedback.exchange.save`,
`feedback.rating.apply`, the data layer's `delete_thread`), so keys, formats and events are
exactly the app's. `bulk_seed` pipelines the same scripts with the same arguments (no round
trip per write): a million ratings in Redis in minutes, for benchmarks.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import cast

import redis
from redis.asyncio import Redis

from bot.datalayer import WRITE_STEP, step_call
from feedback import exchange as exchanges
from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect

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
    exchange to store a regenerated alternative of it. Stored as the app stores it: the system
    prompt as the fixed part, an earlier turn equal to an answer of the thread as its id."""
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
        prefix_size=1,
        turns=[exchanges.TurnRef(exchange_id=e.id, question=e.messages[-1].content, answer=e.completion) for e in await exchanges.for_thread(r, thread)],
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
    'rate' events) through the app's own scripts, pipelined: the keys and arguments come from
    exchange.save_call, the data layer's step_call and rating.rate_call. Each thread has
    `turns_per_thread` turns whose prompts carry the earlier turns, like the app's. Returns the ids."""
    rng = random.Random(seed)
    ids: list[str] = []
    # Loaded first (on a cluster, on every master), then EVALSHA: a cluster pipeline routes each
    # call by its keys, but does not load scripts.
    save, step, rate = (r.script_load(src) for src in (exchanges.SAVE_SCRIPT, WRITE_STEP, ratings.RATE_SCRIPT))
    pipe = r.pipeline(transaction=False)
    thread = ""
    history: list[exchanges.PromptMessage] = []
    turns: list[exchanges.TurnRef] = []
    user = ""
    base = [exchanges.PromptMessage(role="system", content=system)]
    for q, a in examples:
        base += [exchanges.PromptMessage(role="user", content=q), exchanges.PromptMessage(role="assistant", content=a)]
    for i in range(n):
        if i % turns_per_thread == 0:
            thread, user, history, turns = new_id(), f"user{rng.randrange(users)}", [], []
        question = _words(rng, rng.randint(8, 40)) + "?"
        if rng.random() < pii_share:
            question += f" Reach me at u{i}@example.com or +1 415-555-{rng.randrange(10000):04d}."
        answer = _words(rng, rng.randint(40, 120)) + "."
        ex_id, msg_id = new_id(), new_id()
        ts = start_ts + i
        ex = exchanges.Exchange(
            id=ex_id, thread_id=thread, user=user, prompt_message_id=msg_id,
            messages=[*base, *history, exchanges.PromptMessage(role="user", content=question)],
            completion=answer, prompt_id="assistant", prompt_version=rng.choice(["1.0.0", "1.1.0"]),
            model="echo", created_at=ts, latency_ms=120.0, prefix_size=len(base), turns=turns,
        )
        for step_id in (msg_id, ex_id, new_id()):  # user message, run step, assistant message
            step_keys, step_args = step_call(user, thread, {"id": step_id, "threadId": thread, "type": "seeded"}, ts)
            pipe.evalsha(step, len(step_keys), *step_keys, *step_args)
        if i % turns_per_thread == 0:
            pipe.zadd(keys.user_threads(user), {thread: ts})  # the thread list (the user's slot), as the data layer does
            if (prefix := exchanges.prefix_write(ex)) is not None:
                pipe.set(*prefix, nx=True)
        save_keys, save_args = exchanges.save_call(ex, new_id())
        pipe.evalsha(save, len(save_keys), *save_keys, *save_args)
        value = int(rng.random() < 0.6)
        rate_keys, rate_args = ratings.rate_call(op_id=new_id(), user=user, thread_id=thread, exchange_id=ex_id, rating=ratings.RatingInput(value=value), ts=ts + 1)
        pipe.evalsha(rate, len(rate_keys), *rate_keys, *rate_args)
        history += [exchanges.PromptMessage(role="user", content=question), exchanges.PromptMessage(role="assistant", content=answer)]
        turns.append(exchanges.TurnRef(exchange_id=ex_id, question=question, answer=answer))
        ids.append(ex_id)
        if len(pipe) >= batch * 5:
            pipe.execute()
    pipe.execute()
    return ids
