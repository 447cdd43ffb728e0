-- @include approval
-- feedback.rating.apply: check that the exchange is in the claimed thread and the caller's, write
-- or remove the rating (fields: feedback.rating.StoredRating), append the rating event (fields:
-- feedback.event.RatingEvent) and keep the approval counts (KEYS[6]) and the review queue
-- (KEYS[7]) in step, at most once per op id (KEYS[5]).
if redis.call('EXISTS', KEYS[5]) == 1 then return {'duplicate', ''} end
local ex = redis.call('HMGET', KEYS[1], 'user', 'thread_id', 'created_at', 'prompt_version', 'model_version')
if not ex[1] or ex[2] ~= ARGV[3] then return {'not_found', ''} end
if ex[1] ~= ARGV[2] then return {'forbidden', ''} end
local old = redis.call('HGET', KEYS[2], 'value')
local cell = approval_cell(ex[3], ex[4], ex[5])
local id
if ARGV[4] == '' then
  if not old then
    redis.call('SET', KEYS[5], '1', 'EX', ARGV[1])
    return {'unchanged', ''}
  end
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[3], ARGV[8])
  approval_change(KEYS[6], KEYS[7], cell, ARGV[8], old, false, ARGV[7])
  id = redis.call('XADD', KEYS[4], '*', 'action', 'unrate', 'exchange', ARGV[8], 'thread', ARGV[3],
                  'user', ARGV[2], 'ts', ARGV[7])
else
  -- A rated answer is kept (unrated ones may expire), with the earlier answers its prompt refers
  -- to, and theirs (its thread's: this slot), so it and they can always be rebuilt. Only the
  -- first rating does the work: what is kept already had it done.
  local base = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[8])
  local todo = {KEYS[1]}
  while #todo > 0 do
    local key = table.remove(todo)
    if redis.call('PERSIST', key) == 1 then
      local history = redis.call('HGET', key, 'history')
      if history then
        for _, item in ipairs(cjson.decode(history)) do
          if type(item) == 'string' then todo[#todo + 1] = base .. item end
        end
      end
    end
  end
  redis.call('HSET', KEYS[2], 'value', ARGV[4], 'comment', ARGV[5], 'reasons', ARGV[6],
             'user', ARGV[2], 'updated_at', ARGV[7])
  redis.call('HSET', KEYS[3], ARGV[8], ARGV[4])
  approval_change(KEYS[6], KEYS[7], cell, ARGV[8], old, ARGV[4], ARGV[7])
  id = redis.call('XADD', KEYS[4], '*', 'action', 'rate', 'exchange', ARGV[8], 'thread', ARGV[3],
                  'user', ARGV[2], 'value', ARGV[4], 'ts', ARGV[7])
end
redis.call('SET', KEYS[5], '1', 'EX', ARGV[1])
return {'ok', id}
