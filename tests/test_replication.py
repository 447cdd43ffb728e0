"""REDIS_WAIT_REPLICAS: a rating write waits for a replica, on the connection that wrote it.

Against real servers: one Redis with one replica (started here, `--replicaof`) and a Redis Cluster
of three masters with a replica each (support/cluster.py). A replica is stalled for real by
stopping its process (SIGSTOP, as a frozen machine would): it neither reads the replication
stream nor acknowledges it. While it is stopped a WAIT on the writing connection blocks, and a
WAIT on any other connection would not (its connection wrote nothing, so every connected replica
counts); MONITOR on the master shows the script and the WAIT coming from one client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.replication import ReplicaWait
from feedback.settings import Settings, SettingsError, load_settings
from feedback.spool import Spool
from feedback.store import Store
from launcher.process import ServiceGroup, free_port, wait_until
from support import seed
from support.cluster import Cluster, start_cluster

STALL_S = 0.4  # how long a replica is stopped while a write waits for it
CONCURRENT = 8  # writes waiting at once


@dataclass
class Setup:
    """A master and the replica of bucket `bucket`'s slot, as the product and the test reach them."""

    url: str
    cluster: bool
    master_port: int
    replica_port: int
    replica_proc: subprocess.Popen[bytes]
    bucket: int = 0  # the tests' threads are in it: on that master

    def replica(self) -> redis.Redis:
        """A direct connection to the replica (READONLY on a cluster: it serves its slots' reads)."""
        c = redis.Redis(port=self.replica_port, decode_responses=True, socket_timeout=5)
        if self.cluster:
            c.execute_command("READONLY")
        return c

    def master(self) -> redis.Redis:
        return redis.Redis(port=self.master_port, decode_responses=True, socket_timeout=5)


@pytest.fixture(scope="module")
def single(services: ServiceGroup, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    folder = tmp_path_factory.mktemp("pair")
    ports = free_port(), free_port()
    procs = []
    for port, extra in zip(ports, ([], ["--replicaof", "127.0.0.1", str(ports[0])]), strict=True):
        (folder / str(port)).mkdir()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder / str(port)), *extra]
        procs.append(services.start(f"redis-pair-{port}", argv))
    setup = Setup(f"redis://127.0.0.1:{ports[0]}/0", False, ports[0], ports[1], procs[1])
    wait_until(lambda: setup.replica().info("replication")["master_link_status"] == "up", 20, procs[1], "the replica's first sync")
    return setup


