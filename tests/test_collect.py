"""training.collect's row reader against a real Redis: the packed Lua read (one string per row)
must give exactly the rows that plain HMGETs of the exchange and rating hashes give."""

from __future__ import annotations

import threading
from collections.abc import Generator
from itertools import chain
from typing import cast

import pytest
from redis.asyncio import Redis

from feedback import keys
from support.seed import seed_exchange
from support.services import RedisServer
from training import collect as collect_module
from training.collect import RatedExchange, _Reader, collect


def by_hmget(redis_db: RedisServer, refs: list[tuple[str, str]]) -> list[RatedExchange | None]:
    """The reference: each row (thread id, exchange id) read field by field, as the reader did before packing."""
    reference = collect(redis_db.client, None)
    reader = _Reader({})
    rows = [reference._read_fields(t, e, reader) for t, e in refs]
    assert not reader.rebuild(redis_db.client)
    return rows


async def test_packed_rows_equal_field_by_field_reads(r: Redis, redis_db: RedisServer) -> None:
    ids = [
        await seed_exchange(r, thread="t1", user="zoë", question="Ça va? 你好 👋🏽", answer="Très bien — ✓ e\u0301", value=1, comment="", reasons=[]),
        await seed_exchange(r, thread="t1", user="zoë", question="and?", answer="", value=0, history=[("Ça va? 你好 👋🏽", "Très bien")], comment="😡 nope", reasons=["wrong", "unhelpful"]),
        await seed_exchange(r, thread="t2", user="bob", question="tab\there\nnewline \\0 \"quoted\"", answer="multi\nline", value=1, model_version="mv-2"),
    ]
    rows = collect(redis_db.client, None).rated
    assert sorted(rows, key=lambda x: x.exchange_id) == sorted(cast("list[RatedExchange]", by_hmget(redis_db, list(zip(["t1", "t1", "t2"], ids, strict=True)))), key=lambda x: x.exchange_id)  # all seeded
    row = {x.exchange_id: x for x in rows}
    assert row[ids[0]].messages[-1]["content"] == "Ça va? 你好 👋🏽" and row[ids[0]].completion == "Très bien — ✓ e\u0301"
    assert (row[ids[0]].comment, row[ids[0]].reasons) == ("", ())
    assert (row[ids[1]].completion, row[ids[1]].comment, row[ids[1]].reasons) == ("", "😡 nope", ("wrong", "unhelpful"))


async def test_missing_fields_take_their_defaults_or_skip_the_row(r: Redis, redis_db: RedisServer) -> None:
    no_model_version = await seed_exchange(r, thread="t1", user="alice", question="q1", answer="a1", value=1, model_version="mv-1")
    no_comment = await seed_exchange(r, thread="t1", user="alice", question="q2", answer="a2", value=0, comment="meh", reasons=["clear"])
    no_created_at = await seed_exchange(r, thread="t2", user="alice", question="q3", answer="a3", value=1)
    c = redis_db.client
    c.hdel(keys.exchange("t1", no_model_version), "model_version")
    c.hdel(keys.rating("t1", no_comment), "comment", "reasons")
    c.hdel(keys.exchange("t2", no_created_at), "created_at")
    collected = collect(c, None)
    rows = {x.exchange_id: x for x in collected.rated}
    assert rows[no_model_version].model_version == "base"
    assert (rows[no_comment].comment, rows[no_comment].reasons, rows[no_comment].value) == ("", (), 0)
    assert no_created_at not in rows and collected.skipped == {no_created_at}
    assert [rows[i] for i in (no_model_version, no_comment)] == by_hmget(redis_db, [("t1", no_model_version), ("t1", no_comment)])


async def test_a_nul_inside_a_field_is_read_field_by_field(r: Redis, redis_db: RedisServer) -> None:
    # NUL separates the packed fields: a text holding one must still come back whole.
    odd = await seed_exchange(r, thread="t1", user="alice", question="q\x00q", answer="a\x00\x00b", value=1, comment="c\x00")
    plain = await seed_exchange(r, thread="t1", user="alice", question="q2", answer="a2", value=0)
    rows = {x.exchange_id: x for x in collect(redis_db.client, None).rated}
    assert (rows[odd].completion, rows[odd].messages[-1]["content"], rows[odd].comment) == ("a\x00\x00b", "q\x00q", "c\x00")
    assert rows[plain].completion == "a2"


async def test_many_batches_and_script_calls_keep_every_row_once(r: Redis, redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_module, "SCRIPT_ROWS", 2)  # several script calls per batch, and a partial one
    ids = [await seed_exchange(r, thread=f"t{i // 3}", user="alice", question=f"q{i}", answer=f"a{i}", value=i % 2) for i in range(11)]
    gone = ids[4]  # of thread t1
    collected = collect(redis_db.client, None, batch=3)  # 4 batches, the next one sent ahead
    redis_db.client.delete(keys.rating("t1", gone))  # unrated between collect and read
    batches = list(collected.batches())
    assert len(batches) == 4 and sum(len(b) for b in batches) == 10
    assert sorted(x.exchange_id for b in batches for x in b) == sorted(set(ids) - {gone})
    assert collected.vanished == {gone}
    assert {x.exchange_id: x.completion for b in batches for x in b} == {i: f"a{n}" for n, i in enumerate(ids) if i != gone}


async def test_an_abandoned_read_leaves_the_client_usable(r: Redis, redis_db: RedisServer) -> None:
    for i in range(6):
        await seed_exchange(r, thread=f"t{i}", user="alice", question=f"q{i}", answer=f"a{i}", value=1)
    c = redis_db.client
    it = cast("Generator[list[RatedExchange], None, None]", collect(c, None, batch=2).batches())  # a generator: it can be closed
    assert len(next(it)) == 2  # the second batch's replies are on their way when we stop
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "collect-list"]  # the listing stopped too
    assert c.ping() and len(collect(c, None).rated) == 6


async def test_a_full_collection_lists_every_id_once_while_reading(r: Redis, redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_module, "LIST_SCANS", 1)  # many listing calls of small SCAN pages
    refs = [(f"t{i % 7}", await seed_exchange(r, thread=f"t{i % 7}", user="alice", question=f"q{i}", answer=f"a{i}", value=1)) for i in range(30)]
    collected = collect(redis_db.client, None, batch=4)
    assert collected.ids == [] and collected.listing  # nothing listed before the rows are read
    rows = collected.rated
    assert sorted(collected.ids) == sorted(refs) and sorted((x.thread_id, x.exchange_id) for x in rows) == sorted(refs)
    threads = [x.thread_id for x in rows]
    assert all(threads.index(t) + threads.count(t) - 1 == len(threads) - 1 - threads[::-1].index(t) for t in set(threads))  # grouped by thread
    again = collect(redis_db.client, None, batch=4)
    first = list(chain.from_iterable(again.batches()))
    assert list(chain.from_iterable(again.batches())) == first and again.ids == [(x.thread_id, x.exchange_id) for x in first]  # a second pass: no relisting
