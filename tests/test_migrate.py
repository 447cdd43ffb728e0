"""`chatbot migrate spread` and `chatbot migrate compact` on data written by the code before the
spread key layout and the compact prompt form: the keys of tests/fixtures/legacy-8c8b200.json were
written by commit 8c8b200's own seeding helpers (support.seed.bulk_seed and seed_exchange: the
app's scripts of that day), then dumped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from feedback import compaction, keys, review, spread
from feedback import event as events
from feedback import exchange as exchanges
from launcher.process import child_env, free_port, wait_until
from support.services import ROOT, RedisServer, run_cli
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


def expected_from_dump(dump: dict[str, Any]) -> dict[str, Any]:
    """What the readers must give after the move, from the dumped keys themselves: each thread's
    answers in order (their literal messages), and the rated ones as the job reads them."""
    threads = {}
    for key, item in dump.items():
        if key.startswith("{fb}:thread:") and key.endswith(":exchanges"):
            ids = [i for i, _ in sorted(item["value"], key=lambda pair: pair[1])]
            answers = [dump[keys.legacy("exchange", i)]["value"] for i in ids]
            threads[key.split(":")[2]] = [(a["id"], json.loads(a["messages"]), a["completion"], a.get("deleted") == "1") for a in answers]
    rated = []
    for key, item in dump.items():
        if key.startswith("{fb}:rating:"):
            answer = dump[keys.legacy("exchange", key.split(":")[2])]["value"]
            rated.append((answer["id"], json.loads(answer["messages"]), answer["completion"], int(item["value"]["value"])))
    return {"threads": threads, "job": sorted(rated)}


def read_back(c: redis.Redis) -> dict[str, Any]:
    read = everything_read(c)
    return {"threads": read["threads"], "job": read["job"]}


def kinds(c: redis.Redis) -> Counter[str]:
    return Counter(cast(str, k).split(":")[1] for k in c.scan_iter(count=1000))


def everything_read(c: redis.Redis) -> dict[str, Any]:
    """What the product's readers give: each thread's answers (app, console), the job's rows."""
    threads = sorted({cast(str, k).split(":")[2] for k in c.scan_iter(match=keys.thread_exchanges(keys.ANY))})
    assert threads, "no thread in the spread layout"
    return {
        "threads": {t: [(e.id, [m.model_dump() for m in e.messages], e.completion, e.deleted) for e in exchanges.for_thread_sync(c, t)] for t in threads},
        "console": {t: [(x.exchange.id, x.exchange.messages, x.rating) for x in review.conversation(c, t)] for t in threads},
        "job": sorted((r.exchange_id, r.messages, r.completion, r.value) for r in collect(c, None).rated),
    }


class Interrupted(Exception):
    pass


def test_spreading_moves_every_key_keeps_every_answer_and_resumes(redis_db: RedisServer) -> None:
    c = redis_db.client
    dump = load_legacy(c)
    # What the fixture lacks: a user record, a favorite step, an element (their old keys).
    thread = next(k.split(":")[2] for k, v in dump.items() if k.startswith("{fb}:thread:") and k.count(":") == 2 and v["value"]["userId"] == "user0")
    step = cast(str, c.zrange(keys.legacy("thread_steps", thread), 0, 0)[0])
    c.hset(keys.legacy("user", "user0"), mapping={"id": "user0", "identifier": "user0", "createdAt": "2026-01-01T00:00:00Z", "metadata": "{}"})
    c.sadd(keys.legacy("user_favorites", "user0"), step)
    c.set(keys.legacy("element", "el-1"), json.dumps({"id": "el-1", "threadId": thread, "forId": step, "type": "text"}))
    c.sadd(keys.legacy("thread_elements", thread), "el-1")
    old_events = cast("list[tuple[str, dict[str, str]]]", c.xrange(keys.legacy("events")))
    c.set(keys.retrain_watermark(), old_events[9][0])  # the job had read the first ten events
    expected = expected_from_dump(dump)
    assert len(expected["job"]) == 27 and sum(len(v) for v in expected["threads"].values()) == 28
    assert spread.needed(c)

    # Interrupted after a few threads (a crash, Ctrl-C): the next run does the rest.
    def stop_after_five(done: spread.Spread) -> None:
        if done.threads == 5:
            raise Interrupted

    try:
        spread.spread(c, on_progress=stop_after_five)
    except Interrupted:
        pass
    assert not spread.done(c) and spread.needed(c)
    done = spread.spread(c)
    assert spread.done(c) and not spread.needed(c)
    threads = {k.split(":")[2] for k in dump if k.startswith("{fb}:thread:")}
    assert len(threads) == 7 and done.threads == 7 - 5 and done.dropped == 27 and sum(done.orphans.values()) == 0

    # Nothing is left in the old layout but what stays global; every reader gives what was stored.
    assert not [k for k in c.scan_iter(match="{fb}:*") if cast(str, k).split(":")[1] in ("thread", "step", "element", "exchange", "rating", "user", "alternatives", "events")]
    assert read_back(c) == expected
    # Every key of each kind moved: 7 threads (record and indexes), 72 steps, 28 answers, 27 ratings.
    counted = Counter(cast(str, k).split(":")[1] for k in c.scan_iter(match="{fb.*}:*"))
    assert (counted["step"], counted["exchange"], counted["rating"], counted["element"]) == (72, 28, 27, 1)
    assert counted["thread"] == sum(1 for k in dump if k.startswith("{fb}:thread:")) + 2  # + the element index, the favorites
    # Each thread's keys share one slot; the users' lists name the same threads.
    for key in dump:
        if key.startswith("{fb}:user:") and key.endswith(":threads"):
            user = key.split(":")[2]
            assert sorted(c.zrange(keys.user_threads(user), 0, -1)) == sorted(i for i, _ in dump[key]["value"])
    assert c.hget(keys.user("user0"), "identifier") == "user0"
    assert c.smembers(keys.thread_favorites(thread)) == {step}
    assert c.get(keys.element(thread, "el-1")) is not None
    # The events: each in its thread's bucket's stream, with its own id; the watermark still
    # marks the same ten as read.
    moved = {event_id: fields for _, entries in events.read_after(c, None) for event_id, fields in entries}
    assert moved == dict(old_events)
    assert all(c.xrange(keys.events(keys.bucket(f["thread"])), min=i, max=i) for i, f in old_events)
    after_watermark = {i for _, entries in events.read_after(c, cast("str | None", c.get(keys.retrain_watermark()))) for i, _ in entries}
    assert after_watermark == {i for i, _ in old_events[10:]}
    # The console's aggregates, recounted per bucket: the 27 ratings.
    assert sum(int(n) for b in range(keys.BUCKETS) for n in c.hvals(keys.approval_counts(b))) == 27

    again = spread.spread(c)  # idempotent
    assert (again.threads, sum(again.moved.values()), again.events) == (0, 0, 0)
    assert read_back(c) == expected


