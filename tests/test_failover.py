"""A master killed mid-load: the cluster fails over and writes resume (docs/scale.md).

A real Redis Cluster (three masters, a replica each, support/cluster.py) and the product's cluster
client (`feedback.connection.connect(url, cluster=True)`, as REDIS_CLUSTER builds it). A task rates
answers (in 20 threads, spread over the masters) one after another through
`feedback.rating.apply` while the test SIGKILLs the master that serves the first thread's bucket
(a third of the data), as a crashed machine would. Nothing is restarted: the
same client keeps writing, and the replica has to take over on its own. The load, the kill and
the audit of what was kept are bench/failover.py's (`python -m bench.failover` measures the same).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from bench import failover
from feedback import keys
from feedback.connection import connect
from feedback.rating import RatingError
from launcher.process import ServiceGroup, wait_until
from support.cluster import start_cluster

ANSWERS = 100  # answers rated in turn, each many times
WARM = 300  # acknowledged ratings before the kill: the load runs steadily on the master
RESUME_DEADLINE_S = 15.0  # kill → first acknowledged write (two node timeouts of 2 s and the election: ~5 s here)
AFTER = 300  # acknowledged ratings after the writes resumed: they keep going, not one lucky write


async def test_a_master_killed_mid_load_fails_over_and_writes_resume(own_services: ServiceGroup, tmp_path: Path) -> None:
    cluster = start_cluster(own_services, tmp_path / "nodes")
    r = connect(cluster.url, cluster=True)
    load = failover.RatingLoad(r, await failover.seed_answers(r, ANSWERS))
    victim = failover.slot_master(cluster, "t0")
    promoted = failover.replica_of(cluster, victim)
    on_victim = failover.victim_threads(cluster, victim, load)
    assert 0 < len(on_victim) < len(set(load.answers.values()))  # part of the data, not all of it
    task = asyncio.create_task(load.run())
    try:
        await load.until(lambda: load.acked_count >= WARM, 30, "the load before the kill")
        killed_at = failover.kill(cluster, victim)
        # Resumed: a write into a thread the killed master served, started after the kill, has
        # been acknowledged (one in flight at the kill may have been answered just before it).
        def victims_write_acked() -> bool:
            last = load.attempts[-1]
            return last.acked and last.started >= killed_at and load.answers[last.exchange_id] in on_victim

        await load.until(victims_write_acked, RESUME_DEADLINE_S, "a write on the killed master's buckets acknowledged after the kill")
        resumed = next(a for a in load.attempts if a.acked and a.started >= killed_at and load.answers[a.exchange_id] in on_victim)
        resumed_s = resumed.ended - killed_at
        base = load.acked_count
        await load.until(lambda: load.acked_count >= base + AFTER, 10, "writes going on after the first")
    finally:
        load.stop()
        await task
        await r.aclose()

    refused = load.refused
    report = (
        f"acknowledged {len(load.acked):,}, refused {len(refused)}, resumed {resumed_s:.1f} s after the kill, "
        f"longest write {max(a.ended - a.started for a in load.attempts):.1f} s, errors {sorted({type(a.error).__name__ for a in refused})}"
    )
    print(report)

    # Nothing restarted: the killed master stays dead, and its replica serves the slot now.
    assert victim.proc.poll() is not None
    wait_until(lambda: promoted.client().info("replication")["role"] == "master", 10, what="the replica's promotion")
    seen_from_promoted = RedisCluster(host="127.0.0.1", port=promoted.port, decode_responses=True)
    serving = seen_from_promoted.get_node_from_key(keys.thread("t0")).port
    seen_from_promoted.close()
    assert serving == promoted.port, (serving, promoted.port, victim.port)
    assert resumed_s < RESUME_DEADLINE_S, report

    # Every write was answered: an event id (acknowledged) or an error (refused), never nothing.
    assert all(not math.isnan(a.ended) and (a.acked != (a.error is not None)) for a in load.attempts)
    # Refusals came only with the failover, and as the client's errors about the cluster (a node
    # gone, the slot not served), not as a refused rating (RatingError) or a bug.
    assert all(a.ended >= killed_at for a in refused), [(a.seq, a.error) for a in refused if a.ended < killed_at]
    cluster_errors = (RedisError, RedisClusterException)
    assert all(isinstance(a.error, cluster_errors) and not isinstance(a.error, RatingError) for a in refused), {repr(a.error) for a in refused}

    # Every acknowledged rating is kept (read through a new cluster client: the promoted replica
    # serves the killed master's buckets): its one rating event in its bucket's stream, and each
    # rating hash holds the last acknowledged write of its answer (or a later refused one that was
    # applied all the same: its reply, not the write, was lost).
    kept = failover.audit(load, cast(redis.Redis, cluster.client()))
    print(f"kept {kept.kept:,}, lost {len(kept.lost)}, refused but applied {kept.refused_applied}")
    assert not kept.lost, f"{len(kept.lost)} acknowledged ratings lost, seqs {[a.seq for a in kept.lost][:20]}; {report}"
    assert kept.kept == len(load.acked)
    assert not kept.doubled, [(a.seq, a.event_id) for a in kept.doubled][:20]
    assert not kept.stale, kept.stale[:20]
    assert kept.strays == 0
