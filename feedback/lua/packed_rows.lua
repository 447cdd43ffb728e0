-- training.collect: KEYS: exchange key, rating key, for each row (keys.exchange, keys.rating: one
-- hash slot). One reply string per row: "" when the exchange or its rating is gone (the first field
-- of either is missing, as the HMGET path checks), else a mask of "1"/"0" (field present or not)
-- and the fields, all joined by NUL. Read-only: it never changes data. The loader fills in the
-- field lists (the EXCHANGE_FIELDS and RATING_FIELDS placeholders, in training.collect's order).
local ef = { {EXCHANGE_FIELDS} }
local rf = { {RATING_FIELDS} }
local ne, nr = #ef, #rf
local out = {}
for i = 1, #KEYS, 2 do
  local row = ''
  local ex = redis.call('HMGET', KEYS[i], unpack(ef))
  if ex[1] then
    local rt = redis.call('HMGET', KEYS[i + 1], unpack(rf))
    if rt[1] then
      local parts, mask = {''}, {}
      for j = 1, ne do
        local v = ex[j]
        if v then mask[j] = '1'; parts[j + 1] = v else mask[j] = '0'; parts[j + 1] = '' end
      end
      for j = 1, nr do
        local v = rt[j]
        if v then mask[ne + j] = '1'; parts[ne + j + 1] = v else mask[ne + j] = '0'; parts[ne + j + 1] = '' end
      end
      parts[1] = table.concat(mask)
      row = table.concat(parts, '\0')
    end
  end
  out[#out + 1] = row
end
return out
