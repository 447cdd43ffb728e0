"""How an answer's prompt is stored (feedback.exchange): the fixed part once per content, earlier
turns as the ids of the answers that hold them. Every reader must give back exactly the messages
that were sent; unrated answers expire, rated ones (and what they refer to) stay."""

from __future__ import annotations

import json
import random
import uuid
from typing import cast

from redis.asyncio import Redis

from feedback import exchange as exchanges
from feedback import keys, review
from support.seed import rate
from support.services import RedisServer
from training.collect import collect

SYSTEM = {"role": "system", "content": "Be brief. " * 40}
EXAMPLES = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]



def answer_to(thread: str, messages: list[dict[str, str]], completion: str, turns: list[exchanges.TurnRef], prefix_size: int = 3, **extra: object) -> exchanges.Exchange:
    return exchanges.Exchange(
        id=uuid.uuid4().hex, thread_id=thread, user="alice", prompt_message_id=uuid.uuid4().hex,
        messages=[exchanges.PromptMessage(**m) for m in messages], completion=completion,
        prompt_id="assistant", prompt_version="1.0.0", model="echo", prefix_size=prefix_size, turns=turns, **extra,
    )  # fmt: skip


async def converse(r: Redis, thread: str, rng: random.Random, turns: int, ttl_s: int = 0) -> list[exchanges.Exchange]:
    """A thread as the app writes it: each prompt is the fixed part, the kept history (the oldest
    turns dropped at random, like the token limit does; now and then an earlier answer altered, as
    a history the stored answers don't hold) and the question."""
    written: list[exchanges.Exchange] = []
    history: list[tuple[str, str, str]] = []  # (exchange id, question, answer)
    for i in range(turns):
        kept = history[rng.randrange(len(history) + 1) :]
        body = []
        for _, q, a in kept:
            body += [{"role": "user", "content": q}, {"role": "assistant", "content": a if rng.random() > 0.2 else a + " (edited)"}]
        question = f"question {i} {rng.random()} ünïcode 👋 {{braces}}"
        ex = answer_to(thread, [SYSTEM, *EXAMPLES, *body, {"role": "user", "content": question}], f"answer {i} " + "words " * rng.randrange(1, 30),
                       [exchanges.TurnRef(exchange_id=e, question=q, answer=a) for e, q, a in history])  # fmt: skip
        assert await exchanges.save(r, ex, uuid.uuid4().hex, ttl_s)
        written.append(ex)
        history.append((ex.id, question, ex.completion))
    return written


def sent(ex: exchanges.Exchange) -> list[dict[str, str]]:
    return [m.model_dump() for m in ex.messages]


async def test_every_reader_rebuilds_the_exact_prompts(r: Redis, redis_db: RedisServer) -> None:
    rng = random.Random(7)
    threads = {f"t{k}": await converse(r, f"t{k}", rng, 6) for k in range(4)}
    c = redis_db.client
    for thread, written in threads.items():
        # Stored compactly: one fixed part for all, earlier turns by reference where they are equal.
        later = c.hgetall(keys.exchange(thread, written[-1].id))
        assert "messages" not in later and later["prefix"] == exchanges.digest([SYSTEM, *EXAMPLES])
        assert all(isinstance(h, str) or "(edited)" in h["content"] or h["role"] == "user" for h in json.loads(later.get("history", "[]")))
        # The app's readers, the console's and the CLI's give back what was sent.
        assert [sent(e) for e in await exchanges.for_thread(r, thread)] == [sent(e) for e in written]
        assert [sent(e) for e in exchanges.for_thread_sync(c, thread)] == [sent(e) for e in written]
        assert [sent(t.exchange) for t in review.conversation(c, thread)] == [sent(e) for e in written]
        loaded = await exchanges.load(r, thread, written[-1].id)
        assert loaded is not None and sent(loaded) == sent(written[-1]) and loaded.prefix_size == 3
    assert len(c.keys(keys.prompt_prefix(keys.ANY))) == 1
    # The retraining job's reader, batch by batch (small batches: references across batches).
    for written in threads.values():
        for e in written:
            await rate(r, e.id, thread=e.thread_id, user="alice", value=1)
    rows = {x.exchange_id: x.messages for x in collect(c, None, batch=5).rated}
    assert rows == {e.id: sent(e) for written in threads.values() for e in written}


async def test_older_records_with_literal_messages_are_still_read(r: Redis, redis_db: RedisServer) -> None:
    first = answer_to("t1", [SYSTEM, {"role": "user", "content": "one"}], "1", [], prefix_size=1)
    # As the code before the compact form wrote it: every message in the "messages" field.
    fields = {k: v for k, v in first.to_hash().items() if k not in exchanges.PROMPT_FIELDS}
    redis_db.client.hset(keys.exchange("t1", first.id), mapping={**fields, "messages": json.dumps(sent(first))})  # type: ignore[dict-item]
    redis_db.client.zadd(keys.thread_exchanges("t1"), {first.id: first.created_at})
    second = answer_to("t1", [SYSTEM, {"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"}], "2",
                       [exchanges.TurnRef(exchange_id=first.id, question="one", answer="1")], prefix_size=1)  # fmt: skip
    assert await exchanges.save(r, second, uuid.uuid4().hex)
    assert json.loads(redis_db.client.hget(keys.exchange("t1", second.id), "history") or "") == [first.id]  # refers to the old record
    assert [sent(e) for e in await exchanges.for_thread(r, "t1")] == [sent(first), sent(second)]
    for e in (first, second):
        await rate(r, e.id, thread="t1", user="alice", value=0)
    assert {x.exchange_id: x.messages for x in collect(redis_db.client, None).rated} == {first.id: sent(first), second.id: sent(second)}


