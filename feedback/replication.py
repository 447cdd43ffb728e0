"""Waiting for replicas after a write (REDIS_WAIT_REPLICAS), on the connection that wrote it.

Redis answers a write before its replicas have it: a master that dies right after takes the
writes its replica had not received with it, though the clients were told they were saved.
`WAIT numreplicas timeout_ms` blocks until that many replicas acknowledged every write made *on
the connection that sends it*, so it proves something only right after the write, on the same
connection:

- one Redis (`redis.asyncio.Redis`): the script and WAIT go in one pipeline without MULTI (WAIT
  inside MULTI/EXEC never blocks), and a pipeline sends all its commands on the one connection it
  takes from the pool;
- a Redis Cluster (`redis.asyncio.cluster.RedisCluster`): the client's own `wait()` sends a keyless
  WAIT to every master on connections of their own and sums the answers, which proves nothing.
  Here the script and WAIT are sent as one batch to the master that serves the written key's slot,
  on one connection of that node (`ClusterNode.execute_pipeline`). Not the cluster pipeline: its
  retry routes a WAIT again by WAIT's own policy (every master, summed).

What a shortfall means: the write happened on the master and cannot be taken back, so it stays
saved and is reported saved; the caller logs a warning (`warn_if_short`) that it is not yet on
enough replicas. It is "not confirmed" (0 replicas counted) also where the write went through the
cluster client's own retry path (a redirect, a node that did not answer: that path follows the
cluster through a failover as it would without the setting, but cannot wait on its connection).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from feedback.settings import Settings

log = logging.getLogger(__name__)

# What the master of the slot answers when it is no longer the one (or no longer answers): the
# cluster client's own path redirects, refreshes its view of the cluster and retries.
_NOT_THE_MASTER = (MovedError, AskError, TryAgainError, ClusterDownError, ReadOnlyError, RedisConnectionError, RedisTimeoutError)


@dataclass(frozen=True)
class ReplicaWait:
    """How many replicas must acknowledge a write, and for how long to wait for them."""

    replicas: int
    timeout_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaWait | None:
        """REDIS_WAIT_REPLICAS and REDIS_WAIT_TIMEOUT_MS; None when no wait is asked for (0)."""
        if settings.redis_wait_replicas == 0:
            return None
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)


async def run_script(r: Redis, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int], wait: ReplicaWait) -> tuple[Any, int]:
    """Run `script` (EVALSHA), then WAIT on the connection that ran it.

    Returns the script's reply and how many replicas acknowledged the write within the timeout
    (0 where the write went through the cluster client's retry path: not confirmed). Errors of the
    script itself propagate, as they do from `script(keys, args)`.
    """
    if isinstance(r, RedisCluster):
        return await _on_slot_master(r, script, keys, args, wait)
    return await _in_pipeline(r, script, keys, args, wait)


def warn_if_short(wait: ReplicaWait, acked: int, what: str) -> bool:
    """Log a warning when fewer than `wait.replicas` replicas acknowledged `what`; True then."""
    if acked >= wait.replicas:
        return False
    log.warning(
        "%s is saved on the master but not yet replicated: %d of %d replicas acknowledged it within %d ms (REDIS_WAIT_REPLICAS)",
        what, acked, wait.replicas, wait.timeout_ms,
    )  # fmt: skip
    return True


async def _in_pipeline(r: Redis, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int], wait: ReplicaWait) -> tuple[Any, int]:
    """One Redis: EVALSHA and WAIT in one pipeline (one connection of the pool, no MULTI)."""
    for attempt in range(2):
        async with r.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.wait(wait.replicas, wait.timeout_ms)
            reply, acks = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError) and attempt == 0:
            script.sha = await r.script_load(script.script)  # a restarted or flushed server: load it and run again
            continue
        if isinstance(reply, Exception):
            raise reply
        return reply, _count(acks)
    raise AssertionError("unreachable")


async def _on_slot_master(r: RedisCluster, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int], wait: ReplicaWait) -> tuple[Any, int]:
    """A cluster: EVALSHA and WAIT as one batch on one connection of the master of the keys' slot."""
    for attempt in range(2):
        await r.initialize()  # runs a refresh of the slot map that an earlier error asked for, else returns at once
        try:
            node: ClusterNode | None = r.get_node_from_key(keys[0])
        except SlotNotCoveredError:
            node = None
        if node is None:
            break
        batch = [PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args), PipelineCommand(1, "WAIT", wait.replicas, wait.timeout_ms)]
        try:
            await node.execute_pipeline(batch)  # acquires one connection, sends both, reads both
        except _NOT_THE_MASTER as exc:
            log.info("write: %s did not answer (%s): through the cluster client's retry path, replication not confirmed", node.name, exc)
            break
        reply, acks = batch[0].result, batch[1].result
        if isinstance(reply, NoScriptError) and attempt == 0:
            script.sha = await r.script_load(script.script)
            continue
        if isinstance(reply, _NOT_THE_MASTER):
            log.info("write: %s answered %s: through the cluster client's retry path, replication not confirmed", node.name, type(reply).__name__)
            break
        if isinstance(reply, Exception):
            raise reply
        return reply, _count(acks)
    # The client's own path: it follows redirects and failovers (and an op id makes a write that
    # had already happened a duplicate), but its connection is not one this function can WAIT on.
    return await script(keys=keys, args=args), 0


def _count(acks: object) -> int:
    """WAIT's reply; a WAIT that failed (its connection timed out) confirmed nothing."""
    return int(acks) if isinstance(acks, int) else 0
