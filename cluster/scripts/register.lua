-- Register a node's resque workers (on start, and again after being evicted as dead).
-- KEYS[1] workers set   KEYS[2] corral:node:<id> hash
-- ARGV[1] workers list (comma-joined "<name>:<queues>" entries are ambiguous; newline-joined)
-- ARGV[2..] "<name>:<queues>" members
redis.call('HSET', KEYS[2], 'workers', ARGV[1])
if #ARGV >= 2 then redis.call('SADD', KEYS[1], unpack(ARGV, 2)) end
return 1
