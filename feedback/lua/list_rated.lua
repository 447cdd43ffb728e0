-- training.collect: ARGV: SCAN cursor, MATCH pattern (keys.thread_ratings(keys.ANY)), COUNT,
-- SCAN calls at most. The rated answers of the thread rating indexes that these SCAN pages list,
-- as pairs: thread id (from the key: "<tag>:thread:<id>:ratings"), exchange id (HKEYS); then the
-- next cursor ("0": done). Read-only. On a cluster, it lists the keys of the master it runs on.
local cursor, out = ARGV[1], {}
for _ = 1, tonumber(ARGV[4]) do
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', ARGV[3])
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local thread = string.match(key, ':thread:([^:]+):ratings$')
    if thread then
      for _, id in ipairs(redis.call('HKEYS', key)) do
        out[#out + 1] = thread
        out[#out + 1] = id
      end
    end
  end
  if cursor == '0' then break end
end
out[#out + 1] = cursor
return out
