"""The audit log: what operators did (every change they make from the console) and saw (every view
of another user's conversation), in a capped stream, newest first. `r` decodes responses.

A page shows the entries of one kind of target ("model:") or of one target ("thread:<id>"). They
are read from two indexes (sorted sets of entry ids: keys.audit_kind, keys.audit_target), never
by filtering the stream: a rare target's entries are found however many others came after them,
for the cost of the `count` entries read. The stream is trimmed here, oldest first, together with
the index members of what it drops, so the indexes hold exactly the stream's entries.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import cast

import redis

from feedback import keys
from feedback.scripts import lua

KEEP = 100_000  # entries kept: beyond that the oldest are dropped, TRIM at a time
TRIM = 1_000
REINDEX_PAGE = 1_000
SEQ_DIGITS = 10  # an index member's sequence, zero-padded: members of one millisecond sort by it
RECORD = lua("audit")

Entries = list[tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class AuditEntry:
    id: str  # the stream entry id
    who: str
    action: str  # e.g. "mark_reviewed", "promote", "view_conversation"
    target: str  # what it concerned, e.g. "review:queue", "thread:<id>", "model:<id>"
    detail: str
    ts: float


def digest(target: str) -> str:
    """A target's name in a key (a dataset version may hold '.', which a key part may not)."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


def index_of(target: str) -> str:
    """The index a filtered read uses: a kind ("model:", the part before the first ':' and the
    ':') or one whole target ("thread:<id>")."""
    if target.endswith(":") and keys.valid_id(target[:-1]):
        return keys.audit_kind(target[:-1])
    return keys.audit_target(digest(target))


def _indexes(target: str) -> list[str]:
    """The index keys an entry with this target belongs to."""
    kind, sep, _ = target.partition(":")
    return [keys.audit_target(digest(target)), *([keys.audit_kind(kind)] if sep and keys.valid_id(kind) else [])]


def _member(entry_id: str) -> tuple[str, int]:
    """An entry id as an index member (what audit.lua writes) and its score."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq):0{SEQ_DIGITS}d}", int(ms)


def _entry_id(member: str) -> str:
    ms, _, seq = member.partition("-")
    return f"{ms}-{int(seq)}"


def record(r: redis.Redis, who: str, action: str, target: str, detail: str = "") -> str:
    """Append an entry with its index members (one script: never one without the other); returns
    its id. Past KEEP + TRIM entries, the oldest TRIM go (with their index members)."""
    fields = {"who": who, "action": action, "target": target, "detail": detail, "ts": f"{time.time():.6f}"}
    index = _indexes(target)
    entry_id = str(r.eval(RECORD, 1 + len(index), keys.audit(), *index, *[x for kv in fields.items() for x in kv], SEQ_DIGITS))
    if r.xlen(keys.audit()) >= KEEP + TRIM:
        trim(r)
    return entry_id


def trim(r: redis.Redis, keep: int = KEEP) -> int:
    """Drop the oldest entries beyond `keep` (TRIM at most per call) and their index members;
    how many were dropped. Two processes trimming at once drop the same entries: harmless."""
    excess = r.xlen(keys.audit()) - keep
    if excess <= 0:
        return 0
    oldest = cast(Entries, r.xrange(keys.audit(), count=min(excess, TRIM)))
    pipe = r.pipeline(transaction=True)
    for entry_id, fields in oldest:
        member, _ = _member(entry_id)
        for key in _indexes(fields.get("target", "")):
            pipe.zrem(key, member)
    pipe.xdel(keys.audit(), *[entry_id for entry_id, _ in oldest])
    pipe.execute()
    return len(oldest)


def reindex(r: redis.Redis) -> int:
    """Index the entries written before the indexes existed (or by a process that did not index):
    idempotent, and only the entries after the last id it indexed are read again. How many it
    read. The app runs it at start."""
    done = cast("str | None", r.get(keys.audit_indexed()))
    low, seen = f"({done}" if done else "-", 0
    while True:
        entries = cast(Entries, r.xrange(keys.audit(), min=low, count=REINDEX_PAGE))
        if not entries:
            return seen
        pipe = r.pipeline(transaction=False)
        for entry_id, fields in entries:
            member, score = _member(entry_id)
            for key in _indexes(fields.get("target", "")):
                pipe.zadd(key, {member: score})
        pipe.set(keys.audit_indexed(), entries[-1][0])
        pipe.execute()
        seen += len(entries)
        low = f"({entries[-1][0]}"


def _entry(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        entry_id, fields.get("who", ""), fields.get("action", ""), fields.get("target", ""), fields.get("detail", ""), float(fields.get("ts") or 0)
    )


def recent(r: redis.Redis, target: str | None = None, count: int = 50) -> list[AuditEntry]:
    """The latest `count` entries, newest first; with `target`, those of a kind of target
    ("model:") or of one target ("thread:<id>"), read from its index (nothing is missed, however
    old). Reads only: nothing is written."""
    if target is None:
        return [_entry(i, f) for i, f in cast(Entries, r.xrevrange(keys.audit(), count=count))]
    members = cast("list[str]", r.zrevrange(index_of(target), 0, count - 1))
    if not members:
        return []
    pipe = r.pipeline(transaction=False)
    for member in members:
        entry_id = _entry_id(member)
        pipe.xrange(keys.audit(), min=entry_id, max=entry_id)
    return [_entry(*found[0]) for found in cast("list[Entries]", pipe.execute()) if found]
