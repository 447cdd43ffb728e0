"""Spreading: moving the keys of the first layout, where every key carried the hash tag `{fb}` (so
all data sat in one slot, on one node of a cluster), to the layout of feedback/keys.py, where a
thread's keys carry its bucket's tag and a user's keys their user's.

Thread by thread: each key of the thread (the thread, its indexes, steps, elements, answers,
ratings) is copied to its new name (DUMP, RESTORE with its time to live) and, once all of them
are there, the old ones are deleted, the thread record last. An interrupted run leaves a thread
either still in the old layout (it is copied again: RESTORE replaces) or moved; a second run only
does what is left. Then the users (record, thread list; favorites become their threads'), the
rating events (each copied, with its own id, to its thread's bucket's stream: the job's watermark
stays valid), and the console's aggregates, recounted per bucket (feedback.stats.rebuild). The old
per-message answer lists are dropped (nothing reads them). Counts are checked: every old key of
each kind was moved, else SpreadError and the layout stays unmarked. Run it with the app stopped:
`chatbot up` runs it before starting the app when it finds the old layout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from feedback import keys, stats
from feedback.errors import LoopError
from feedback.event import RatingEvent

SPREAD = "spread"  # keys.layout() once done
_THREAD_SUFFIXES = {"": "thread", "steps": "thread_steps", "elements": "thread_elements", "exchanges": "thread_exchanges", "ratings": "thread_ratings"}


class SpreadError(LoopError):
    """Old keys that were not all moved (the layout is not marked done; run it again)."""


@dataclass
class Spread:
    threads: int = 0  # moved by this run
    users: int = 0
    events: int = 0  # copied to the buckets' streams
    moved: Counter[str] = field(default_factory=Counter)  # keys moved, by kind (keys.legacy's)
    dropped: int = 0  # old per-message answer lists
    orphans: Counter[str] = field(default_factory=Counter)  # old keys of no thread, by kind: left as they are (no reader reaches them)
    ratings_counted: int = 0  # by the aggregates' recount


def done(r: redis.Redis) -> bool:
    return r.get(keys.layout()) == SPREAD


def needed(r: redis.Redis) -> bool:
    """Whether there is data in the first layout to move. A store with none is marked spread."""
    if done(r):
        return False
    if any(True for _ in r.scan_iter(match=keys.legacy("thread", keys.ANY), count=1000)) or r.exists(keys.legacy("events")):
        return True
    if not any(True for _ in r.scan_iter(match=keys.legacy("user", keys.ANY), count=1000)):
        r.set(keys.layout(), SPREAD)
        return False
    return True


def spread(r: redis.Redis, on_progress: Callable[[Spread], None] | None = None) -> Spread:
    """Move everything (see the module's doc); `r` decodes responses. Raises SpreadError when old
    keys are left that should have moved."""
    out = Spread()
    before = _old_kinds(r)
    thread_ids = sorted({t for k in r.scan_iter(match=keys.legacy("thread", keys.ANY), count=1000) if (t := keys.thread_in(cast(str, k)))})
    for thread_id in thread_ids:
        _thread(r, thread_id, out)
        out.threads += 1
        if on_progress is not None:
            on_progress(out)
    for user in sorted({u for k in r.scan_iter(match=keys.legacy("user", keys.ANY), count=1000) if (u := _user_in(cast(str, k)))}):
        _user(r, user, out)
        out.users += 1
    _orphans(r, out)
    _events(r, out)
    for key in list(r.scan_iter(match=keys.legacy("alternatives", keys.ANY), count=1000)):
        out.dropped += int(r.delete(key))
    r.delete(keys.legacy("approval_counts"), keys.legacy("review_queue"))
    out.ratings_counted = stats.rebuild(r)
    left = _old_kinds(r) - Counter(out.orphans)
    if left:
        raise SpreadError(f"keys left in the first layout: {dict(left)} (of {dict(before)}); run it again, and see the log of what failed")
    r.set(keys.layout(), SPREAD)
    return out


# What each old kind holds and is moved as; the old keys left of these kinds must be none at the end.
_MOVED_KINDS = ("thread", "step", "element", "exchange", "rating", "user", "alternatives", "events", "stats", "review")


def _old_kinds(r: redis.Redis) -> Counter[str]:
    """The first layout's keys, by the part after `{fb}:` (thread, step, ...), of the kinds moved."""
    found: Counter[str] = Counter()
    aggregates = (keys.legacy("approval_counts"), keys.legacy("review_queue"))
    for key in r.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        kind = cast(str, key).split(":")[1]
        if kind in _MOVED_KINDS and (kind not in ("stats", "review") or key in aggregates):
            found[kind] += 1
    return found


def _user_in(key: str) -> str | None:
    parts = key.split(":")
    return parts[2] if len(parts) >= 3 and parts[1] == "user" and keys.valid_user(parts[2]) else None


def _move(r: redis.Redis, pairs: Iterable[tuple[str, str, str]], out: Spread) -> None:
    """Copy each (kind, old, new) key that exists (DUMP, RESTORE with its time to live, REPLACE),
    check every copy is there, then delete the old ones, in the order given reversed (the first
    one, a thread's record, last)."""
    pairs = list(pairs)
    pipe: Any = r.pipeline(transaction=False)
    for _, old, _ in pairs:
        pipe.dump(old)
        pipe.pttl(old)
    replies = pipe.execute()
    present = [(kind, old, new, dump, max(int(ttl), 0)) for (kind, old, new), dump, ttl in zip(pairs, replies[::2], replies[1::2], strict=True) if dump is not None]
    if not present:
        return
    pipe = r.pipeline(transaction=False)
    for _, _, new, dump, ttl in present:
        pipe.restore(new, ttl, dump, replace=True)
    pipe.execute()
    pipe = r.pipeline(transaction=False)
    for _, _, new, _, _ in present:
        pipe.exists(new)
    if not all(pipe.execute()):
        raise SpreadError(f"copies missing after RESTORE among {[new for _, _, new, _, _ in present][:5]}")
    pipe = r.pipeline(transaction=False)
    for _, old, _, _, _ in reversed(present):
        pipe.delete(old)
    pipe.execute()
    out.moved.update(kind for kind, *_ in present)


def _thread(r: redis.Redis, thread_id: str, out: Spread) -> None:
    old = {suffix: keys.legacy(kind, thread_id) for suffix, kind in _THREAD_SUFFIXES.items()}
    step_ids = cast("list[str]", r.zrange(old["steps"], 0, -1))
    element_ids = cast("set[str]", r.smembers(old["elements"]))
    exchange_ids = {*cast("list[str]", r.zrange(old["exchanges"], 0, -1)), *cast("list[str]", r.hkeys(old["ratings"]))}
    pairs = [("thread", old[""], keys.thread(thread_id))]
    pairs += [("thread", old[s], keys.thread(thread_id) + f":{s}") for s in ("steps", "elements", "exchanges", "ratings")]
    pairs += [("step", keys.legacy("step", s), keys.step(thread_id, s)) for s in step_ids if keys.valid_id(s)]
    pairs += [("element", keys.legacy("element", e), keys.element(thread_id, e)) for e in element_ids if keys.valid_id(e)]
    for e in sorted(exchange_ids):
        if keys.valid_id(e):
            pairs += [("exchange", keys.legacy("exchange", e), keys.exchange(thread_id, e)), ("rating", keys.legacy("rating", e), keys.rating(thread_id, e))]
    _move(r, pairs, out)


def _orphans(r: redis.Redis, out: Spread) -> None:
    """Old steps, elements and answers that no thread's index listed: moved to the thread they
    name; ratings with their answer. What names no thread stays, counted."""
    for kind in ("step", "element", "exchange"):
        for key in list(r.scan_iter(match=keys.legacy(kind, keys.ANY), count=1000)):
            item = cast(str, key).rsplit(":", 1)[1]
            if kind == "step":
                thread = r.hget(key, "threadId")
            elif kind == "element":
                thread = json.loads(cast(str, r.get(key) or "{}")).get("threadId")
            else:
                thread = r.hget(key, "thread_id")
            if isinstance(thread, str) and keys.valid_id(thread) and keys.valid_id(item):
                pairs = [(kind, cast(str, key), getattr(keys, kind)(thread, item))]
                if kind == "exchange":
                    pairs.append(("rating", keys.legacy("rating", item), keys.rating(thread, item)))
                _move(r, pairs, out)
            else:
                out.orphans[kind] += 1
    out.orphans["rating"] += sum(1 for _ in r.scan_iter(match=keys.legacy("rating", keys.ANY), count=1000))


def _user(r: redis.Redis, user: str, out: Spread) -> None:
    """The user's record and thread list; their favorite steps become their threads' favorites."""
    favorites = cast("set[str]", r.smembers(keys.legacy("user_favorites", user)))
    if favorites:
        thread_ids = cast("list[str]", r.zrange(keys.legacy("user_threads", user), 0, -1) or r.zrange(keys.user_threads(user), 0, -1))
        pipe: Any = r.pipeline(transaction=False)
        for tid in thread_ids:
            for sid in favorites:
                pipe.zscore(keys.thread_steps(tid), sid)
        found = iter(pipe.execute())
        pipe = r.pipeline(transaction=False)
        for tid in thread_ids:
            for sid in favorites:
                if next(found) is not None:
                    pipe.sadd(keys.thread_favorites(tid), sid)
        pipe.execute()
    pairs = [("user", keys.legacy("user", user), keys.user(user)), ("user", keys.legacy("user_threads", user), keys.user_threads(user))]
    _move(r, pairs, out)
    out.moved["user"] += int(r.delete(keys.legacy("user_favorites", user)))


def _events(r: redis.Redis, out: Spread, batch: int = 5000) -> None:
    """Each old event to its thread's bucket's stream, with its own id (in order, so each stream's
    ids still increase; an event already copied, by an interrupted run, is not copied again)."""
    old = keys.legacy("events")
    last: dict[int, str] = {}
    start = "-"
    while entries := cast("list[tuple[str, dict[str, str]]]", r.xrange(old, min=start, max="+", count=batch)):
        pipe: Any = r.pipeline(transaction=False)
        for event_id, fields in entries:
            try:
                thread = RatingEvent.from_fields(fields).thread
                b = keys.bucket(thread) if keys.valid_id(thread) else 0
            except ValueError:
                b = 0  # not an event: kept, in the first bucket (the job skips it there as here)
            if b not in last:
                newest = cast("list[tuple[str, dict[str, str]]]", r.xrevrange(keys.events(b), count=1))
                last[b] = newest[0][0] if newest else "0-0"
            if _stream_id(event_id) > _stream_id(last[b]):
                pipe.xadd(keys.events(b), cast(Any, fields), id=event_id)
                last[b] = event_id
                out.events += 1
        pipe.execute()
        start = f"({entries[-1][0]}"
    out.moved["events"] += int(r.delete(old))


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def summary(done_: Spread) -> dict[str, int]:
    return {
        "threads moved": done_.threads,
        "users moved": done_.users,
        **{f"{kind} keys moved": n for kind, n in sorted(done_.moved.items())},
        "rating events copied": done_.events,
        "answer lists dropped": done_.dropped,
        "left, in no thread": sum(done_.orphans.values()),
        "ratings recounted": done_.ratings_counted,
    }
