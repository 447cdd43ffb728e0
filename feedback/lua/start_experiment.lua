-- feedback.experiment.start: one experiment per prompt at a time. KEYS: keys.prompt_experiment,
-- keys.experiment, keys.prompt_experiments; ARGV: the experiment id, its start time, then its
-- fields (field, value pairs). Returns the id of the experiment already running, or '' when this
-- one started.
local running = redis.call('GET', KEYS[1])
if running then return running end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return ''
