"""An exchange: one assistant answer with everything needed to learn from it later."""

from __future__ import annotations

import json
import time
from typing import cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from feedback import keys
from feedback.scripts import lua
from feedback.thread import iso

# How long a write's id is remembered, so a spool replay never applies it twice.
OP_TTL_S = 7 * 24 * 3600

SAVE_SCRIPT = lua("save_exchange")  # the exchange with its indexes and thread, once per op id


class PromptMessage(BaseModel):
    """One message exactly as sent to the model (OpenAI roles)."""

    role: str
    content: str


class Exchange(BaseModel):
    # The run step that produced the answer: Chainlit's Feedback.forId points at it.
    id: str
    thread_id: str
    user: str
    message_id: str | None = None
    # The user message answered; regenerated or edited answers share it.
    prompt_message_id: str
    messages: list[PromptMessage]
    completion: str
    prompt_id: str
    prompt_version: str
    model: str
    model_version: str = "base"  # registry version id; "base": the configured model
    experiment: str | None = None  # the prompt experiment this answer's conversation is in
    created_at: float = Field(default_factory=time.time)
    latency_ms: float | None = None
    first_token_ms: float | None = None
    input_tokens: int | None = None  # when the model server reports usage
    output_tokens: int | None = None
    deleted: bool = False

    def to_hash(self) -> dict[str, str]:
        data = self.model_dump(exclude_none=True)
        data["messages"] = json.dumps(data["messages"], ensure_ascii=False)
        data["deleted"] = "1" if self.deleted else "0"
        return {k: str(v) for k, v in data.items()}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Exchange:
        fields: dict[str, object] = dict(data)
        fields["messages"] = json.loads(data["messages"])
        fields["deleted"] = data.get("deleted") == "1"
        return cls.model_validate(fields)


def save_call(exchange: Exchange, op_id: str) -> tuple[list[str], list[str | int | float]]:
    """(keys, args) of SAVE_SCRIPT for this exchange: what `save` runs (and bulk seeding pipelines)."""
    fields = [x for kv in exchange.to_hash().items() for x in kv]
    keys_ = [
        keys.exchange(exchange.id),
        keys.thread_exchanges(exchange.thread_id),
        keys.alternatives(exchange.prompt_message_id),
        keys.applied_op(op_id),
        keys.thread(exchange.thread_id),
        keys.user_threads(exchange.user),
    ]
    created = iso(exchange.created_at)
    question = exchange.messages[-1].content[:200] if exchange.messages else ""
    args: list[str | int | float] = [OP_TTL_S, exchange.id, exchange.created_at, exchange.user, exchange.thread_id, created, question, *fields]
    return keys_, args


async def save(r: Redis, exchange: Exchange, op_id: str) -> bool:
    """Store the exchange with its thread and alternatives indexes, atomically and idempotently.

    Returns False when this op id was already applied (a spool replay).
    """
    keys_, args = save_call(exchange, op_id)
    applied = await r.eval(SAVE_SCRIPT, len(keys_), *keys_, *args)
    return bool(applied)


async def load(r: Redis, exchange_id: str) -> Exchange | None:
    data = cast(dict[str, str], await r.hgetall(keys.exchange(exchange_id)))
    return Exchange.from_hash(data) if data else None


async def for_thread(r: Redis, thread_id: str) -> list[Exchange]:
    ids = cast(list[str], await r.zrange(keys.thread_exchanges(thread_id), 0, -1))
    async with r.pipeline(transaction=False) as pipe:
        for exchange_id in ids:
            pipe.hgetall(keys.exchange(exchange_id))
        rows = await pipe.execute()
    return [Exchange.from_hash(row) for row in rows if row]
