"""Redis connections. Always built here and passed in, never global."""

from __future__ import annotations

import redis
from redis.asyncio import Redis


def connect(url: str, timeout_s: float = 2.0) -> Redis:
    """An asyncio client with short timeouts: a Redis outage must not hang a chat."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


def connect_sync(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A blocking client, for the retraining job and the CLI."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
