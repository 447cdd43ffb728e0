"""A Redis outage: chatting goes on with a visible warning; exchanges and ratings made while Redis
is down are kept in a local append-only spool and replayed, in order and without duplicates, when
Redis is back. Each test stops and restarts a Redis it owns (same data dir and socket)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from redis.asyncio import Redis

from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.spool import Spool
from feedback.store import Store
from launcher import redis_server
from launcher.process import ServiceGroup, wait_until
from sim.client import ChatClient, Reply
from support.seed import numbered_exchange
from support.services import app_env, run_cli, start_app, start_standin
from support.session import logged_in

WARNING = "⚠️ Storage is unavailable"


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """A clean stop (SIGTERM): Redis writes its AOF out and removes its socket."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def spooling_store(group: ServiceGroup, redis_dir: Path, sock: Path, spool: Path) -> tuple[subprocess.Popen[bytes], Redis, redis.Redis, Store]:
    """A Redis of the test's own, the app's client of it, a plain client to inspect it, and a
    Store spooling to `spool`."""
    proc = redis_server.start(group, redis_dir, sock)
    r = connect(f"unix://{sock}")
    return proc, r, redis.Redis(unix_socket_path=str(sock), decode_responses=True), Store(r, Spool(spool))


def answer(reply: Reply) -> dict[str, Any]:
    """The streamed answer (while Redis is down, the storage warning comes after it)."""
    found = [m for m in reply.assistant_messages() if (m.get("metadata") or {}).get("exchange_id")]
    assert len(found) == 1, reply.messages
    return found[0]


def exchange_id(reply: Reply) -> str:
    found = answer(reply)
    assert found["metadata"]["exchange_id"] == found["parentId"]  # keyed by its run step
    return str(found["parentId"])


def warnings(reply: Reply) -> list[dict[str, Any]]:
    return [m for m in reply.messages if m.get("name") == "Storage"]


def events(c: redis.Redis, thread: str) -> list[tuple[str, str, str | None]]:
    """The rating events of the thread's bucket."""
    return [(f["action"], f["exchange"], f.get("value")) for _, f in cast("list[tuple[str, dict[str, str]]]", c.xrange(keys.events(keys.bucket(thread))))]


def op_thread(op: dict[str, Any]) -> str:
    """The thread a spooled write goes into."""
    return str(op["exchange"]["thread_id"] if op["op"] == "exchange" else op["thread_id"])



