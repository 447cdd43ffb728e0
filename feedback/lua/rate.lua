-- @include approval
-- feedback.rating.apply: check that the exchange is in the claimed thread and the caller's, write
-- or remove the rating (fields: feedback.rating.StoredRating), append the rating event (fields:
-- feedback.event.RatingEvent; 'prev' is the value before it, '' for unrated) and keep the approval counts (KEYS[6]) and the review queue
-- (KEYS[7]) in step, at most once per op id (KEYS[5]: marked last, so a write that fails half
-- way, WRONGTYPE say, is not taken for done when it is retried).
-- Every click runs it (bench/ratings.py): each redis.call costs more than its command, so none is
-- made that the outcome does not need.
local call = redis.call
if call('EXISTS', KEYS[5]) == 1 then return {'duplicate', ''} end
local ex = call('HMGET', KEYS[1], 'user', 'thread_id', 'created_at', 'prompt_version', 'model_version')
if not ex[1] or ex[2] ~= ARGV[3] then return {'not_found', ''} end
if ex[1] ~= ARGV[2] then return {'forbidden', ''} end
local old = call('HGET', KEYS[2], 'value')
local new = ARGV[4] ~= '' and ARGV[4] -- false: un-rate
local cell = old ~= new and approval_cell(ex[3], ex[4], ex[5]) -- used only when the counts move
local member = ARGV[3] .. '/' .. ARGV[8] -- in the review queue (keys.review_member)
local id
if not new then
  if not old then
    call('SET', KEYS[5], '1', 'EX', ARGV[1])
    return {'unchanged', ''}
  end
  call('DEL', KEYS[2])
  call('HDEL', KEYS[3], ARGV[8])
  approval_change(KEYS[6], KEYS[7], cell, member, old, false, ARGV[7])
  id = call('XADD', KEYS[4], '*', 'action', 'unrate', 'exchange', ARGV[8], 'thread', ARGV[3],
            'user', ARGV[2], 'ts', ARGV[7], 'prev', old)
else
  -- A rated answer is kept (unrated ones may expire), with the earlier answers its prompt refers
  -- to, and theirs (its thread's: this slot), so it and they can always be rebuilt. Only the
  -- first rating does the work (PERSIST answers 1 only where there was an expiry): what is kept
  -- already had it done, and then this is the one PERSIST.
  if call('PERSIST', KEYS[1]) == 1 then
    local base = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[8])
    local todo = {KEYS[1]} -- kept, their references not yet looked at
    while #todo > 0 do
      local history = call('HGET', table.remove(todo), 'history')
      if history then
        for _, item in ipairs(cjson.decode(history)) do
          if type(item) == 'string' and call('PERSIST', base .. item) == 1 then todo[#todo + 1] = base .. item end
        end
      end
    end
  end
  call('HSET', KEYS[2], 'value', new, 'comment', ARGV[5], 'reasons', ARGV[6], 'user', ARGV[2],
       'updated_at', ARGV[7])
  call('HSET', KEYS[3], ARGV[8], new)
  approval_change(KEYS[6], KEYS[7], cell, member, old, new, ARGV[7])
  id = call('XADD', KEYS[4], '*', 'action', 'rate', 'exchange', ARGV[8], 'thread', ARGV[3],
            'user', ARGV[2], 'value', new, 'ts', ARGV[7], 'prev', old or '')
end
call('SET', KEYS[5], '1', 'EX', ARGV[1])
return {'ok', id}
