"""The audit log: what operators did (every change they make from the console) and saw (every view
of another user's conversation), in a capped stream, newest first. `r` decodes responses."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from feedback import keys

KEEP = 100_000  # entries kept (approximately)
MAX_SCANNED = 10_000  # entries a filtered read looks at, at most: a rare target costs bounded work
PAGE = 500


@dataclass(frozen=True)
class AuditEntry:
    id: str  # the stream entry id
    who: str
    action: str  # e.g. "review.mark", "model.promote", "conversation.view"
    target: str  # what it concerned, e.g. "exchange:<id>", "thread:<id>", "model:<id>"
    detail: str
    ts: float


def record(r: redis.Redis, who: str, action: str, target: str, detail: str = "") -> str:
    """Append an entry; returns its id."""
    fields = {"who": who, "action": action, "target": target, "detail": detail, "ts": f"{time.time():.6f}"}
    return str(r.xadd(keys.audit(), fields, maxlen=KEEP, approximate=True))  # type: ignore[arg-type]


def _entry(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(entry_id, fields.get("who", ""), fields.get("action", ""), fields.get("target", ""), fields.get("detail", ""), float(fields.get("ts") or 0))


def recent(r: redis.Redis, target: str | None = None, count: int = 50) -> list[AuditEntry]:
    """The latest `count` entries, newest first; with `target`, those whose target starts with it
    (among the latest MAX_SCANNED entries)."""
    if target is None:
        entries = cast("list[tuple[str, dict[str, str]]]", r.xrevrange(keys.audit(), count=count))
        return [_entry(i, f) for i, f in entries]
    found: list[AuditEntry] = []
    high, scanned = "+", 0
    while len(found) < count and scanned < MAX_SCANNED:
        entries = cast("list[tuple[str, dict[str, str]]]", r.xrevrange(keys.audit(), max=high, count=PAGE))
        if not entries:
            break
        scanned += len(entries)
        found += [_entry(i, f) for i, f in entries if f.get("target", "").startswith(target)]
        high = f"({entries[-1][0]}"
    return found[:count]
