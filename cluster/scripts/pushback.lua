-- Give a slot's in-flight job back to the head of its queue (graceful stop past the grace).
-- KEYS[1] corral:inflight:<node>   KEYS[2] worker:<name>:<queues>   KEYS[3] ...:started
-- KEYS[4] queue:<q>   KEYS[5] queues set   KEYS[6] corral:qtimes:<q>   KEYS[7] corral:recovered (optional)
-- ARGV[1] slot   ARGV[2] exec id   ARGV[3] queue name   ARGV[4] wake channel
-- returns 1 if pushed back, 0 if the job was no longer ours or its queue key is not a list (then
-- nothing is written: the job stays in flight, and the leader recovers it once this node is gone)
if redis.call('HGET', KEYS[1], ARGV[1] .. ':e') ~= ARGV[2] then return 0 end
local qtype = redis.call('TYPE', KEYS[4])['ok']
if qtype ~= 'list' and qtype ~= 'none' then return 0 end
local payload = redis.call('HGET', KEYS[1], ARGV[1])
local count = redis.call('HGET', KEYS[1], ARGV[1] .. ':r')
redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. ':q', ARGV[1] .. ':e', ARGV[1] .. ':r')
redis.call('DEL', KEYS[2], KEYS[3])
redis.pcall('SADD', KEYS[5], ARGV[3])
redis.call('LPUSH', KEYS[4], payload)
local t = redis.call('TIME')
redis.pcall('LPUSH', KEYS[6], '1:' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
-- a copy recovered before keeps its count: it is the next one fetched from the head
if count and KEYS[7] then
  local sha = redis.sha1hex(payload)
  local prev = redis.pcall('HGET', KEYS[7], sha)
  if type(prev) ~= 'table' then redis.pcall('HSET', KEYS[7], sha, prev and (count .. ',' .. prev) or count) end
end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
