-- Enqueue jobs on one queue (resque layout) and wake idle Corral workers.
-- KEYS[1] queues set   KEYS[2] queue:<q> list
-- ARGV[1] queue name   ARGV[2] wake channel   ARGV[3..] job payloads (RPUSH in order)
-- returns the queue length after the push
redis.call('SADD', KEYS[1], ARGV[1])
local len = redis.call('RPUSH', KEYS[2], unpack(ARGV, 3))
redis.call('PUBLISH', ARGV[2], ARGV[1])
return len
