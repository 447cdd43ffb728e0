-- feedback.prompt.publish: store a prompt version (KEYS[1]: keys.prompt_versions, ARGV: version,
-- spec JSON) unless it exists; a published version never changes, so other content is refused.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 'published' end
if old == ARGV[2] then return 'unchanged' end
return 'conflict'
