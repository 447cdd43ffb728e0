"""The thread record shared by the Lua scripts that may be first to write into a thread.

Chainlit creates threads through the data layer, but an answer replayed from the spool, or a
step whose thread Chainlit hasn't stored yet, must still land in a thread its user owns: these
scripts create the record when it is missing, in the format `keys.thread` documents.
"""

from __future__ import annotations

from datetime import UTC, datetime

# A Lua function: prepend to a script, then call ensure_thread(...).
ENSURE_THREAD_LUA = """
local function ensure_thread(key, user_threads, thread_id, user, iso, score, name)
  local owner = redis.call('HGET', key, 'userId')
  if owner then return owner end
  redis.call('HSET', key, 'id', thread_id, 'userId', user, 'userIdentifier', user,
             'createdAt', iso, 'updatedAt', iso)
  if name ~= '' then redis.call('HSET', key, 'name', name) end
  redis.call('ZADD', user_threads, score, thread_id)
  return user
end
"""


def iso(ts: float) -> str:
    """Chainlit's timestamp format."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
