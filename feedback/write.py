"""The writes the store makes: applied to Redis at once, or spooled as one JSON line each while
Redis is down and applied in order later. The spool line format is defined here and only here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from feedback.exchange import Exchange
from feedback.rating import RatingInput


class SaveExchange(BaseModel):
    """Store an answer with its exact prompt (`feedback.exchange.save`)."""

    op: Literal["exchange"] = "exchange"
    id: str  # op id: the Redis scripts apply each id at most once
    exchange: Exchange


class Rate(BaseModel):
    """Rate or un-rate (rating None) an answer (`feedback.rating.apply`)."""

    op: Literal["rate"] = "rate"
    id: str
    user: str
    thread_id: str
    exchange_id: str
    rating: RatingInput | None
    ts: float  # when the user clicked, even when applied later from the spool


Write = Annotated[SaveExchange | Rate, Field(discriminator="op")]
WRITE: TypeAdapter[SaveExchange | Rate] = TypeAdapter(Write)


def parse(op: object) -> SaveExchange | Rate:
    """A spooled write from its JSON object; pydantic.ValidationError when it is not one."""
    return WRITE.validate_python(op)


def thread_of(writes: list[SaveExchange | Rate], exchange_id: str, user: str) -> str | None:
    """The thread of a spooled answer, else of the user's own spooled rating of it."""
    for w in writes:
        if isinstance(w, SaveExchange) and w.exchange.id == exchange_id:
            return w.exchange.thread_id
    for w in writes:
        if isinstance(w, Rate) and w.exchange_id == exchange_id and w.user == user:
            return w.thread_id
    return None