async def test_chat_goes_on_while_redis_is_down_and_the_spool_is_replayed(own_services: ServiceGroup, tmp_path: Path) -> None:
    redis_dir, sock, data = tmp_path / "redis", tmp_path / "r.sock", tmp_path / "app"
    redis_proc = redis_server.start(own_services, redis_dir, sock)
    c = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
    standin = start_standin(own_services)
    app = start_app(own_services, app_env(f"unix://{sock}", f"{standin}/v1", data), data)
    spool = data / "spool" / "writes.jsonl"

    alice = await logged_in(app.url, "alice")
    bob: ChatClient | None = None
    try:
        before = await alice.send("before the outage")
        assert not warnings(before)
        pre = exchange_id(before)
        r = await alice.rate(pre, 1, comment="fine")
        assert r.status_code == 200 and r.json()["stored"] == "redis", r.text

        stop_redis(redis_proc)

        # Chatting goes on: every answer streams, then the user is told it is kept for later.
        texts = ("first while down", "second while down", "third while down")
        down: list[str] = []
        for text in texts:
            reply = await alice.send(text)
            assert reply.text == f"You said: {text}" and answer(reply)["output"] == reply.text
            shown = warnings(reply)
            assert len(shown) == 1 and shown[0]["output"].startswith(WARNING), reply.messages
            assert shown[0]["type"] == "assistant_message" and not shown[0]["isError"]
            down.append(exchange_id(reply))
        assert spool.exists()

        # Logging in works too (Chainlit logs the failed user write and goes on), in a new thread.
        bob = await logged_in(app.url, "bob")
        bobs = await bob.send("bob while down")
        assert bobs.text == "You said: bob while down" and len(warnings(bobs)) == 1
        bob_id = exchange_id(bobs)

        # Un-rating needs the answer's thread: an answer stored before the outage, with nothing
        # about it in the spool, can't be looked up, and the caller is told to retry.
        r = await alice.rate(pre, None)
        assert r.status_code == 503 and "unavailable" in r.json()["detail"], r.text

        # Ratings while down are kept (the HTTP auth falls back to the login token's user when
        # the data layer can't be read).
        clicks = [
            (down[0], 1),  # rate
            (down[1], 1),  # rate, then change it: the last click wins
            (down[1], 0),
            (down[2], 0),  # rate, then un-rate
            (down[2], None),
            (pre, 0),  # re-rate an answer stored before the outage
        ]
        for eid, value in clicks:
            r = await alice.rate(eid, value)
            assert r.status_code == 202, r.text  # accepted, not saved: queued until Redis is back
            assert r.json()["stored"] == "queued", r.text
        spooled = Spool(spool).pending()
        assert [op["op"] for op in spooled] == ["exchange"] * 4 + ["rate"] * len(clicks)

        # Redis is back, on the same data: the app replays the spool by itself.
        redis_server.start(own_services, redis_dir, sock)
        wait_until(lambda: not spool.exists(), 15, what="spool replay")

        # The exchanges are there, in the order they were made.
        assert alice.thread_id is not None and bob.thread_id is not None
        alices, bobs_thread = alice.thread_id, bob.thread_id
        assert c.zrange(keys.thread_exchanges(alices), 0, -1) == [pre, *down]
        for eid, text in zip(down, texts, strict=True):
            stored = c.hgetall(keys.exchange(alices, eid))
            assert stored["completion"] == f"You said: {text}" and stored["user"] == "alice"
        assert c.hget(keys.exchange(bobs_thread, bob_id), "user") == "bob"
        assert c.zrange(keys.thread_exchanges(bobs_thread), 0, -1) == [bob_id]
        # Chainlit could not store Bob's thread while Redis was down; the replayed answer creates
        # it, so he sees it in his history and can delete it.
        listed = (await bob.list_threads()).json()["data"]
        assert [(t["id"], t["name"]) for t in listed] == [(bobs_thread, "bob while down")]
        assert (await bob.delete_thread(bobs_thread)).status_code == 200
        assert not c.exists(keys.exchange(bobs_thread, bob_id))
        # The ratings, the last click winning.
        assert c.hget(keys.rating(alices, down[0]), "value") == "1"
        assert c.hget(keys.rating(alices, down[1]), "value") == "0"
        assert not c.exists(keys.rating(alices, down[2]))
        assert c.hget(keys.rating(alices, pre), "value") == "0"
        assert c.hgetall(keys.thread_ratings(alices)) == {pre: "0", down[0]: "1", down[1]: "0"}
        # Each change exactly once, in click order, stamped with the time of the click.
        assert events(c, alices) == [
            ("rate", pre, "1"),
            ("rate", down[0], "1"),
            ("rate", down[1], "1"),
            ("rate", down[1], "0"),
            ("rate", down[2], "0"),
            ("unrate", down[2], None),
            ("rate", pre, "0"),
        ]
        stamps = [float(f["ts"]) for _, f in cast("list[tuple[str, dict[str, str]]]", c.xrange(keys.events(keys.bucket(alices))))][1:]
        assert stamps == [round(op["ts"], 6) for op in spooled if op["op"] == "rate"]
        assert all(c.exists(keys.applied_op(op_thread(op), op["id"])) for op in spooled)

        # And the app serves normally again.
        after = await alice.send("after the outage")
        assert after.text == "You said: after the outage" and not warnings(after)
        post = exchange_id(after)
        assert c.exists(keys.exchange(alices, post))
        r = await alice.rate(post, 1)
        assert r.status_code == 200 and r.json()["stored"] == "redis", r.text
        assert events(c, alices)[-1] == ("rate", post, "1")
        r = await alice.rate(down[0], None)  # the un-rate that needs the thread works again
        assert r.status_code == 200 and r.json()["stored"] == "redis", r.text
        assert not spool.exists()
    finally:
        await alice.close()
        if bob is not None:
            await bob.close()
        c.close()


