-- Compare-and-delete: remove a lock only if it still holds the value this holder wrote.
-- KEYS[1] lock key   ARGV[1] expected value
-- returns 1 if deleted, 0 otherwise
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
