"""The Lua scripts, one file each in feedback/lua/, loaded by name.

A script runs atomically in Redis: the writes that must not be seen half done (an answer with its
indexes, a rating with its event, a step in its owner's thread) and the reads that must not cost
one round trip per key. A first line `-- @include NAME` puts another file (a Lua function) in
front; `{NAME}` placeholders are filled from keyword arguments.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

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
