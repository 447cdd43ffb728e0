-- ensure_thread(key, thread_id, user, iso, name): the thread record (keys.thread) created when
-- missing; returns its owner, and whether it was created here. A function: included by the
-- scripts that may be first to write into a thread (an answer replayed from the spool, a step
-- Chainlit wrote before its thread). The user's thread list is on the user's slot: the callers
-- write it beside the script.
local function ensure_thread(key, thread_id, user, iso, name)
  local owner = redis.call('HGET', key, 'userId')
  if owner then return owner, false end
  redis.call('HSET', key, 'id', thread_id, 'userId', user, 'userIdentifier', user,
             'createdAt', iso, 'updatedAt', iso)
  if name ~= '' then redis.call('HSET', key, 'name', name) end
  return user, true
end
