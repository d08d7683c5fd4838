-- Give a slot's in-flight job back to the head of its queue (graceful stop past the grace).
-- KEYS[1] corral:inflight:<node>   KEYS[2] worker:<name>:<queues>   KEYS[3] ...:started
-- KEYS[4] queue:<q>   KEYS[5] queues set   KEYS[6] corral:qtimes:<q>
-- ARGV[1] slot   ARGV[2] exec id   ARGV[3] queue name   ARGV[4] wake channel
-- returns 1 if pushed back, 0 if the job was no longer ours
if redis.call('HGET', KEYS[1], ARGV[1] .. ':e') ~= ARGV[2] then return 0 end
local payload = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. ':q', ARGV[1] .. ':e')
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('LPUSH', KEYS[4], payload)
local t = redis.call('TIME')
redis.call('LPUSH', KEYS[6], '1:' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
