-- feedback.stats.rebuild: put one bucket's rebuilt aggregates in place in one step. KEYS: the
-- rebuilt approval counts, the approval counts, the rebuilt review queue, the review queue. A
-- rebuilt key that is missing (nothing counted) empties the real one. (RENAME inside a script:
-- cluster pipelines refuse it, and it is one slot anyway.)
for i = 1, 3, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
    redis.call('PERSIST', KEYS[i + 1]) -- RENAME carries the temporary key's expiry over
  else
    redis.call('DEL', KEYS[i + 1])
  end
end
return 0
