-- feedback.audit.record: an audit entry and its index members, at once. KEYS: keys.audit (the
-- stream), then the index keys it belongs to (keys.audit_target, keys.audit_kind: sorted sets);
-- ARGV: field, value, ... of the entry; the last ARGV: the digits its id's sequence is padded to.
-- Each index gets the member "<ms>-<padded sequence>" (members of one ms sort by their sequence)
-- scored by the ms. Returns the entry id.
local pad = tonumber(ARGV[#ARGV])
local fields = {}
for i = 1, #ARGV - 1 do fields[i] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
local ms, seq = string.match(id, '^(%d+)-(%d+)$')
local member = ms .. '-' .. string.rep('0', pad - #seq) .. seq
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], tonumber(ms), member)
end
return id
