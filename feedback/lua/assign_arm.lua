-- feedback.experiment.assign: the arm of a conversation, chosen once. KEYS: keys.experiment,
-- keys.experiment_assignments; ARGV: thread id, then the arms in order, then a number in [0, 1)
-- for the adaptive policy. Fixed policy: round robin over the arms (exactly balanced); adaptive:
-- the arm whose cumulative weight (the record's 'weights', JSON) passes the number. A thread
-- assigned before keeps its arm; an experiment no longer running assigns nothing ('').
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return '' end
local arm = redis.call('HGET', KEYS[2], ARGV[1])
if arm then return arm end
local n = #ARGV - 2
local policy = redis.call('HGET', KEYS[1], 'policy')
local chosen = ARGV[2]
if policy == 'adaptive' then
  local weights = cjson.decode(redis.call('HGET', KEYS[1], 'weights') or '{}')
  local u, acc = tonumber(ARGV[n + 2]), 0
  for i = 1, n do
    acc = acc + (tonumber(weights[ARGV[i + 1]]) or (1 / n))
    chosen = ARGV[i + 1]
    if u < acc then break end
  end
else
  local k = redis.call('HINCRBY', KEYS[1], 'assigned', 1)
  chosen = ARGV[((k - 1) % n) + 2]
end
redis.call('HSET', KEYS[2], ARGV[1], chosen)
return chosen
