"""Rate limits: at most `limit` hits per subject in any span of `window_s` seconds, counted in Redis
so that every app process shares them.

A sliding-window log (lua/limit.lua): each allowed hit is recorded with its time, on Redis's clock,
and a hit is allowed only while fewer than `limit` were recorded in the last `window_s`. A fixed
window (one counter per minute) lets twice the limit through across a minute's boundary; a token
bucket with a burst of `limit` does too. A log holds at most `limit` entries per subject, and
refused hits are not recorded.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from feedback import keys
from feedback.scripts import lua
from feedback.store import OUTAGE

log = logging.getLogger(__name__)

LIMIT_SCRIPT = lua("limit")
_SCRIPTS: WeakKeyDictionary[Redis, AsyncScript] = WeakKeyDictionary()


def _script(r: Redis) -> AsyncScript:
    """The script registered on this client: called by its SHA (EVALSHA), not resent each time."""
    if r not in _SCRIPTS:
        _SCRIPTS[r] = r.register_script(LIMIT_SCRIPT)
    return _SCRIPTS[r]


@dataclass(frozen=True)
class Hit:
    """One hit's outcome: `retry` is None when allowed (then `hit_id` names it in the log, for
    `forget`), else the seconds to wait."""

    retry: int | None
    hit_id: str


class Limiter:
    def __init__(self, redis: Redis, kind: str, limit: int, window_s: float = 60) -> None:
        self.redis = redis
        self.kind = kind
        self.limit = limit
        self.window_s = window_s

    def _key(self, subject: str) -> str:
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]  # any subject, even "::1", makes a valid key
        return keys.limit(self.kind, digest)

    async def hit(self, subject: str) -> int | None:
        """Count one hit; None when allowed, else the seconds to wait until one is allowed again,
        whole (Retry-After's unit) and at least 1 (0 would invite an immediate retry)."""
        return (await self.take(subject)).retry

    async def take(self, subject: str) -> Hit:
        """`hit`, also naming the hit when it was allowed, so that it can be forgotten."""
        hit_id = secrets.token_hex(8)
        try:
            wait_ms = int(await _script(self.redis)(keys=[self._key(subject)], args=[self.limit, round(self.window_s * 1000), hit_id]))
        except OUTAGE as exc:
            # A limit must not stop chat during an outage (writes are spooled then).
            log.warning("rate limit %s not checked (Redis unreachable): %s", self.kind, exc)
            return Hit(None, hit_id)
        return Hit(None if wait_ms < 0 else max(1, math.ceil(wait_ms / 1000)), hit_id)

    async def forget(self, subject: str, hit_id: str) -> None:
        """Take an allowed hit out of the count again (a login that succeeded: only failures count)."""
        try:
            await self.redis.zrem(self._key(subject), hit_id)
        except OUTAGE as exc:
            log.warning("rate limit %s: a hit not forgotten (Redis unreachable): %s", self.kind, exc)
