"""Where exchanges and ratings are written: Redis, or the local spool while Redis is unreachable.

Writes keep their order: once something is spooled, later writes queue behind it until the spool
has been replayed, so an un-rate can never overtake the rating it undoes.

Every rating a user makes passes `Store.rate`, which counts it against the user's rating limit
(RATINGS_PER_MINUTE): whichever door a rating comes through (an HTTP route, an action button, the
data layer), it cannot get around the limit. A door that counts a request early, before reading
its body, passes the `Admission` it got to `rate`, which then does not count it twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feedback import exchange as exchanges
from feedback import rating as ratings
from feedback.replication import ReplicaWait
from feedback.spool import Spool
from feedback.write import Rate, SaveExchange, parse, thread_of

log = logging.getLogger(__name__)

# What "Redis is down" looks like; other Redis errors are bugs and propagate.
OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError)

Stored = Literal["redis", "spool"]


class Limit(Protocol):
    """A per-user limit (feedback.limiter.Limiter): None when allowed, else seconds to wait."""

    async def hit(self, subject: str) -> int | None: ...


class Admission:
    """One rating the limit let through (`Store.admit`), spent by the one `Store.rate` call that
    is given it: it cannot let a second write through."""

    __slots__ = ("_spent", "user")

    def __init__(self, user: str) -> None:
        self.user = user
        self._spent = False

    def spend(self, user: str) -> bool:
        """True once, for its own user; then False."""
        if self._spent or user != self.user:
            return False
        self._spent = True
        return True


class Store:
    def __init__(self, redis: Redis, spool: Spool, unrated_ttl_s: int = 0, wait: ReplicaWait | None = None, rating_limit: Limit | None = None) -> None:
        self.redis = redis
        self.spool = spool
        self.unrated_ttl_s = unrated_ttl_s  # an unrated answer's lifetime in Redis (0: kept)
        self.wait = wait  # REDIS_WAIT_REPLICAS: each rating waits for replicas (feedback/replication.py)
        self.rating_limit = rating_limit  # RATINGS_PER_MINUTE per user (None: tools and tests that write ratings themselves)
        self._replay_lock = asyncio.Lock()

    async def admit(self, user: str) -> Admission:
        """Count one rating of `user` now; RatingLimited when past the limit."""
        if self.rating_limit is not None:
            retry = await self.rating_limit.hit(user)
            if retry is not None:
                raise ratings.RatingLimited(retry)
        return Admission(user)

    async def save_exchange(self, exchange: exchanges.Exchange) -> Stored:
        op_id = uuid.uuid4().hex
        return await self._write(
            lambda: exchanges.save(self.redis, exchange, op_id, self.unrated_ttl_s),
            lambda: SaveExchange(id=op_id, exchange=exchange),
        )

    async def rate(self, *, user: str, thread_id: str, exchange_id: str, rating: ratings.RatingInput | None, admission: Admission | None = None) -> Stored:
        """Rate (rating=None: un-rate), counted against the user's limit unless `admission` counted
        it already. Raises RatingError for unknown ids or someone else's answer, RatingLimited
        past the limit (nothing written)."""
        if admission is None or not admission.spend(user):
            await self.admit(user)
        op_id = os.urandom(16).hex()  # 32 hex digits, as uuid4().hex, in a third of the time (every click's path)
        ts = time.time()  # when the user clicked, even if applied later from the spool
        return await self._write(
            lambda: ratings.apply(self.redis, op_id=op_id, user=user, thread_id=thread_id, exchange_id=exchange_id, rating=rating, ts=ts, wait=self.wait),
            lambda: Rate(id=op_id, user=user, thread_id=thread_id, exchange_id=exchange_id, rating=rating, ts=ts),
        )

    def spooled_thread(self, exchange_id: str, user: str) -> str | None:
        """The thread of an answer still in the spool (itself, or the user's own rating of it)."""
        writes = []
        for op in self.spool.pending():
            try:
                writes.append(parse(op))
            except ValueError:  # replay dead-letters it
                continue
        return thread_of(writes, exchange_id, user)

    async def _write(self, direct: Callable[[], Awaitable[object]], as_op: Callable[[], SaveExchange | Rate]) -> Stored:
        """Write to Redis; on an outage (or while older writes wait in the spool), spool it."""
        if not self.spool.has_pending():
            try:
                await direct()
                return "redis"
            except OUTAGE as exc:
                log.warning("Redis unreachable (%s): keeping writes in the local spool", exc)
        self.spool.append(as_op().model_dump(mode="json"))
        return "spool"

    async def _apply(self, op: dict[str, Any]) -> None:
        write = parse(op)  # a line no write of this version can be: dead-lettered by the caller
        if isinstance(write, SaveExchange):
            await exchanges.save(self.redis, write.exchange, write.id, self.unrated_ttl_s)
        else:
            await ratings.apply(
                self.redis, op_id=write.id, user=write.user, thread_id=write.thread_id, exchange_id=write.exchange_id, rating=write.rating, ts=write.ts, wait=self.wait,
            )  # fmt: skip

    async def _apply_replayed(self, op: dict[str, Any]) -> None:
        """Apply one spooled op; an outage propagates (replay stops and retries later), a rating
        the rating script refuses goes to the refused list, any other failure dead-letters the op:
        either way the writes queued behind it go on."""
        try:
            await self._apply(op)
        except OUTAGE:
            raise
        except ratings.RatingError as exc:
            # The user's own mistake (someone else's answer, an unknown one), which the spool
            # could not check while Redis was down: kept apart, as a refusal, never retried.
            log.warning("spooled rating %s refused on replay (%s): moved to %s", op.get("id"), exc, self.spool.refused_path)
            self.spool.refuse(op, f"refused ({exc.kind}): {exc}")
        except Exception as exc:
            log.error("spooled %s %s cannot be applied (%s: %s): moved to %s", op.get("op"), op.get("id"), type(exc).__name__, exc, self.spool.dead_path)
            self.spool.dead_letter(op, f"{type(exc).__name__}: {exc}")

    async def replay(self) -> int:
        """Apply spooled writes in order; returns how many. Safe to call often and concurrently."""
        if not self.spool.refresh():
            return 0
        async with self._replay_lock:
            try:
                done = await self.spool.replay(self._apply_replayed)
            except OUTAGE:
                return 0
        if done:
            log.info("replayed %d spooled writes", done)
        return done

    async def replay_forever(self, interval_s: float = 2.0) -> None:
        """Background task of the chat process: drain the spool whenever Redis is back. It never
        dies: an unexpected error is logged and the next round tries again."""
        while True:
            try:
                await self.replay()
            except Exception:
                log.exception("spool replay failed; retrying in %.0f s", interval_s)
            await asyncio.sleep(interval_s)
