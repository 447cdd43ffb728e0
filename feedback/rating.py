"""Ratings: thumbs up/down with a comment and reasons; the last click wins.

Each change is one Lua script: it checks that the exchange exists in the claimed thread and
belongs to the caller, writes (or removes) the rating, appends an event to the stream the
retraining job reads and moves the answer's count in the console's approval counts and review
queue (feedback/stats.py), all atomically, in one round trip, and at most once per op id.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import Any, Literal, TypedDict, cast
from weakref import WeakKeyDictionary

import redis as sync_redis
from pydantic import BaseModel, Field, field_validator
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from feedback import keys
from feedback.errors import InvalidInput
from feedback.exchange import OP_TTL_S
from feedback.replication import ReplicaWait, run_script, warn_if_short
from feedback.scripts import lua

_Pack = Callable[[tuple[str | int, ...]], bytes]
_pack: _Pack | None
try:
    import hiredis

    _pack = cast(_Pack, hiredis.pack_command)  # its stub types the tuple as one item long
except ImportError:  # redis[hiredis] is a dependency; without it, redis-py's own packer
    _pack = None

MAX_COMMENT_CHARS = 2000


class Reason(str, Enum):
    """Why an answer was rated down (or, for the first three, up)."""

    helpful = "helpful"
    accurate = "accurate"
    clear = "clear"
    wrong = "wrong"
    unhelpful = "unhelpful"
    too_long = "too_long"
    unsafe = "unsafe"
    off_topic = "off_topic"


# The reasons the chat offers after a thumbs down, with their button labels.
DOWN_REASONS: dict[Reason, str] = {
    Reason.wrong: "Wrong", Reason.unhelpful: "Unhelpful", Reason.too_long: "Too long", Reason.unsafe: "Unsafe", Reason.off_topic: "Off topic",
}


def reason_label(code: str) -> str:
    """A stored reason as people read it, in the chat and the console ("too_long" -> "Too long");
    a code no longer offered is shown as it is."""
    try:
        return DOWN_REASONS[Reason(code)]
    except ValueError:
        return code


Refusal = Literal["not_found", "forbidden", "unauthenticated", "limited"]


class RatingError(InvalidInput):
    """A rating was refused; `kind` says why (the HTTP routes map it to a status)."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class RatingLimited(RatingError):
    """The user is past RATINGS_PER_MINUTE (feedback/store.py counts every rating write)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("limited", f"Too many ratings: try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class RatingInput(BaseModel):
    """A rating as a user sends it; anything else is refused before Redis is touched."""

    model_config = {"extra": "ignore"}

    value: Literal[0, 1]
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    reasons: list[Reason] = Field(default_factory=list, max_length=len(Reason))

    @field_validator("value", mode="before")
    @classmethod
    def _integer(cls, v: object) -> object:
        # JSON's true and 1.0 would pass as 1: a rating is the integer 0 or 1, nothing else.
        if type(v) is not int:
            raise ValueError("value must be the integer 0 or 1")
        return v

    @field_validator("reasons")
    @classmethod
    def _unique(cls, v: list[Reason]) -> list[Reason]:
        return list(dict.fromkeys(v))


RATE_SCRIPT = lua("rate")
# Its SHA1 (of its UTF-8 bytes), as redis-py's Script object computes it for a client's default encoding.
RATE_SHA = hashlib.sha1(RATE_SCRIPT.encode()).hexdigest()

_SCRIPTS: WeakKeyDictionary[Redis, dict[str, AsyncScript]] = WeakKeyDictionary()


def _script(r: Redis, source: str) -> AsyncScript:
    """The script registered on this client: called by its SHA (EVALSHA), not resent each time."""
    per_client = _SCRIPTS.setdefault(r, {})
    if source not in per_client:
        per_client[source] = r.register_script(source)
    return per_client[source]


_REFUSALS: dict[str, tuple[Refusal, str]] = {
    "not_found": ("not_found", "No answer with this id in this thread."),
    "forbidden": ("forbidden", "You can only rate answers in your own threads."),
}


async def apply(
    r: Redis,
    *,
    op_id: str,
    user: str,
    thread_id: str,
    exchange_id: str,
    rating: RatingInput | None,
    ts: float | None = None,
    wait: ReplicaWait | None = None,
) -> str:
    """Rate (or un-rate, rating=None) an exchange. Returns the event id ('' when nothing changed).

    With `wait` (REDIS_WAIT_REPLICAS), returns once that many replicas have the write, or after
    its timeout: then the rating is saved on the master all the same, and a warning says it is
    not yet replicated (feedback/replication.py).

    Raises RatingError when the exchange is unknown, in another thread, or someone else's.
    """
    keys_, args = rate_call(op_id=op_id, user=user, thread_id=thread_id, exchange_id=exchange_id, rating=rating, ts=ts)
    if wait is None:
        outcome, event_id = await _evalsha(r, keys_, args)
    else:
        (outcome, event_id), acked = await run_script(r, _script(r, RATE_SCRIPT), keys_, args, wait)
        if outcome == "duplicate":
            acked = 0  # applied by an earlier attempt (a retry after a lost reply, a replayed spool line): this WAIT proves nothing about it
        if outcome not in _REFUSALS:
            warn_if_short(wait, acked, f"rating op {op_id} of exchange {exchange_id}")
    if outcome in _REFUSALS:
        raise RatingError(*_REFUSALS[outcome])
    return str(event_id)


async def _evalsha(r: Redis, keys_: Sequence[str], args: Sequence[str | int]) -> Any:
    """RATE_SCRIPT by its SHA; loaded once more where the server does not know it (restarted,
    flushed, another node), as redis-py's Script object does."""
    try:
        return await _execute(r, ("EVALSHA", RATE_SHA, len(keys_), *keys_, *args))
    except NoScriptError:
        sha = await r.script_load(RATE_SCRIPT)
        return await _execute(r, ("EVALSHA", sha, len(keys_), *keys_, *args))


