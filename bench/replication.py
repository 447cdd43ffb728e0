"""What REDIS_WAIT_REPLICAS=1 costs: rating writes per second without and with a replica wait.

In one run, on loopback ports: a Redis Cluster of three masters with a replica each
(support/cluster.py) and one Redis with one replica (`--replicaof`), both with AOF on
(`appendfsync everysec`, as the product advises). On each, --answers exchanges in 20 threads,
then ratings written through `feedback.rating.apply` (the app's client, `feedback.connection.connect`)
by C writers at once, each one rating after another: with no wait (REDIS_WAIT_REPLICAS=0) and
with `ReplicaWait(1, 100)` (REDIS_WAIT_REPLICAS=1: EVALSHA and WAIT on the writing connection,
feedback/replication.py), in blocks of --block seconds that take turns (--rounds of each), so
that machine noise hits both alike. Printed: writes/s, p50 and p99 latency per mode, and the
ratio with/without wait, per setup and writer count; a wait that was not met is counted (the
replica is healthy here: there should be none).

    python -m bench.replication [--block 2] [--rounds 3] [--writers 1 16]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as sync_redis
from redis.asyncio import Redis

from feedback import rating as ratings
from feedback.connection import connect
from feedback.replication import ReplicaWait
from launcher.process import ServiceGroup, free_port, wait_until
from support import seed
from support.cluster import start_cluster

THREADS = 20
WAIT = ReplicaWait(1, 100)


@dataclass
class Mode:
    """The writes of one mode over all its blocks."""

    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def ms(self, p: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)] * 1000


class Shortfalls(logging.Handler):
    """Counts the warnings of feedback.replication: writes whose wait was not met."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def start_pair(group: ServiceGroup, folder: Path) -> str:
    """One Redis and its replica (AOF everysec); returns the master's URL once the replica synced."""
    master, replica = free_port(), free_port()
    for port, extra in ((master, []), (replica, ["--replicaof", "127.0.0.1", str(master)])):
        (folder / str(port)).mkdir(parents=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--save", "", "--dir", str(folder / str(port)), *extra]
        proc = group.start(f"redis-pair-{port}", argv)
    client = sync_redis.Redis(port=replica, decode_responses=True)
    wait_until(lambda: client.info("replication")["master_link_status"] == "up", 20, proc, "the replica's first sync")
    return f"redis://127.0.0.1:{master}/0"


async def seeded(r: Redis, answers: int) -> list[tuple[str, str]]:
    return [(await seed.seed_exchange(r, thread=f"t{i % THREADS}", user="rater", question=f"q{i}", answer="a", value=None), f"t{i % THREADS}") for i in range(answers)]


async def block(r: Redis, answers: list[tuple[str, str]], writers: int, seconds: float, wait: ReplicaWait | None, into: Mode) -> None:
    """`writers` coroutines rate for `seconds`, each one write after another."""

    async def writer(k: int) -> None:
        i = k
        while time.monotonic() < end:
            exchange_id, thread = answers[i % len(answers)]
            i += writers
            t0 = time.monotonic()
            await ratings.apply(r, op_id=seed.new_id(), user="rater", thread_id=thread, exchange_id=exchange_id, rating=ratings.RatingInput(value=i % 2), wait=wait)
            into.latencies_s.append(time.monotonic() - t0)

    start = time.monotonic()
    end = start + seconds
    await asyncio.gather(*(writer(k) for k in range(writers)))
    into.wall_s += time.monotonic() - start


async def measure(name: str, url: str, cluster: bool, answers: int, writers_list: list[int], seconds: float, rounds: int, short: Shortfalls) -> None:
    r = connect(url, cluster=cluster)
    try:
        seeded_answers = await seeded(r, answers)
        for writers in writers_list:
            modes = {"no wait": Mode(), "WAIT 1": Mode()}
            await block(r, seeded_answers, writers, seconds / 2, None, Mode())  # warmup: script loaded, connections open
            await block(r, seeded_answers, writers, seconds / 2, WAIT, Mode())
            short.count = 0
            for k in range(rounds):
                order = [("no wait", None), ("WAIT 1", WAIT)]
                for label, wait in order if k % 2 == 0 else order[::-1]:
                    await block(r, seeded_answers, writers, seconds, wait, modes[label])
            base, waited = modes["no wait"], modes["WAIT 1"]
            for label, m in modes.items():
                print(f"{name:<24} {writers:>7} {label:<8} {len(m.latencies_s):>8,} {m.per_s:>10,.0f} {m.ms(50):>7.2f} {m.ms(99):>7.2f}")
            print(f"{name:<24} {writers:>7} ratio with/without wait: {waited.per_s / base.per_s:.2f}   waits not met: {short.count}")
    finally:
        await r.aclose()


async def run(answers: int, seconds: float, rounds: int, writers: list[int]) -> None:
    short = Shortfalls()
    logging.getLogger("feedback.replication").addHandler(short)
    folder = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    with ServiceGroup(folder / "logs") as group:
        cluster = start_cluster(group, folder / "nodes")
        pair = start_pair(group, folder / "pair")
        version = sync_redis.Redis.from_url(pair).info("server")["redis_version"]
        print(f"Redis {version}, {os.cpu_count()} CPUs, Python {platform.python_version()}; blocks of {seconds:g} s, {rounds} of each mode; wait = {WAIT}")
        print(f"{'setup':<24} {'writers':>7} {'mode':<8} {'writes':>8} {'writes/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
        await measure("cluster (3 masters)", cluster.url, True, answers, writers, seconds, rounds, short)
        await measure("one Redis + replica", pair, False, answers, writers, seconds, rounds, short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--block", type=float, default=2.0, help="seconds per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks of each mode")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 16], help="concurrent writers (one line each)")
    args = parser.parse_args()
    asyncio.run(run(args.answers, args.block, args.rounds, args.writers))


if __name__ == "__main__":
    main()
