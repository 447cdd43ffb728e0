-- feedback.compaction: an answer stored with its prompt's messages literally (KEYS[1]) rewritten
-- in the compact form (fields: feedback.exchange.prompt_fields, ARGV[2..]), only if those
-- messages are still the ones that were read (their SHA-1: ARGV[1]); 1 when rewritten.
local old = redis.call('HGET', KEYS[1], 'messages')
if not old or redis.sha1hex(old) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'messages')
if redis.call('HGET', KEYS[1], 'deleted') == '0' then redis.call('HDEL', KEYS[1], 'deleted') end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