async def _execute(r: Redis, command: tuple[str | int, ...]) -> Any:
    """`r.execute_command(*command)` with less work per call, for every click's path.

    On one Redis (`redis.asyncio.Redis`, pooled), what its execute_command does for a command
    without a reply callback, as EVALSHA is: a connection from the pool, the command sent and its
    reply read under the connection's retry policy (a connection error or timeout disconnects
    and tries again, the last one propagates: the store's outage), the connection back to the
    pool. Less its metrics hooks, and packed by hiredis in one call where the client encodes as
    hiredis does (UTF-8, strict): redis-py's packer looks at and encodes the 17 arguments one by
    one in Python, which cost more than all the rest of this function. A cluster (or any other
    client) goes through its own execute_command.
    """
    if type(r) is not Redis or r.single_connection_client:
        return await r.execute_command(*command)
    pool = r.connection_pool
    options = pool.connection_kwargs
    packed = None
    if _pack is not None and options.get("encoding", "utf-8") == "utf-8" and options.get("encoding_errors", "strict") == "strict":
        packed = [_pack(command)]  # before taking a connection: an argument that cannot be encoded fails here
    conn = await pool.get_connection()
    try:
        sent = packed if packed is not None else conn.pack_command(*command)

        async def send_read() -> Any:
            await conn.send_packed_command(sent)
            return await conn.read_response()

        async def failed(_error: Exception) -> None:
            await conn.disconnect()

        return await conn.retry.call_with_retry(send_read, failed)
    finally:
        await pool.release(conn)


# Keys and arguments that are the same on every call, and the reasons as JSON (what json.dumps
# writes for the list: `["wrong", "too_long"]`), built once.
# Per bucket: the event stream, approval counts and review queue of a thread's bucket.
_BUCKET_KEYS = [(keys.events(b), keys.approval_counts(b), keys.review_queue(b)) for b in range(keys.BUCKETS)]
_REASON_JSON = {reason: json.dumps(reason.value) for reason in Reason}