def test_compaction_keeps_every_answer_exact_and_is_idempotent(redis_db: RedisServer) -> None:
    c = redis_db.client
    dump = load_legacy(c)
    spread.spread(c)
    legacy = [cast(str, k) for k in c.scan_iter(match=keys.exchange(keys.ANY, keys.ANY))]
    assert len(legacy) == 28 and all(c.hexists(k, "messages") for k in legacy)
    before, counted = everything_read(c), kinds(c)
    assert len(before["job"]) == 27 and sum(len(v) for v in before["threads"].values()) == 28
    bytes_before = sum(cast(int, c.memory_usage(k)) for k in legacy)

    done = compaction.compact(c)
    assert (done.answers, done.converted, done.already, done.kept) == (28, 28, 0, 0)
    assert everything_read(c) == before  # every reader gives exactly what it gave
    assert kinds(c) == counted + Counter(prefix=2)  # nothing lost; one fixed part per system prompt
    assert len(dump) > 0
    assert not any(c.hexists(k, "messages") for k in legacy)
    assert sum(cast(int, c.memory_usage(k)) for k in legacy) < bytes_before * 0.6  # short prompts and threads here: 57 KB -> 33 KB
    # The later turns refer to the earlier answers; an edited earlier turn stays literal.
    a4 = cast(str, next(iter(c.scan_iter(match=keys.exchange(keys.ANY, "legacy-a4")))))
    history = json.loads(c.hget(a4, "history") or "[]")
    assert history == [{"role": "user", "content": "Ça va? 👋"}, {"role": "assistant", "content": "Très bien (edited)."}, "legacy-a3"]

    again = compaction.compact(c)  # idempotent: a second run (or the rest of an interrupted one)
    assert (again.converted, again.already, again.kept) == (0, 28, 0)
    assert everything_read(c) == before


def test_the_command_reports_what_it_did(redis_db: RedisServer) -> None:
    load_legacy(redis_db.client)
    env = {**os.environ, "REDIS_URL": redis_db.url}
    moving = run_cli("migrate", "spread", env=env)
    assert moving.returncode == 0, moving.stdout + moving.stderr
    assert "threads moved: 7" in moving.stdout + moving.stderr and "rating events copied: 27" in moving.stdout + moving.stderr
    assert "nothing to move" in (lambda p: p.stdout + p.stderr)(run_cli("migrate", "spread", env=env))
    first = run_cli("migrate", "compact", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout + first.stderr  # (rich writes to stderr)
    assert "converted: 28" in out and "already compact: 0" in out
    second = run_cli("migrate", "compact", env=env)
    assert second.returncode == 0 and "converted: 0" in second.stdout + second.stderr and "already compact: 28" in second.stdout + second.stderr


def test_up_moves_data_of_the_first_layout_before_the_app_starts(redis_db: RedisServer, standin: str, tmp_path: Path) -> None:
    dump = load_legacy(redis_db.client)
    port = free_port()
    env = child_env(DATA_DIR=str(tmp_path / "data"), PORT=str(port), LOCAL_MODEL_PORT=str(free_port()), REDIS_URL=redis_db.url, LLM_BASE_URL=f"{standin}/v1", LLM_MODEL="echo")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "up"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/project/settings?language=en-US", timeout=1).status_code < 500, 60, proc, "chatbot up")
        assert spread.done(redis_db.client)
        assert read_back(redis_db.client) == expected_from_dump(dump)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Data moved to the spread key layout: 7 thread(s)" in stderr
