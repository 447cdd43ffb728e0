"""An exchange: one assistant answer with everything needed to learn from it later."""

from __future__ import annotations

import json
import time
import uuid

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from feedback import keys


class PromptMessage(BaseModel):
    """One message exactly as sent to the model."""

    role: str
    content: str


class Exchange(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    thread_id: str
    user: str
    # The run step Chainlit's feedback points at, and the answer message it produced.
    step_id: str | None = None
    message_id: str | None = None
    messages: list[PromptMessage]
    completion: str
    prompt_id: str
    prompt_version: str
    model: str
    created_at: float = Field(default_factory=time.time)
    latency_ms: float | None = None
    first_token_ms: float | None = None
    error: str | None = None

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump(exclude_none=True)
        data["messages"] = json.dumps(data["messages"], ensure_ascii=False)
        return {k: str(v) for k, v in data.items()}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Exchange:
        fields = dict(data)
        fields["messages"] = json.loads(fields["messages"])
        return cls.model_validate(fields)


async def save(r: Redis, exchange: Exchange) -> None:
    """Store the exchange and index it under its thread, atomically."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.hset(keys.exchange(exchange.id), mapping=exchange.to_hash())
        pipe.rpush(keys.thread_exchanges(exchange.thread_id), exchange.id)
        await pipe.execute()


async def load(r: Redis, exchange_id: str) -> Exchange | None:
    data = await r.hgetall(keys.exchange(exchange_id))
    return Exchange.from_hash(data) if data else None


async def for_thread(r: Redis, thread_id: str) -> list[Exchange]:
    ids = await r.lrange(keys.thread_exchanges(thread_id), 0, -1)
    async with r.pipeline(transaction=False) as pipe:
        for exchange_id in ids:
            pipe.hgetall(keys.exchange(exchange_id))
        rows = await pipe.execute()
    return [Exchange.from_hash(row) for row in rows if row]
