"""Redis connections. Always built here and passed in, never global.

With REDIS_CLUSTER the clients are redis-py's cluster clients: they find the nodes from the URL's
one node, route each command by its key's slot and follow the cluster through failovers. Every key
shares the hash tag {fb} (feedback/keys.py), so scripts and transactions touch one slot there.
"""

from __future__ import annotations

from typing import cast

import redis
from redis.asyncio import Redis


def connect(url: str, timeout_s: float = 2.0, cluster: bool = False) -> Redis:
    """An asyncio client with short timeouts: a Redis outage must not hang a chat."""
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        # Typed as Redis: the calls the product makes (commands, scripts, pipelines, streams) are
        # the same on both, so callers keep one code path.
        return cast(Redis, RedisCluster.from_url(url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s))
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


def connect_sync(url: str, timeout_s: float = 5.0, cluster: bool = False) -> redis.Redis:
    """A blocking client, for the retraining job and the CLI."""
    if cluster:
        from redis.cluster import RedisCluster

        return cast(redis.Redis, RedisCluster.from_url(url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s))
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
