-- ensure_thread(key, user_threads, thread_id, user, iso, score, name): the thread record
-- (keys.thread) created when missing; returns its owner. A function: included by the scripts that
-- may be first to write into a thread (an answer replayed from the spool, a step Chainlit wrote
-- before its thread).
local function ensure_thread(key, user_threads, thread_id, user, iso, score, name)
  local owner = redis.call('HGET', key, 'userId')
  if owner then return owner end
  redis.call('HSET', key, 'id', thread_id, 'userId', user, 'userIdentifier', user,
             'createdAt', iso, 'updatedAt', iso)
  if name ~= '' then redis.call('HSET', key, 'name', name) end
  redis.call('ZADD', user_threads, score, thread_id)
  return user
end