# --- the spool and its replay, without the app ---------------------------------------------------



def snapshot(c: redis.Redis) -> dict[str, Any]:
    """Everything the writes touch, except the op markers."""
    return {
        "exchanges": c.zrange(keys.thread_exchanges("th"), 0, -1),
        "answers": [c.hget(keys.exchange("th", f"ex{i:04d}"), "prompt_message_id") for i in range(2)],
        "ratings": [c.hgetall(keys.rating("th", f"ex{i:04d}")) for i in range(2)],
        "thread_ratings": c.hgetall(keys.thread_ratings("th")),
        "events": events(c, "th"),
    }


async def test_replaying_the_same_ops_again_applies_them_once(own_services: ServiceGroup, tmp_path: Path) -> None:
    redis_dir, sock, path = tmp_path / "redis", tmp_path / "r.sock", tmp_path / "spool" / "writes.jsonl"
    proc, r, c, store = spooling_store(own_services, redis_dir, sock, path)
    try:
        stop_redis(proc)
        up, down = ratings.RatingInput(value=1), ratings.RatingInput(value=0, reasons=["wrong"])
        assert await store.save_exchange(numbered_exchange(0)) == "spool"
        assert await store.save_exchange(numbered_exchange(1)) == "spool"
        for eid, rating in (("ex0000", up), ("ex0000", down), ("ex0001", up), ("ex0001", None), ("ex0000", None), ("ex0000", up)):
            assert await store.rate(user="alice", thread_id="th", exchange_id=eid, rating=rating) == "spool"
        assert await store.replay() == 0  # still down: nothing applied, nothing lost
        assert len(store.spool) == 8
        saved = path.read_bytes()

        redis_server.start(own_services, redis_dir, sock)
        assert await store.replay() == 8
        assert not path.exists() and not store.spool.offset_path.exists()
        first = snapshot(c)
        assert first["exchanges"] == ["ex0000", "ex0001"]
        assert first["answers"] == ["msg0000", "msg0001"]
        assert first["ratings"][0]["value"] == "1" and first["ratings"][1] == {}
        assert first["thread_ratings"] == {"ex0000": "1"}
        assert first["events"] == [
            ("rate", "ex0000", "1"),
            ("rate", "ex0000", "0"),
            ("rate", "ex0001", "1"),
            ("unrate", "ex0001", None),
            ("unrate", "ex0000", None),
            ("rate", "ex0000", "1"),
        ]

        # A crash after the last op was applied but before progress was recorded: the restarted
        # process (a new Store) finds the whole spool again and replays it...
        path.write_bytes(saved)
        again = Store(r, Spool(path))
        assert await again.replay() == 8
        assert snapshot(c) == first  # ...and nothing changes: each op id is applied once
        assert not path.exists()

        # A crash in the middle: progress was recorded for the first three lines only.
        path.write_bytes(saved)
        again = Store(r, Spool(path))
        again.spool.offset_path.write_text("3")
        assert await again.replay() == 5
        assert snapshot(c) == first
        assert not path.exists() and not again.spool.offset_path.exists()
    finally:
        await r.aclose()
        c.close()