def _reasons_json(reasons: list[Reason]) -> str:
    """The reasons as stored (keys.rating's "reasons"): json.dumps of their values, faster."""
    return "[" + ", ".join([_REASON_JSON[x] for x in reasons]) + "]" if reasons else "[]"


def rate_call(
    *, op_id: str, user: str, thread_id: str, exchange_id: str, rating: RatingInput | None, ts: float | None = None
) -> tuple[list[str], list[str | int]]:
    """(keys, args) of RATE_SCRIPT: what `apply` runs (and bulk seeding pipelines)."""
    events, approval, review = _BUCKET_KEYS[keys.bucket(thread_id)]
    keys_ = [
        keys.exchange(thread_id, exchange_id),
        keys.rating(thread_id, exchange_id),
        keys.thread_ratings(thread_id),
        events,
        keys.applied_op(thread_id, op_id),
        approval,
        review,
    ]
    if rating is None:
        value = comment = reasons = ""
    else:
        value, comment, reasons = str(rating.value), rating.comment or "", _reasons_json(rating.reasons)
    return keys_, [OP_TTL_S, user, thread_id, value, comment, reasons, f"{ts or time.time():.6f}", exchange_id]


class StoredRating(TypedDict):
    """A rating as `get` returns it (the hash keys.rating documents, decoded)."""

    value: int
    comment: str
    reasons: list[str]
    user: str
    updated_at: str


async def get(r: Redis, thread_id: str, exchange_id: str) -> StoredRating | None:
    """The current rating of an exchange: value, comment, reasons, user, updated_at."""
    return from_hash(cast(dict[str, str], await r.hgetall(keys.rating(thread_id, exchange_id))))


async def thread_of(r: Redis, user: str, exchange_id: str) -> str | None:
    """The thread of one of `user`'s answers, from its id alone (an un-rate sends no thread):
    looked up in the user's own threads, newest first, in one round trip (a rated answer is in
    its thread's rating index, any answer in its answer index). None when none of theirs has it."""
    if not keys.valid_id(exchange_id):
        return None
    thread_ids = cast(list[str], await r.zrevrange(keys.user_threads(user), 0, -1))
    async with r.pipeline(transaction=False) as pipe:
        for tid in thread_ids:
            pipe.hexists(keys.thread_ratings(tid), exchange_id)
            pipe.zscore(keys.thread_exchanges(tid), exchange_id)
        replies = await pipe.execute()
    return next((tid for tid, rated, score in zip(thread_ids, replies[::2], replies[1::2], strict=True) if rated or score is not None), None)


def rated_sync(r: sync_redis.Redis, batch: int = 5000) -> Iterator[list[tuple[str, str, str]]]:
    """Every rated answer, as (thread id, exchange id, value), from the threads' rating indexes
    (SCAN: every master of a cluster), about `batch` at a time. `r` decodes responses."""
    threads: list[str] = []

    def read() -> list[tuple[str, str, str]]:
        pipe = r.pipeline(transaction=False)
        for tid in threads:
            pipe.hgetall(keys.thread_ratings(tid))
        found = [(tid, e, v) for tid, index in zip(threads, pipe.execute(), strict=True) for e, v in index.items()]
        threads.clear()
        return found

    for key in r.scan_iter(match=keys.thread_ratings(keys.ANY), count=batch):
        thread_id = keys.thread_in(cast(str, key))
        if thread_id is not None:
            threads.append(thread_id)
        if len(threads) >= batch // 4:
            yield read()
    if threads:
        yield read()


def from_hash(data: dict[str, str]) -> StoredRating | None:
    """A rating hash (keys.rating) decoded; None for an empty one (unrated)."""
    if not data:
        return None
    return StoredRating(
        value=int(data["value"]), comment=data.get("comment", ""), reasons=json.loads(data.get("reasons") or "[]"),
        user=data.get("user", ""), updated_at=data.get("updated_at", ""),
    )
