-- @include ensure_thread
-- feedback.exchange.save: the exchange hash (fields: feedback.exchange.Exchange.to_hash) and its
-- thread index, in one step; a replayed write (same op id, KEYS[3]) changes nothing. The thread
-- is created when missing (an answer replayed after an outage, whose thread Chainlit could not
-- store): every stored answer is in a thread its user can see and delete (the caller lists it
-- for the user: another slot). KEYS[4]: the thread.
-- KEYS[5..]: the earlier answers the stored prompt refers to: all must be stored, in this thread,
-- else -1 and nothing is written (the caller stores the prompt literally). ARGV[8] > 0: unrated
-- answers expire that many seconds after their thread's latest answer (every unrated answer of
-- the thread gets the new lifetime: a later prompt may refer to any of them).
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
for i = 5, #KEYS do
  if redis.call('HGET', KEYS[i], 'thread_id') ~= ARGV[5] then return -1 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
local ttl = tonumber(ARGV[8])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  -- A kept (rated) answer has no expiry (TTL -1) and stays so. (Not EXPIRE GT: the embedded
  -- Redis predates 7.0.)
  local base = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[2])
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local key = base .. id
    local left = redis.call('TTL', key)
    if left >= 0 then redis.call('EXPIRE', key, ttl) elseif left == -2 then redis.call('ZREM', KEYS[2], id) end
  end
end
ensure_thread(KEYS[4], ARGV[5], ARGV[4], ARGV[6], ARGV[7])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
return 1
