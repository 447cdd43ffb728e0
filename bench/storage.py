"""Redis bytes per rated answer: the compact prompt storage vs the literal one, same answers.

Runs the real app (embedded Redis, stand-in model, the shipped prompt) and has users chat through
it as the browser does: `--threads` conversations of `--turns` messages (questions of 15-60
words; the stand-in answers by repeating them), every answer rated. Then it measures the bytes
of every key (MEMORY USAGE), copies everything into a second Redis with the default hash limits
in the form and key layout the code before the compact storage and the spread keys wrote
(`copy_as_before`: one events stream, one counts hash, one review queue) and measures again. Prints bytes per rated answer by key family and the ratio (target <= 0.40).

    python -m bench.storage [--threads 40] [--turns 5] [--source app|seed]

`--source seed` writes `threads * turns` rated answers with support.seed.bulk_seed instead (the
app's scripts, a ~1 KB system prompt, three minimal Chainlit steps per answer): the measurement
docs/scale.md started from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, cast

import redis

from bot import answer_info as answer_infos
from bot.stored_form import unpack_element, unpack_step
from feedback import exchange as exchanges
from feedback import keys
from launcher import chainlit_server, redis_server
from launcher.process import ServiceGroup, free_port, wait_until
from sim.client import ChatClient
from support.seed import bulk_seed
from support.services import app_env, start_standin
from support.session import USERS

HOST = "127.0.0.1"
TARGET = 0.40
WORDS = "the a model answer rating user prompt thread retrain data store cluster memory slot node replica key value bytes".split()


def family(key: str) -> str:
    """The key's kind: its first part after the hash tag ({fb.3.303}:exchange:<id> -> exchange)."""
    parts = key.split(":")
    kind = parts[1] if len(parts) > 1 else key
    if kind in ("thread", "user") and len(parts) > 3:
        return f"{kind}:{parts[3]}"
    return kind


_PER_BUCKET = {"events": "events", "stats:approval": "approval_counts", "review:down": "review_queue"}


def before_name(key: str) -> str:
    """The key's name in the first layout, where every key carried {fb} (keys.legacy); a bucket's
    own keys (events, counts, review queue) were one key each."""
    tag, _, rest = key.partition(":")
    if tag == keys.PREFIX:
        return key
    return keys.legacy(_PER_BUCKET[rest]) if rest in _PER_BUCKET else f"{keys.PREFIX}:{rest}"


