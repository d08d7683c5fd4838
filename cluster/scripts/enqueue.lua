-- Enqueue jobs on one queue (resque layout) and wake idle Corral workers.
-- KEYS[1] queues set   KEYS[2] queue:<q> list   KEYS[3] corral:qtimes:<q>
-- ARGV[1] queue name   ARGV[2] wake channel   ARGV[3..] job payloads (RPUSH in order)
-- returns the queue length after the push. The enqueue time goes to qtimes as one "count:ms"
-- entry, so workers can report wait times and the metrics the oldest job's age.
redis.call('SADD', KEYS[1], ARGV[1])
local len = redis.call('RPUSH', KEYS[2], unpack(ARGV, 3))
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[3], (#ARGV - 2) .. ':' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
redis.call('PUBLISH', ARGV[2], ARGV[1])
return len
