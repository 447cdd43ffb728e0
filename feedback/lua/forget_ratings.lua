-- @include approval
-- feedback.thread.delete, first in its transaction: the current ratings of the thread's answers
-- leave the approval counts (KEYS[1]) and the review queue (KEYS[2]), read at the moment they are
-- deleted (in the thread's bucket). KEYS[2i+1], KEYS[2i+2]: the exchange and rating of the answer
-- whose review queue member (keys.review_member) is ARGV[i].
for i = 1, #ARGV do
  local old = redis.call('HGET', KEYS[2 * i + 2], 'value')
  if old then
    local ex = redis.call('HMGET', KEYS[2 * i + 1], 'created_at', 'prompt_version', 'model_version')
    approval_change(KEYS[1], KEYS[2], approval_cell(ex[1], ex[2], ex[3]), ARGV[i], old, false, '')
  end
end
return 0
