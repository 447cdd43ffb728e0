"""Rate limits: at most `limit` hits per subject per window, counted in Redis so that every app
process shares them. A fixed window (one INCR) is enough here: it bounds floods, not fairness."""

from __future__ import annotations

import hashlib
import logging
import math
import time

from redis.asyncio import Redis

from feedback import keys
from feedback.store import OUTAGE

log = logging.getLogger(__name__)


class Limiter:
    def __init__(self, redis: Redis, kind: str, limit: int, window_s: int = 60) -> None:
        self.redis = redis
        self.kind = kind
        self.limit = limit
        self.window_s = window_s

    async def hit(self, subject: str) -> int | None:
        """Count one hit; None when allowed, else the seconds to wait until the window resets,
        whole (Retry-After's unit) and at least 1 (0 would invite an immediate retry)."""
        now = time.time()
        window = int(now // self.window_s)
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]  # any subject, even "::1", makes a valid key
        key = keys.limit(self.kind, digest, window)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window_s * 2)
                count, _ = await pipe.execute()
        except OUTAGE as exc:
            # A limit must not stop chat during an outage (writes are spooled then).
            log.warning("rate limit %s not checked (Redis unreachable): %s", self.kind, exc)
            return None
        if int(count) <= self.limit:
            return None
        return max(1, math.ceil((window + 1) * self.window_s - now))
