"""A master of a Redis Cluster killed while users rate: how long writes stop, and how many
acknowledged ratings the failover loses (Redis replicates asynchronously: a write acknowledged by
the master but not yet on its replica is gone when the replica takes over).

In one run: a cluster of three masters with a replica each (support/cluster.py, loopback ports),
--answers exchanges in 20 threads, then ratings written one after another for --seconds through
feedback.rating.apply on the cluster client (REDIS_CLUSTER's client), the master serving the
first thread's bucket (a third of the data) killed with SIGKILL after --kill-after seconds. After
the cluster has failed over: acknowledged ratings vs their rating events kept (each acknowledged
rating appended exactly one), and the seconds from the kill to the first acknowledged write into
a thread that master served. With --wait-replicas N each rating
waits for N replicas (REDIS_WAIT_REPLICAS, feedback/replication.py; --wait-timeout-ms): the
ratings whose wait was not met are counted.

The pieces (seeding, finding and killing the master, the load, the audit of what was kept) are
what tests/test_failover.py runs and asserts on.

    python -m bench.failover [--seconds 12] [--kill-after 3] [--wait-replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis
from redis.asyncio import Redis

from feedback import event as stream
from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.replication import ReplicaWait
from launcher.process import ServiceGroup, wait_until
from support import seed
from support.cluster import Cluster, ClusterNode, start_cluster

THREADS = 20
USER = "rater"
RETRY_AFTER_S = 0.05  # a refused write: the load (a user clicking again) retries after this pause


class Shortfalls(logging.Handler):
    """Counts feedback.replication's warnings (a rating whose wait was not met) and when the first came."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first_at = self.first_at or time.monotonic()


async def seed_answers(r: Redis, answers: int) -> dict[str, str]:
    """`answers` unrated answers of USER over THREADS threads (the app's write path); exchange id -> thread."""
    out: dict[str, str] = {}
    for i in range(answers):
        thread = f"t{i % THREADS}"
        out[await seed.seed_exchange(r, thread=thread, user=USER, question=f"q{i}", answer="a", value=None)] = thread
    return out


def slot_master(cluster: Cluster, thread_id: str) -> ClusterNode:
    """The master that serves the thread's bucket (its answers, ratings and events) now."""
    master = cluster.client().get_node_from_key(keys.thread(thread_id))
    return next(n for n in cluster.nodes if n.port == master.port)


def victim_threads(cluster: Cluster, victim: ClusterNode, load: RatingLoad) -> set[str]:
    """The load's threads whose bucket `victim` serves (their writes stop while it fails over)."""
    return {t for t in set(load.answers.values()) if slot_master(cluster, t) is victim}


def replica_of(cluster: Cluster, master: ClusterNode) -> ClusterNode:
    """The replica of `master` (the one that takes over when it dies)."""
    port = int(master.client().info("replication")["slave0"]["port"])
    return next(n for n in cluster.nodes if n.port == port)


@dataclass(slots=True)
class Attempt:
    """One rating the load wrote, and what its caller was told: an event id (acknowledged; '' when
    the script found the op already applied by an earlier try of the client) or an error (refused)."""

    seq: int
    exchange_id: str
    value: int
    ts: str  # the rating's timestamp as stored (the event's and the hash's): it identifies the write
    started: float
    ended: float = float("nan")
    event_id: str | None = None
    error: Exception | None = None

    @property
    def comment(self) -> str:
        return f"#{self.seq}"  # stored in the rating hash: which write the hash holds

    @property
    def acked(self) -> bool:
        return self.event_id is not None


