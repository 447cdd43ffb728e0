-- training.collect: ARGV: SCAN cursor, MATCH pattern (keys.thread_ratings(keys.ANY)), COUNT,
-- SCAN calls at most. The rated exchange ids (HKEYS) of the thread rating indexes that these SCAN
-- pages list, then the next cursor ("0": done). Read-only.
local cursor, out = ARGV[1], {}
for _ = 1, tonumber(ARGV[4]) do
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', ARGV[3])
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    for _, id in ipairs(redis.call('HKEYS', key)) do out[#out + 1] = id end
  end
  if cursor == '0' then break end
end
out[#out + 1] = cursor
return out
