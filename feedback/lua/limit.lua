-- A sliding-window log of one subject's hits (keys.limit, a ZSET of hit ids scored by their time
-- in ms): a hit is recorded only while fewer than `limit` were recorded in the last `window` ms,
-- so no span of that length ever holds more. The clock is Redis's own (TIME): every app process
-- counts on one clock. Refused hits are not recorded: a flood does not push its own retry back.
-- Returns -1 when the hit was recorded, else the ms until the oldest recorded hit leaves the window.
local log = KEYS[1]
local limit, window, hit_id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
if redis.call('ZCARD', log) >= limit then
  local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', log, now, hit_id)
redis.call('PEXPIRE', log, window)
return -1
