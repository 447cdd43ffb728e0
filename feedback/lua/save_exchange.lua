-- @include ensure_thread
-- feedback.exchange.save: the exchange hash (fields: feedback.exchange.Exchange), its thread and
-- alternatives indexes, in one step; a replayed write (same op id, KEYS[4]) changes nothing.
-- The thread is created when missing (an answer replayed after an outage, whose thread Chainlit
-- could not store): every stored answer is in a thread its user can see and delete.
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
-- Only answers of one thread (so one user) share a list: a forged user-message id from another
-- thread must not join someone else's list.
local first = redis.call('LINDEX', KEYS[3], 0)
if not first or redis.call('ZSCORE', KEYS[2], first) then redis.call('RPUSH', KEYS[3], ARGV[2]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
ensure_thread(KEYS[5], KEYS[6], ARGV[5], ARGV[4], ARGV[6], ARGV[3], ARGV[7])
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
return 1
