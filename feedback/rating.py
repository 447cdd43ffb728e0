"""Ratings: thumbs up/down with a comment and reasons; the last click wins.

Each change is one Lua script: it checks that the exchange exists in the claimed thread and
belongs to the caller, writes (or removes) the rating, appends an event to the stream the
retraining job reads and moves the answer's count in the console's approval counts and review
queue (feedback/stats.py), all atomically, in one round trip, and at most once per op id.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Literal, TypedDict, cast
from weakref import WeakKeyDictionary

from pydantic import BaseModel, Field, field_validator
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from feedback import keys
from feedback.errors import InvalidInput
from feedback.exchange import OP_TTL_S
from feedback.replication import ReplicaWait, run_script, warn_if_short
from feedback.scripts import lua

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


Refusal = Literal["not_found", "forbidden", "unauthenticated"]


class RatingError(InvalidInput):
    """A rating was refused; `kind` says why (the HTTP routes map it to a status)."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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
        outcome, event_id = await _script(r, RATE_SCRIPT)(keys=keys_, args=args)
    else:
        (outcome, event_id), acked = await run_script(r, _script(r, RATE_SCRIPT), keys_, args, wait)
        if outcome == "duplicate":
            acked = 0  # applied by an earlier attempt (a retry after a lost reply, a replayed spool line): this WAIT proves nothing about it
        if outcome not in _REFUSALS:
            warn_if_short(wait, acked, f"rating op {op_id} of exchange {exchange_id}")
    if outcome in _REFUSALS:
        raise RatingError(*_REFUSALS[outcome])
    return str(event_id)


def rate_call(
    *, op_id: str, user: str, thread_id: str, exchange_id: str, rating: RatingInput | None, ts: float | None = None
) -> tuple[list[str], list[str | int]]:
    """(keys, args) of RATE_SCRIPT: what `apply` runs (and bulk seeding pipelines)."""
    keys_ = [
        keys.exchange(exchange_id),
        keys.rating(exchange_id),
        keys.thread_ratings(thread_id),
        keys.events(),
        keys.applied_op(op_id),
        keys.approval_counts(),
        keys.review_queue(),
    ]
    args: list[str | int] = [
        OP_TTL_S,
        user,
        thread_id,
        "" if rating is None else str(rating.value),
        "" if rating is None else rating.comment or "",
        "" if rating is None else json.dumps([r.value for r in rating.reasons]),
        f"{ts or time.time():.6f}",
        exchange_id,
    ]
    return keys_, args


class StoredRating(TypedDict):
    """A rating as `get` returns it (the hash keys.rating documents, decoded)."""

    value: int
    comment: str
    reasons: list[str]
    user: str
    updated_at: str


async def get(r: Redis, exchange_id: str) -> StoredRating | None:
    """The current rating of an exchange: value, comment, reasons, user, updated_at."""
    return from_hash(cast(dict[str, str], await r.hgetall(keys.rating(exchange_id))))


def from_hash(data: dict[str, str]) -> StoredRating | None:
    """A rating hash (keys.rating) decoded; None for an empty one (unrated)."""
    if not data:
        return None
    return StoredRating(
        value=int(data["value"]), comment=data.get("comment", ""), reasons=json.loads(data.get("reasons") or "[]"),
        user=data.get("user", ""), updated_at=data.get("updated_at", ""),
    )
