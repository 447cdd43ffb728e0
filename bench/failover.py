"""A master of a Redis Cluster killed while users rate: how long writes stop, and how many
acknowledged ratings the failover loses (Redis replicates asynchronously: a write acknowledged by
the master but not yet on its replica is gone when the replica takes over).

In one run: a cluster of three masters with a replica each (support/cluster.py, loopback ports),
--answers exchanges in 20 threads, then ratings written one after another for --seconds through
feedback.rating.apply on the cluster client (REDIS_CLUSTER's client), the master serving the
product's slot killed with SIGKILL after --kill-after seconds. After the cluster has failed over:
acknowledged ratings vs rating events kept (each acknowledged rating appended exactly one), and
the seconds from the kill to the first acknowledged write. With --wait-replicas N each rating
waits for N replicas (REDIS_WAIT_REPLICAS, feedback/replication.py; --wait-timeout-ms): the
ratings whose wait was not met are counted.

    python -m bench.failover [--seconds 12] [--kill-after 3] [--wait-replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect, connect_sync
from feedback.replication import ReplicaWait
from launcher.process import ServiceGroup, wait_until
from support import seed
from support.cluster import start_cluster

THREADS = 20


class Shortfalls(logging.Handler):
    """Counts feedback.replication's warnings (a rating whose wait was not met) and when the first came."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first_at: float | None = None
        self.first_s = float("nan")

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first_at = self.first_at or time.monotonic()


async def run(answers: int, seconds: float, kill_after: float, wait: ReplicaWait | None = None) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    with ServiceGroup(folder / "logs") as group:
        cluster = start_cluster(group, folder / "nodes")
        r = connect(cluster.url, cluster=True, timeout_s=1.0)
        threads = {
            await seed.seed_exchange(r, thread=f"t{i % THREADS}", user="rater", question=f"q{i}", answer="a", value=None): f"t{i % THREADS}"
            for i in range(answers)
        }
        master = cluster.client().get_node_from_key(keys.events())
        victim = next(n for n in cluster.nodes if n.port == master.port)
        acked = errors = 0
        shortfalls = Shortfalls()
        logging.getLogger("feedback.replication").addHandler(shortfalls)
        killed_at: float | None = None
        resumed_s: float | None = None
        ids = list(threads)
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            if killed_at is None and time.monotonic() - start >= kill_after:
                cluster.kill(victim)
                killed_at = time.monotonic()
            exchange_id = ids[i % len(ids)]
            i += 1
            try:
                await ratings.apply(
                    r, op_id=seed.new_id(), user="rater", thread_id=threads[exchange_id], exchange_id=exchange_id, rating=ratings.RatingInput(value=i % 2), wait=wait
                )
            except Exception:  # the master is gone: the client raises until it finds the new one
                errors += 1
                await asyncio.sleep(0.05)
                continue
            acked += 1
            if killed_at is not None and resumed_s is None:
                resumed_s = time.monotonic() - killed_at
        await r.aclose()
        if shortfalls.first_at is not None and killed_at is not None:
            shortfalls.first_s = shortfalls.first_at - killed_at
        wait_until(lambda: len(cluster.masters()) == 3 and cluster.state_ok(), 60, what="the failover")
        kept = int(connect_sync(cluster.url, cluster=True).xlen(keys.events()))
        print(f"ratings acknowledged {acked:,}, rating events kept {kept:,}: lost {acked - kept}")
        print(f"writes refused while failing over: {errors}; first acknowledged write {resumed_s or float('nan'):.1f} s after the kill")
        if wait is not None:
            print(f"{wait}: waits not met (acknowledged, not confirmed on a replica) {shortfalls.count:,}, the first {shortfalls.first_s:.1f} s after the kill")


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
