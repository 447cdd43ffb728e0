-- @include ensure_thread
-- The data layer: a step written into its own user's thread only; a step never moves threads.
-- KEYS: the thread, the step, the thread's steps, the thread's favorites. 'created' when the
-- thread was created here (the caller lists it for its user: another slot), else 'ok'.
local owner, created = ensure_thread(KEYS[1], ARGV[2], ARGV[1], ARGV[7], '')
if owner ~= ARGV[1] then return 'the thread belongs to another user' end
local thread = redis.call('HGET', KEYS[2], 'threadId')
if thread and thread ~= ARGV[2] then return 'the step belongs to another thread' end
redis.call('HSET', KEYS[2], 'data', ARGV[4], 'threadId', ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[3])
if ARGV[8] == '1' then redis.call('SADD', KEYS[4], ARGV[3]) else redis.call('SREM', KEYS[4], ARGV[3]) end
return created and 'created' or 'ok'
