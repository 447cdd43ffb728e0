"""`chatbot migrate compact` on data written by the code before the compact prompt form: the
keys of tests/fixtures/legacy-8c8b200.json were written by commit 8c8b200's own seeding helpers
(support.seed.bulk_seed and seed_exchange: the app's scripts of that day), then dumped."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, cast

import redis

from feedback import compaction, keys, review
from feedback import exchange as exchanges
from support.services import RedisServer, run_cli
from training.collect import collect

LEGACY = Path(__file__).parent / "fixtures" / "legacy-8c8b200.json"


def load_legacy(c: redis.Redis) -> dict[str, Any]:
    dump = cast("dict[str, Any]", json.loads(LEGACY.read_text(encoding="utf-8"))["keys"])
    for key, item in dump.items():
        kind, value = item["type"], item["value"]
        if kind == "hash":
            c.hset(key, mapping=value)
        elif kind == "string":
            c.set(key, value)
        elif kind == "list":
            c.rpush(key, *value)
        elif kind == "set":
            c.sadd(key, *value)
        elif kind == "zset":
            c.zadd(key, dict(value))
        elif kind == "stream":
            for entry_id, fields in value:
                c.xadd(key, fields, id=entry_id)
    return dump


def kinds(c: redis.Redis) -> Counter[str]:
    return Counter(cast(str, k).split(":")[1] for k in c.scan_iter(count=1000))


def everything_read(c: redis.Redis) -> dict[str, Any]:
    """What the product's readers give: each thread's answers (app, console), the job's rows."""
    threads = sorted({cast(str, k).split(":")[2] for k in c.scan_iter(match=keys.thread_exchanges(keys.ANY))})
    return {
        "threads": {t: [(e.id, [m.model_dump() for m in e.messages], e.completion, e.deleted) for e in exchanges.for_thread_sync(c, t)] for t in threads},
        "console": {t: [(x.exchange.id, x.exchange.messages, x.rating) for x in review.conversation(c, t)] for t in threads},
        "job": sorted((r.exchange_id, r.messages, r.completion, r.value) for r in collect(c, None).rated),
    }


def test_compaction_keeps_every_answer_exact_and_is_idempotent(redis_db: RedisServer) -> None:
    c = redis_db.client
    dump = load_legacy(c)
    legacy = [k for k, v in dump.items() if k.startswith("{fb}:exchange:")]
    assert len(legacy) == 28 and all("messages" in dump[k]["value"] for k in legacy)
    before, counted = everything_read(c), kinds(c)
    assert len(before["job"]) == 27 and sum(len(v) for v in before["threads"].values()) == 28
    bytes_before = sum(cast(int, c.memory_usage(k)) for k in legacy)

    done = compaction.compact(c)
    assert (done.answers, done.converted, done.already, done.kept) == (28, 28, 0, 0)
    assert everything_read(c) == before  # every reader gives exactly what it gave
    assert kinds(c) == counted + Counter(prefix=2)  # nothing lost; one fixed part per system prompt
    assert not any(c.hexists(k, "messages") for k in legacy)
    assert sum(cast(int, c.memory_usage(k)) for k in legacy) < bytes_before * 0.6  # short prompts and threads here: 57 KB -> 33 KB
    # The later turns refer to the earlier answers; an edited earlier turn stays literal.
    history = json.loads(c.hget(keys.exchange("legacy-a4"), "history") or "[]")
    assert history == [{"role": "user", "content": "Ça va? 👋"}, {"role": "assistant", "content": "Très bien (edited)."}, "legacy-a3"]

    again = compaction.compact(c)  # idempotent: a second run (or the rest of an interrupted one)
    assert (again.converted, again.already, again.kept) == (0, 28, 0)
    assert everything_read(c) == before


def test_the_command_reports_what_it_did(redis_db: RedisServer) -> None:
    load_legacy(redis_db.client)
    env = {**os.environ, "REDIS_URL": redis_db.url}
    first = run_cli("migrate", "compact", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout + first.stderr  # (rich writes to stderr)
    assert "converted: 28" in out and "already compact: 0" in out
    second = run_cli("migrate", "compact", env=env)
    assert second.returncode == 0 and "converted: 0" in second.stdout + second.stderr and "already compact: 28" in second.stdout + second.stderr
