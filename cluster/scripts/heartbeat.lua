-- Membership heartbeat: stamp this node with Redis' own time (one clock for every node).
-- KEYS[1] corral:members zset   KEYS[2] corral:node:<id> hash   KEYS[3..] worker:ping:<name> keys
-- ARGV[1] node id   ARGV[2] info JSON   ARGV[3] ping TTL ms   ARGV[4..] ping values (match KEYS[3..])
-- returns {was_member 0/1, redis time ms}
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.pcall('HSET', KEYS[2], 'info', ARGV[2])  -- informational: a bad key never stops a heartbeat
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[3])
end
if was then return {1, ms} end
return {0, ms}