@pytest.fixture(scope="module")
def on_cluster(services: ServiceGroup, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    cluster: Cluster = start_cluster(services, tmp_path_factory.mktemp("cluster"))
    master = cluster.client().get_node_from_key(keys.events(0))
    replica_port = int(redis.Redis(port=master.port, decode_responses=True).info("replication")["slave0"]["port"])
    proc = next(n.proc for n in cluster.nodes if n.port == replica_port)
    return Setup(cluster.url, True, master.port, replica_port, proc)


@pytest.fixture(params=["single", "cluster"])
def setup(request: pytest.FixtureRequest) -> Setup:
    return request.getfixturevalue("single" if request.param == "single" else "on_cluster")


@contextmanager
def stopped(proc: subprocess.Popen[bytes], resume_after_s: float | None = None) -> Iterator[float]:
    """The replica's process stopped (SIGSTOP) from now; resumed (SIGCONT) after resume_after_s
    by a timer, else when the block ends. Yields when it was stopped (time.monotonic())."""
    os.kill(proc.pid, signal.SIGSTOP)
    at = time.monotonic()
    timer = threading.Timer(resume_after_s, os.kill, (proc.pid, signal.SIGCONT)) if resume_after_s is not None else None
    if timer is not None:
        timer.start()
    try:
        yield at
    finally:
        if timer is not None:
            timer.cancel()
        os.kill(proc.pid, signal.SIGCONT)


def poll(check: object, timeout_s: float = 5.0) -> None:
    """Poll a zero-argument callable until it is true, or fail at the deadline."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not true within the deadline"
        time.sleep(0.01)


async def rated_answer(setup: Setup, user: str = "rater") -> tuple[str, str]:
    """One stored, unrated answer (through the app's write path) in a new thread of the setup's
    bucket; returns (exchange id, thread)."""
    r = connect(setup.url, cluster=setup.cluster)
    try:
        thread = f"th-{seed.new_id()}"
        while keys.bucket(thread) != setup.bucket:
            thread = f"th-{seed.new_id()}"
        return await seed.seed_exchange(r, thread=thread, user=user, question="q", answer="a", value=None), thread
    finally:
        await r.aclose()


def test_the_settings_make_a_wait_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ReplicaWait.from_settings(Settings()) is None  # the default: no wait
    monkeypatch.setenv("REDIS_WAIT_REPLICAS", "1")
    assert ReplicaWait.from_settings(load_settings()) == ReplicaWait(1, 100)
    monkeypatch.setenv("REDIS_WAIT_TIMEOUT_MS", "250")
    assert ReplicaWait.from_settings(load_settings()) == ReplicaWait(1, 250)
    for bad in ("0", "5000"):  # 0 would make WAIT block for ever; past 1 s the socket timeout cuts it off
        monkeypatch.setenv("REDIS_WAIT_TIMEOUT_MS", bad)
        with pytest.raises(SettingsError, match="REDIS_WAIT_TIMEOUT_MS"):
            load_settings()


async def test_a_rating_returns_once_the_replica_has_it(setup: Setup) -> None:
    answers = [await rated_answer(setup) for _ in range(CONCURRENT + 1)]
    control_id, control_thread = answers.pop()
    r = connect(setup.url, cluster=setup.cluster)
    try:
        # Warm: the script loaded, the connections open (not part of what is timed).
        await ratings.apply(r, op_id=seed.new_id(), user="rater", thread_id=control_thread, exchange_id=control_id, rating=ratings.RatingInput(value=0))

        # Control: without the wait the write returns while the replica is stopped.
        with stopped(setup.replica_proc, resume_after_s=STALL_S) as at:
            await ratings.apply(r, op_id=seed.new_id(), user="rater", thread_id=control_thread, exchange_id=control_id, rating=ratings.RatingInput(value=1))
            assert time.monotonic() - at < STALL_S / 2

        async def rate(exchange_id: str, thread: str) -> float:
            event = await ratings.apply(
                r, op_id=seed.new_id(), user="rater", thread_id=thread, exchange_id=exchange_id, rating=ratings.RatingInput(value=1, comment=f"kept {exchange_id}"),
                wait=ReplicaWait(1, 1000),
            )  # fmt: skip
            returned_after = time.monotonic() - at
            assert event
            # Read at once from the replica itself: it has the rating as soon as the write returned.
            assert setup.replica().hgetall(keys.rating(thread, exchange_id))["comment"] == f"kept {exchange_id}"
            return returned_after

        with setup.master().monitor() as monitor:  # MONITOR answered OK: every command from here on is reported
            with stopped(setup.replica_proc, resume_after_s=STALL_S) as at:
                # Concurrent writes: several connections of the pool (of the node) at once.
                returned = await asyncio.gather(*(rate(e, t) for e, t in answers))
            # Each returned only after the replica was resumed and had acknowledged its write.
            assert min(returned) >= STALL_S, returned
            # Each script's client (connection) sent the WAIT next, whichever else ran between.
            last: dict[str, str] = {}
            pending = {e for e, _ in answers}
            while pending:
                command = monitor.next_command()
                client, text = f"{command['client_address']}:{command['client_port']}", command["command"]
                if command["client_address"] == "lua":
                    continue
                if text.startswith("WAIT"):
                    assert text == "WAIT 1 1000" and last.get(client, "").startswith("EVALSHA"), (client, last.get(client))
                    pending -= {e for e in pending if e in last[client]}
                last[client] = text
    finally:
        await r.aclose()


async def test_a_stalled_replica_costs_the_timeout_and_is_logged(setup: Setup, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exchange_id, thread = await rated_answer(setup)
    r = connect(setup.url, cluster=setup.cluster)
    store = Store(r, Spool(tmp_path / "spool" / "writes.jsonl"), wait=ReplicaWait(1, 200))
    try:
        await store.rate(user="rater", thread_id=thread, exchange_id=exchange_id, rating=ratings.RatingInput(value=0))  # warm
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="feedback.replication"), stopped(setup.replica_proc) as at:
            stored = await store.rate(user="rater", thread_id=thread, exchange_id=exchange_id, rating=ratings.RatingInput(value=1, comment="late"))
            took = time.monotonic() - at
            # Saved (on the master) and reported saved, after about the timeout.
            assert stored == "redis"
            assert 0.18 <= took < 1.0, took
            assert setup.master().hgetall(keys.rating(thread, exchange_id))["comment"] == "late"
        shortfall = [rec.getMessage() for rec in caplog.records if "not yet replicated" in rec.getMessage()]
        assert len(shortfall) == 1 and exchange_id in shortfall[0] and "0 of 1 replicas" in shortfall[0], caplog.text
        # The replica catches up once it runs again.
        poll(lambda: setup.replica().hgetall(keys.rating(thread, exchange_id)).get("comment") == "late")
    finally:
        await r.aclose()


async def test_what_a_wait_cannot_confirm(single: Setup, caplog: pytest.LogCaptureFixture) -> None:
    """A replayed op (the script finds its op id: nothing written by this call) is reported not
    confirmed; a refused rating writes nothing and logs nothing."""
    exchange_id, thread = await rated_answer(single)
    r = connect(single.url)
    wait = ReplicaWait(1, 200)
    try:
        rating = ratings.RatingInput(value=1)
        await ratings.apply(r, op_id="op-once", user="rater", thread_id=thread, exchange_id=exchange_id, rating=rating, wait=wait)
        with caplog.at_level(logging.WARNING, logger="feedback.replication"):
            assert not caplog.records
            assert await ratings.apply(r, op_id="op-once", user="rater", thread_id=thread, exchange_id=exchange_id, rating=rating, wait=wait) == ""
            assert "rating op op-once" in caplog.text and "0 of 1 replicas" in caplog.text
            caplog.clear()
            with pytest.raises(ratings.RatingError):
                await ratings.apply(r, op_id=seed.new_id(), user="mallory", thread_id=thread, exchange_id=exchange_id, rating=rating, wait=wait)
            assert not caplog.records
    finally:
        await r.aclose()
