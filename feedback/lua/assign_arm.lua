-- feedback.experiment.assign: the arm of a conversation, chosen once. KEYS: keys.experiment,
-- keys.experiment_assignments; ARGV: thread id, a number in [0, 1) for the adaptive policy. Fixed
-- policy: round robin over the record's arms (exactly balanced); adaptive: the arm whose cumulative
-- weight (the record's 'weights', JSON) passes the number. A thread assigned before keeps its arm;
-- an experiment no longer running assigns nothing ('').
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return '' end
local arm = redis.call('HGET', KEYS[2], ARGV[1])
if arm then return arm end
local arms = cjson.decode(redis.call('HGET', KEYS[1], 'arms'))
local n = #arms
local chosen = arms[1]
if redis.call('HGET', KEYS[1], 'policy') == 'adaptive' then
  local weights = cjson.decode(redis.call('HGET', KEYS[1], 'weights') or '{}')
  local u, acc = tonumber(ARGV[2]), 0
  for i = 1, n do
    acc = acc + (tonumber(weights[arms[i]]) or (1 / n))
    chosen = arms[i]
    if u < acc then break end
  end
else
  local k = redis.call('HINCRBY', KEYS[1], 'assigned', 1)
  chosen = arms[((k - 1) % n) + 1]
end
redis.call('HSET', KEYS[2], ARGV[1], chosen)
return chosen
