"""The model registry: which model is in service.

The bot asks for the active model on every request, so a promotion takes effect on the next
message without a restart.
"""

from __future__ import annotations

from redis.asyncio import Redis

from feedback import keys


async def active_model(r: Redis) -> str | None:
    """The promoted model, or None when nothing was promoted (use the configured model)."""
    return await r.get(keys.active_model())


async def set_active_model(r: Redis, model: str) -> None:
    await r.set(keys.active_model(), model)