def _default_limits(argv: list[str]) -> list[str]:
    """The embedded Redis's command line without its encoding limits (what the earlier code ran)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--hash-max-ziplist-value", "--zset-max-ziplist-value", "--stream-node-max-bytes"):
            out.pop()
            continue
        out.append(arg)
    return out


def merge_buckets(src: redis.Redis, dst: redis.Redis) -> None:
    """The buckets' events, approval counts and review queues as the first layout kept them: one
    stream (entries in id order, their own ids), one counts hash, one queue of answer ids."""
    entries = sorted((e for b in range(keys.BUCKETS) for e in cast("list[tuple[str, dict[str, str]]]", src.xrange(keys.events(b)))), key=lambda e: tuple(map(int, e[0].split("-"))))
    last = (0, 0)
    for event_id, fields in entries:
        ms, seq = map(int, event_id.split("-"))
        last = (ms, seq) if (ms, seq) > last else (last[0], last[1] + 1)  # one stream: ids that tie across buckets follow each other
        dst.xadd(keys.legacy("events"), cast(Any, fields), id=f"{last[0]}-{last[1]}")
    counts: Counter[str] = Counter()
    for b in range(keys.BUCKETS):
        counts.update({f: int(n) for f, n in cast("dict[str, str]", src.hgetall(keys.approval_counts(b))).items()})
        queued = cast("list[tuple[str, float]]", src.zrange(keys.review_queue(b), 0, -1, withscores=True))
        if queued:
            dst.zadd(keys.legacy("review_queue"), {m.split("/", 1)[1]: score for m, score in queued})
    if counts:
        dst.hset(keys.legacy("approval_counts"), mapping=cast(Any, dict(counts)))


def measure(r: redis.Redis) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for key in r.scan_iter(count=1000):
        sizes[family(cast(str, key))] += r.memory_usage(key, samples=0) or 0
    return sizes


def copy_as_before(src: redis.Redis, dst: redis.Redis, src_raw: redis.Redis, dst_raw: redis.Redis) -> int:
    """Copy every key into `dst` (a Redis with the default hash encoding limits) in the form the
    code before the compact storage wrote: answers with every prompt message literally in their
    `messages` field and `deleted` "0", a list of the answers to each user message, the answer's
    info line as an element (bot/answer_info.py, derived now), steps and elements as Chainlit's whole dicts (run steps
    with their input, the question). Returns how many answers."""
    answers = 0
    alternatives: list[tuple[float, str, str]] = []
    for key in cast("list[str]", list(src.scan_iter(count=1000))):
        kind = family(key)
        if kind == "prefix":
            continue  # the old layout had none
        if kind == "exchange":
            record = exchanges.load_sync(src, cast(str, src.hget(key, "thread_id")), key.rsplit(":", 1)[1])
            assert record is not None, key
            fields = {k: v for k, v in cast("dict[str, str]", src.hgetall(key)).items() if k not in exchanges.PROMPT_FIELDS}
            fields[exchanges.LEGACY_FIELD] = json.dumps([m.model_dump() for m in record.messages])
            fields.setdefault("deleted", "0")
            dst.hset(before_name(key), mapping=fields)  # type: ignore[arg-type]
            alternatives.append((record.created_at, record.prompt_message_id, record.id))
            if record.message_id and not record.deleted:  # the line under it, then stored as an element
                info = answer_infos.element(record, [], {}, {})  # (no regenerated answers here: no earlier ones)
                dst.set(keys.legacy("element", info["id"]), json.dumps(info, default=str))
                dst.sadd(keys.legacy("thread_elements", record.thread_id), info["id"])
            answers += 1
        elif kind == "step":
            fields = cast("dict[str, str]", src.hgetall(key))
            step = unpack_step(fields["data"], key.rsplit(":", 1)[1], fields.get("threadId"))
            if step.get("type") == "run" and step.get("parentId"):
                parent = src.hget(keys.step(fields["threadId"], step["parentId"]), "data")
                step["input"] = json.loads(cast(str, parent)).get("output", "") if parent else ""
            fields["data"] = json.dumps(step, default=str)
            dst.hset(before_name(key), mapping=fields)  # type: ignore[arg-type]
        elif kind == "element":
            dst.set(before_name(key), json.dumps(unpack_element(cast(str, src.get(key))), default=str))
        elif key.partition(":")[2] not in _PER_BUCKET:
            dump = src_raw.dump(key)
            if dump is not None:
                dst_raw.restore(before_name(key), 0, dump)
    merge_buckets(src, dst)
    for _, message_id, exchange_id in sorted(alternatives):  # the list the earlier code kept per user message
        dst.rpush(keys.legacy("alternatives", message_id), exchange_id)
    return answers


async def chat(url: str, threads: int, turns: int, seed: int) -> int:
    rng = random.Random(seed)
    answered = 0
    user, password = next(iter(USERS.items()))
    for _ in range(threads):
        client = ChatClient(url)
        await client.login(user, password)
        await client.connect()
        try:
            for _ in range(turns):
                question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 60))) + "?"
                reply = await client.send(question)
                final = reply.final()
                assert final is not None, "no answer"
                response = await client.rate(final["metadata"]["exchange_id"], rng.randint(0, 1))
                response.raise_for_status()
                answered += 1
        finally:
            await client.close()
    return answered


def table(title: str, sizes: Counter[str], answers: int) -> int:
    total = sum(sizes.values())
    print(f"\n{title}: {total / answers:,.0f} bytes per rated answer ({answers} answers)")
    for kind, size in sizes.most_common():
        print(f"  {kind:<22} {size / answers:>8,.0f}  {size / total:>5.0%}")
    return total


def run(threads: int, turns: int, seed: int, work: Path, source: str = "app") -> dict[str, Any]:
    with ServiceGroup(work / "logs") as group:
        sock = work / "redis" / "redis.sock"
        redis_server.start(group, work / "redis", sock)
        r = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
        if source == "app":
            model_url = start_standin(group)
            port = free_port()
            chainlit_server.start(group, app_env(f"unix://{sock}", f"{model_url}/v1", work / "app"), work / "app" / "chainlit", HOST, port)
            answers = asyncio.run(chat(f"http://{HOST}:{port}", threads, turns, seed))
        else:  # the app's write scripts, pipelined, minimal steps (docs/scale.md's first measurement)
            answers = len(bulk_seed(r, threads * turns, turns_per_thread=turns, seed=seed))
        compact = measure(r)
        # The same answers as the earlier code stored them, in a Redis with the default limits.
        before_sock = work / "before" / "redis.sock"
        (work / "before").mkdir()
        group.start("redis-before", _default_limits(redis_server.argv(work / "before", before_sock)))
        before = redis.Redis(unix_socket_path=str(before_sock), decode_responses=True)
        wait_until(lambda: before_sock.exists() and bool(before.ping()), 30, None, "the second Redis")
        before_raw, r_raw = redis.Redis(unix_socket_path=str(before_sock)), redis.Redis(unix_socket_path=str(sock))
        copied = copy_as_before(r, before, r_raw, before_raw)
        assert copied == answers, f"{copied} stored answers for {answers} sent"
        literal = measure(before)
        before_raw.close()
        r_raw.close()
    new, old = table("Compact (now)", compact, answers), table("Before (literal prompts, whole steps, default hash limits)", literal, answers)
    # Op ids expire after a week: shown, and the ratio also given without them.
    ops = compact["op"]
    ratio, ratio_no_ops = new / old, (new - ops) / (old - ops)
    print(f"\ncompact / literal: {ratio:.2f} (without the expiring op ids: {ratio_no_ops:.2f}); target <= {TARGET}: {'PASS' if ratio <= TARGET else 'FAIL'}")
    return {"answers": answers, "compact": dict(compact), "literal": dict(literal), "ratio": ratio, "ratio_without_ops": ratio_no_ops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=40)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", choices=("app", "seed"), default="app", help="app: users chat through the app; seed: support.seed.bulk_seed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        figures = run(args.threads, args.turns, args.seed, Path(tmp), args.source)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ratio"] <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
