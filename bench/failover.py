"""A master of a Redis Cluster killed while users rate: how long writes stop, and how many
acknowledged ratings the failover loses (Redis replicates asynchronously: a write acknowledged by
the master but not yet on its replica is gone when the replica takes over).

In one run: a cluster of three masters with a replica each (support/cluster.py, loopback ports),
--answers exchanges in 20 threads, then ratings written one after another for --seconds through
feedback.rating.apply on the cluster client (REDIS_CLUSTER's client), the master serving the
product's slot killed with SIGKILL after --kill-after seconds. After the cluster has failed over:
acknowledged ratings vs rating events kept (each acknowledged rating appended exactly one), and
the seconds from the kill to the first acknowledged write.

    python -m bench.failover [--seconds 12] [--kill-after 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect, connect_sync
from launcher.process import ServiceGroup, wait_until
from support import seed
from support.cluster import start_cluster

THREADS = 20


async def run(answers: int, seconds: float, kill_after: float) -> None:
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
                    r, op_id=seed.new_id(), user="rater", thread_id=threads[exchange_id], exchange_id=exchange_id, rating=ratings.RatingInput(value=i % 2)
                )
            except Exception:  # the master is gone: the client raises until it finds the new one
                errors += 1
                await asyncio.sleep(0.05)
                continue
            acked += 1
            if killed_at is not None and resumed_s is None:
                resumed_s = time.monotonic() - killed_at
        await r.aclose()
        wait_until(lambda: len(cluster.masters()) == 3 and cluster.state_ok(), 60, what="the failover")
        kept = int(connect_sync(cluster.url, cluster=True).xlen(keys.events()))
        print(f"ratings acknowledged {acked:,}, rating events kept {kept:,}: lost {acked - kept}")
        print(f"writes refused while failing over: {errors}; first acknowledged write {resumed_s or float('nan'):.1f} s after the kill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--kill-after", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(run(args.answers, args.seconds, args.kill_after))


if __name__ == "__main__":
    main()
