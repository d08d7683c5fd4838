-- Leader only (fenced): after the enqueue hooks ran for a staged promoted job, queue or drop it.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:promoting   KEYS[4] queues set   KEYS[5] queue:<q>
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] payload   ARGV[5] "push"/"drop"
-- ARGV[6] queue name   ARGV[7] wake channel   KEYS[6] corral:qtimes:<q>
-- returns {"OK", removed} or {"STALE"}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local removed = redis.call('LREM', KEYS[3], 1, ARGV[4])
if removed == 1 and ARGV[5] == 'push' then
  redis.call('SADD', KEYS[4], ARGV[6])
  redis.call('RPUSH', KEYS[5], ARGV[4])
  local t = redis.call('TIME')
  redis.call('RPUSH', KEYS[6], '1:' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
  redis.call('PUBLISH', ARGV[7], ARGV[6])
end
return {'OK', removed}