async def test_a_reference_to_an_answer_that_is_not_there_is_stored_literally(r: Redis, redis_db: RedisServer) -> None:
    elsewhere = (await converse(r, "other", random.Random(1), 1))[0]
    turn = [{"role": "user", "content": elsewhere.messages[-1].content}, {"role": "assistant", "content": elsewhere.completion}]
    gone = exchanges.TurnRef(exchange_id=uuid.uuid4().hex, question="q", answer="a")
    for refs in ([exchanges.TurnRef(exchange_id=elsewhere.id, question=turn[0]["content"], answer=turn[1]["content"])], [gone]):
        ex = answer_to("mine", [SYSTEM, *EXAMPLES, *turn, {"role": "user", "content": "next"}], "ok", refs)
        assert await exchanges.save(r, ex, uuid.uuid4().hex)
        # Another thread's answer (or one not stored) is never referred to: the turn is literal.
        assert json.loads(redis_db.client.hget(keys.exchange("mine", ex.id), "history") or "") == turn
        loaded = await exchanges.load(r, "mine", ex.id)
        assert loaded is not None and sent(loaded) == sent(ex)


async def test_a_prompt_whose_parts_are_gone_is_skipped_not_fatal(r: Redis, redis_db: RedisServer) -> None:
    written = await converse(r, "t1", random.Random(3), 3)
    for e in written:
        await rate(r, e.id, thread="t1", user="alice", value=1)
    redis_db.client.delete(keys.prompt_prefix(exchanges.digest([SYSTEM, *EXAMPLES])))
    exchanges._PREFIXES.clear()  # this process had read it
    assert await exchanges.for_thread(r, "t1") == []
    collected = collect(redis_db.client, None)
    assert collected.rated == [] and collected.skipped == {e.id for e in written}


async def test_unrated_answers_expire_and_rated_ones_keep_what_they_refer_to(r: Redis, redis_db: RedisServer) -> None:
    c = redis_db.client
    day = 86400
    written = await converse(r, "t1", random.Random(5), 6, ttl_s=30 * day)
    assert all(29 * day < c.ttl(keys.exchange("t1", e.id)) <= 30 * day for e in written)
    c.expire(keys.exchange("t1", written[0].id), 5)
    written += await converse(r, "t1", random.Random(6), 1, ttl_s=30 * day)
    assert c.ttl(keys.exchange("t1", written[0].id)) > 29 * day  # a new answer in the thread renews them all
    last = written[-2]  # the first conversation's last answer
    referred = exchanges.refs_of(cast("dict[str, str]", c.hgetall(keys.exchange("t1", last.id))))
    assert referred  # the last prompt repeats earlier turns by reference
    needed, todo = set(), list(referred)  # what it refers to, and what those refer to
    while todo:
        needed.add(e := todo.pop())
        todo += exchanges.refs_of(cast("dict[str, str]", c.hgetall(keys.exchange("t1", e))))
    await rate(r, last.id, thread="t1", user="alice", value=1)
    # The rated answer is kept, and so is every answer needed to rebuild it and them; the others
    # still expire.
    assert c.ttl(keys.exchange("t1", last.id)) == -1
    assert all(c.ttl(keys.exchange("t1", e)) == -1 for e in needed)
    assert all(c.ttl(keys.exchange("t1", e.id)) > 0 for e in written if e.id not in {last.id, *needed})
    # A later answer with a shorter lifetime never shortens a kept one.
    later = answer_to("t1", [SYSTEM, *EXAMPLES, {"role": "user", "content": last.messages[-1].content}, {"role": "assistant", "content": last.completion}, {"role": "user", "content": "more"}],
                      "fine", [exchanges.TurnRef(exchange_id=last.id, question=last.messages[-1].content, answer=last.completion)])  # fmt: skip
    assert await exchanges.save(r, later, uuid.uuid4().hex, 60)
    assert c.ttl(keys.exchange("t1", last.id)) == -1 and 0 < c.ttl(keys.exchange("t1", later.id)) <= 60
    # Once an unrated one is gone, the thread still reads (without it).
    gone = [e for e in written if e.id not in {last.id, *needed}]
    assert gone
    c.delete(*(keys.exchange("t1", e.id) for e in gone))  # what expiry does
    assert [e.id for e in await exchanges.for_thread(r, "t1")] == [e.id for e in [*written, later] if e not in gone]
