-- The data layer: update a thread's fields only if it exists (ARGV[1]: its new score in the
-- user's thread index; then field, value pairs).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], ARGV[1], redis.call('HGET', KEYS[1], 'id'))
return 1
