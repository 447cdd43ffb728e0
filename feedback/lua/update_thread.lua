-- The data layer: update a thread's fields only if it exists (ARGV: field, value pairs); returns
-- its owner (the caller moves it up the owner's thread list: another slot), false when missing.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], unpack(ARGV))
return redis.call('HGET', KEYS[1], 'userId')