async def test_a_write_redis_refuses_is_dead_lettered_and_the_rest_replays(own_services: ServiceGroup, tmp_path: Path) -> None:
    """One poisoned write among the pending ones (WRONGTYPE once Redis is back) and one torn line:
    both go to the dead-letter file with their error, every other write is applied once, in order,
    and `chatbot spool` shows the dead letters and requeues them once the cause is fixed."""
    redis_dir, sock = tmp_path / "redis", tmp_path / "r.sock"
    data = tmp_path / "data"
    env = app_env(f"unix://{sock}", "http://127.0.0.1:9/v1", data)
    path = data.resolve() / "spool" / "writes.jsonl"  # Settings.spool_path of that DATA_DIR
    proc, r, c, store = spooling_store(own_services, redis_dir, sock, path)
    try:
        stop_redis(proc)
        up = ratings.RatingInput(value=1)
        for i in range(3):
            assert await store.save_exchange(numbered_exchange(i)) == "spool"
            assert await store.rate(user="alice", thread_id="th", exchange_id=f"ex{i:04d}", rating=up) == "spool"
        with open(path, "a", encoding="utf-8") as f:
            f.write('{"op":"rate","id":"torn\n')  # a line cut short by a crash mid-write
        assert await store.rate(user="alice", thread_id="th", exchange_id="ex0002", rating=None) == "spool"

        redis_server.start(own_services, redis_dir, sock)
        c.set(keys.rating("th", "ex0001"), "not a hash")  # the second rating will meet WRONGTYPE
        before = c.xlen(keys.events(keys.bucket("th")))
        # The app was killed meanwhile: a new process finds the spool on disk and replays it.
        store = Store(r, Spool(path))
        assert await store.replay() == 8  # every line consumed: none blocks the others
        assert not path.exists()
        assert c.zrange(keys.thread_exchanges("th"), 0, -1) == ["ex0000", "ex0001", "ex0002"]
        assert c.hget(keys.rating("th", "ex0000"), "value") == "1"
        assert c.hgetall(keys.rating("th", "ex0002")) == {}  # rated then un-rated, in order
        assert events(c, "th")[before:] == [("rate", "ex0000", "1"), ("rate", "ex0002", "1"), ("unrate", "ex0002", None)]

        dead = store.spool.dead()
        assert [d.get("op", {}).get("exchange_id") for d in dead] == ["ex0001", None]
        assert "WRONGTYPE" in dead[0]["error"] and "unreadable" in dead[1]["error"]
        shown = run_cli("spool", env=env)
        assert shown.returncode == 1, shown.stderr
        assert "dead letters: 2" in shown.stdout and "WRONGTYPE" in shown.stdout

        c.delete(keys.rating("th", "ex0001"))  # the operator fixes the cause, then requeues
        requeued = run_cli("spool", "--requeue", env=env)
        assert "requeued 1" in requeued.stdout, requeued.stdout + requeued.stderr
        assert requeued.returncode == 1  # the torn line stays: it cannot be retried
        assert await store.replay() == 1  # this process sees the requeued write
        assert c.hget(keys.rating("th", "ex0001"), "value") == "1"
        assert events(c, "th")[before:][-1] == ("rate", "ex0001", "1")
        assert await store.replay() == 0  # applied once
        assert [d["error"] for d in store.spool.dead()] == [dead[1]["error"]]
    finally:
        await r.aclose()
        c.close()


async def test_replay_forever_outlives_a_failing_round(own_services: ServiceGroup, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupted progress file makes a replay round fail; the background task logs it and keeps
    going, and drains the spool once the file is repaired."""
    import asyncio
    import contextlib

    redis_dir, sock, path = tmp_path / "redis", tmp_path / "r.sock", tmp_path / "spool" / "writes.jsonl"
    proc, r, c, store = spooling_store(own_services, redis_dir, sock, path)
    task = None
    try:
        stop_redis(proc)
        assert await store.save_exchange(numbered_exchange(0)) == "spool"
        store.spool.offset_path.write_text("garbage")
        redis_server.start(own_services, redis_dir, sock)
        task = asyncio.create_task(store.replay_forever(interval_s=0.05))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sum("spool replay failed" in m for m in caplog.messages) < 3:  # three failed rounds
            assert loop.time() < deadline and not task.done(), caplog.messages
            await asyncio.sleep(0.05)
        assert path.exists()
        store.spool.offset_path.write_text("0")
        deadline = loop.time() + 10
        while path.exists():
            assert loop.time() < deadline and not task.done(), "spool not drained"
            await asyncio.sleep(0.05)
        assert c.zrange(keys.thread_exchanges("th"), 0, -1) == ["ex0000"]
    finally:
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await r.aclose()
        c.close()
