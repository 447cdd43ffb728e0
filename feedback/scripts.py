"""The Lua scripts, one file each in feedback/lua/, loaded by name.

A script runs atomically in Redis: the writes that must not be seen half done (an answer with its
indexes, a rating with its event, a step in its owner's thread) and the reads that must not cost
one round trip per key. A first line `-- @include NAME` puts another file (a Lua function) in
front; `{NAME}` placeholders are filled from keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_INCLUDE = "-- @include "


@cache
def _file(name: str) -> str:
    return (files("feedback") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def lua(name: str, **fill: str) -> str:
    """The script `name` with its includes in front and its placeholders filled."""
    text = _file(name)
    first = text.split("\n", 1)[0]
    if first.startswith(_INCLUDE):
        text = lua(first[len(_INCLUDE) :].strip()) + text
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return text


async def run_after(r: Redis, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], queue: Callable[[Any], object]) -> Any:
    """The commands `queue` puts on a pipeline, then `script`, in one round trip (on a cluster,
    one per node: the commands may be on other slots than the script); the script's reply. Their
    writes must be harmless whatever the script answers. A server that lost its script cache
    (a restart) has the script loaded, and it runs again."""
    async with r.pipeline(transaction=False) as pipe:
        queue(pipe)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
    reply = replies[-1]
    if isinstance(reply, NoScriptError):
        reply = await script(keys=list(keys), args=list(args))
    for item in (*replies[:-1], reply):
        if isinstance(item, Exception):
            raise item
    return reply
