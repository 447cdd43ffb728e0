"""Durability: ratings Redis acknowledged survive a crash of the Redis process.

The embedded Redis (launcher/redis_server.py) runs with `appendonly yes` and `appendfsync
everysec`: every write is handed to the kernel with write(2) before the reply goes out and
fsync'd about once a second. A killed process (kill -9) loses nothing the kernel already has;
only a crash of the whole machine can lose the last second. This test kills the process.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis

from feedback import event, keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.spool import Spool
from feedback.store import Store
from launcher import redis_server
from launcher.process import ServiceGroup
from support.seed import numbered_exchange

N = 500



async def test_acknowledged_ratings_survive_kill_9(own_services: ServiceGroup, tmp_path: Path) -> None:
    data, sock = tmp_path / "redis", tmp_path / "r.sock"
    proc = redis_server.start(own_services, data, sock)
    r = connect(f"unix://{sock}")
    store = Store(r, Spool(tmp_path / "spool" / "writes.jsonl"))
    try:
        info = await r.info("persistence")
        assert info["aof_enabled"] == 1
        assert (await r.config_get("appendfsync"))["appendfsync"] == "everysec"

        # The real write path: every call returned "redis", i.e. Redis acknowledged it.
        for i in range(N):
            assert await store.save_exchange(numbered_exchange(i, thread=f"th{i % 7}")) == "redis"
        for i in range(N):
            e = numbered_exchange(i, thread=f"th{i % 7}")
            rating = ratings.RatingInput(value=i % 2, comment=f"c{i}", reasons=["helpful"] if i % 2 else ["wrong"])
            assert await store.rate(user="alice", thread_id=e.thread_id, exchange_id=e.id, rating=rating) == "redis"
        assert len(store.spool) == 0
    finally:
        await r.aclose()

    # Right after the last acknowledgement, well inside the one-second fsync window.
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert sock.exists(), "a killed Redis leaves its socket behind: it had no chance to clean up"

    redis_server.start(own_services, data, sock)  # same dir: it loads the AOF (RDB saving is off)
    c = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
    try:
        with c.pipeline(transaction=False) as pipe:
            for i in range(N):
                pipe.hgetall(keys.rating(f"th{i % 7}", f"ex{i:04d}"))
            stored = pipe.execute()
        for i, row in enumerate(stored):
            assert row.get("value") == str(i % 2) and row.get("comment") == f"c{i}", f"rating {i} lost: {row}"
        assert sum(len(c.hgetall(keys.thread_ratings(f"th{t}"))) for t in range(7)) == N
        assert sum(c.zcard(keys.thread_exchanges(f"th{t}")) for t in range(7)) == N

        assert event.count(c) == N
        logged = [f for _, entries in event.read_after(c, None) for _, f in entries]  # each bucket's in order
        for t in range(7):
            assert [f["exchange"] for f in logged if f["thread"] == f"th{t}"] == [f"ex{i:04d}" for i in range(t, N, 7)]
        assert all(f["action"] == "rate" and f["value"] == str(int(f["exchange"][2:]) % 2) for f in logged)
    finally:
        c.close()