@dataclass
class RatingLoad:
    """Ratings one after another through feedback.rating.apply (the product's path), each recorded,
    until `stop`. Answer i % n is rated on the i-th write, its value flipping on each round."""

    r: Redis
    answers: dict[str, str]  # exchange id -> thread
    wait: ReplicaWait | None = None
    attempts: list[Attempt] = field(default_factory=list)
    acked_count: int = 0
    _stopped: bool = False
    _watches: list[tuple[Callable[[], bool], asyncio.Future[None]]] = field(default_factory=list)

    async def run(self) -> None:
        ids = list(self.answers)
        last_ts = 0.0
        try:
            while not self._stopped:
                seq = len(self.attempts)
                last_ts = max(time.time(), last_ts + 1e-5)  # strictly increasing: one write per timestamp
                exchange_id = ids[seq % len(ids)]
                attempt = Attempt(seq, exchange_id, (seq // len(ids)) % 2, f"{last_ts:.6f}", time.monotonic())
                self.attempts.append(attempt)
                try:
                    attempt.event_id = await ratings.apply(
                        self.r, op_id=seed.new_id(), user=USER, thread_id=self.answers[exchange_id], exchange_id=exchange_id,
                        rating=ratings.RatingInput(value=attempt.value, comment=attempt.comment), ts=last_ts, wait=self.wait,
                    )  # fmt: skip
                    self.acked_count += 1
                except Exception as exc:  # the master is gone: the client raises until it finds the new one
                    attempt.error = exc
                attempt.ended = time.monotonic()
                self._check_watches()
                if attempt.error is not None:
                    await asyncio.sleep(RETRY_AFTER_S)
        finally:
            for _, done in self._watches:
                if not done.done():
                    done.set_exception(RuntimeError("the rating load stopped"))

    def stop(self) -> None:
        self._stopped = True

    async def until(self, check: Callable[[], bool], timeout_s: float, what: str = "the condition") -> None:
        """Return once check() holds after a write (checked after each one: keep it cheap); TimeoutError at the deadline."""
        if check():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watches.append((check, done))
        try:
            await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s ({self.acked_count:,} writes acknowledged, {len(self.refused)} refused)") from None
        finally:
            self._watches.remove((check, done))

    def _check_watches(self) -> None:
        for check, done in self._watches:
            if not done.done() and check():
                done.set_result(None)

    @property
    def acked(self) -> list[Attempt]:
        return [a for a in self.attempts if a.acked]

    @property
    def refused(self) -> list[Attempt]:
        return [a for a in self.attempts if a.error is not None]

    def acked_after(self, at: float) -> list[Attempt]:
        """The acknowledged writes started after `at` (one in flight then may have been answered before it)."""
        return [a for a in self.attempts if a.acked and a.started >= at]


def kill(cluster: Cluster, node: ClusterNode) -> float:
    """SIGKILL the node; returns when (time.monotonic())."""
    cluster.kill(node)
    return time.monotonic()


@dataclass
class Audit:
    """What the cluster kept of a load's writes, read after the failover."""

    kept: int  # acknowledged writes whose rating event is in the stream
    lost: list[Attempt]  # acknowledged writes with no rating event
    doubled: list[Attempt]  # writes with more than one event, or an event id other than the one returned
    stale: list[tuple[str, str, str]]  # (exchange, expected, found): rating hashes older than the last acknowledged write
    refused_applied: int  # refused writes whose event is there all the same (the reply was lost, not the write)
    strays: int  # rating events that no write of the load made


def audit(load: RatingLoad, r: redis.Redis) -> Audit:
    """Check every write of `load` against the events streams and the rating hashes, read through
    `r` (a cluster client: each bucket from the master serving it now)."""
    events: dict[str, list[str]] = {}
    for _, entries in stream.read_after(r, None):
        for event_id, fields in entries:
            if fields.get("action") == "rate":
                events.setdefault(fields["ts"], []).append(event_id)
    by_ts = {a.ts: a for a in load.attempts}
    lost, doubled = [], []
    kept = refused_applied = 0
    for a in load.attempts:
        found = events.get(a.ts, [])
        if len(found) > 1 or (a.event_id and found and found != [a.event_id]):
            doubled.append(a)
        if a.acked:
            kept += bool(found)
            if not found:
                lost.append(a)
        elif found:
            refused_applied += 1
    last_acked: dict[str, Attempt] = {}
    for a in load.attempts:
        if a.acked:
            last_acked[a.exchange_id] = a
    stale = []
    for exchange_id, a in last_acked.items():
        stored = cast(dict[str, str], r.hgetall(keys.rating(load.answers[exchange_id], exchange_id)))
        holder = load.attempts[int(stored["comment"][1:])] if stored.get("comment", "").startswith("#") else None
        # The hash holds the last acknowledged write, or a later one that was refused but applied.
        ok = holder is not None and (holder is a or (holder.seq > a.seq and not holder.acked)) and stored["value"] == str(holder.value)
        if not ok:
            stale.append((exchange_id, f"{a.comment} value {a.value}", f"{stored.get('comment')} value {stored.get('value')}"))
    strays = sum(len(ids) for ts, ids in events.items() if ts not in by_ts)
    return Audit(kept, lost, doubled, stale, refused_applied, strays)


async def run(answers: int, seconds: float, kill_after: float, wait: ReplicaWait | None = None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    with ServiceGroup(folder / "logs") as group:
        cluster = start_cluster(group, folder / "nodes")
        r = connect(cluster.url, cluster=True, timeout_s=1.0)
        load = RatingLoad(r, await seed_answers(r, answers), wait)
        victim = slot_master(cluster, "t0")
        on_victim = victim_threads(cluster, victim, load)
        shortfalls = Shortfalls()
        logging.getLogger("feedback.replication").addHandler(shortfalls)
        task = asyncio.create_task(load.run())
        await asyncio.sleep(kill_after)
        killed_at = kill(cluster, victim)
        await asyncio.sleep(max(0.0, seconds - kill_after))
        load.stop()
        await task
        await r.aclose()
        after = [a for a in load.acked_after(killed_at) if load.answers[a.exchange_id] in on_victim]
        resumed_s = min((a.ended for a in after), default=float("nan")) - killed_at
        wait_until(lambda: len(cluster.masters()) == 3 and cluster.state_ok(), 60, what="the failover")
        found = audit(load, cast(redis.Redis, cluster.client()))  # (the same commands)
        print(f"ratings acknowledged {len(load.acked):,}, rating events kept {found.kept:,}: lost {len(found.lost)}")
        print(f"writes refused while failing over: {len(load.refused)}; first acknowledged write {resumed_s:.1f} s after the kill")
        if found.doubled or found.stale or found.strays or found.refused_applied:
            print(f"doubled {len(found.doubled)}, stale ratings {len(found.stale)}, stray events {found.strays}, refused but applied {found.refused_applied}")
        if wait is not None:
            first_s = shortfalls.first_at - killed_at if shortfalls.first_at is not None else float("nan")
            print(f"{wait}: waits not met (acknowledged, not confirmed on a replica) {shortfalls.count:,}, the first {first_s:.1f} s after the kill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument("--wait-replicas", type=int, default=0, help="REDIS_WAIT_REPLICAS for each rating (0: no wait)")
    parser.add_argument("--wait-timeout-ms", type=int, default=100)
    args = parser.parse_args()
    wait = ReplicaWait(args.wait_replicas, args.wait_timeout_ms) if args.wait_replicas else None
    asyncio.run(run(args.answers, args.seconds, args.kill_after, wait))


if __name__ == "__main__":
    main()
