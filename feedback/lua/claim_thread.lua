-- @include ensure_thread
-- The data layer: the thread's owner, the caller when the thread is new.
local owner = ensure_thread(KEYS[1], ARGV[1], ARGV[2], ARGV[3], '')
return owner
