-- approval_cell(created_at, prompt_version, model_version), approval_change(counts, queue, cell,
-- id, old, new, ts): keep keys.approval_counts and keys.review_queue equal to the current ratings
-- when one rating goes from `old` to `new` ('0', '1', or false: none). Included by the scripts
-- that change ratings (rate, thread deletion); feedback/stats.py computes the same cells.
local function approval_cell(created_at, prompt_version, model_version)
  local hour = math.floor((tonumber(created_at) or 0) / 3600) * 3600
  return string.format('%d', hour) .. '|' .. (prompt_version or '') .. '|' .. (model_version or 'base') .. '|'
end

local function approval_change(counts, queue, cell, id, old, new, ts)
  if old ~= new then
    if old and redis.call('HINCRBY', counts, cell .. old, -1) <= 0 then redis.call('HDEL', counts, cell .. old) end
    if new then redis.call('HINCRBY', counts, cell .. new, 1) end
  end
  -- Scored by the current rating's time: a thumbs down re-rated (a new comment) moves up.
  if new == '0' then redis.call('ZADD', queue, ts, id) else redis.call('ZREM', queue, id) end
end
