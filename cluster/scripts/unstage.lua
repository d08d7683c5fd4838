-- Leader only (fenced): queue or drop a staged promoted job. Its enqueue guards (QueueLock,
-- DelayQueueLock: guards.lua) are checked and applied here, in the same step as the move, so a
-- leader that dies or loses its connection before this runs leaves no lock behind, and a retry
-- after a lost reply finds the entry already moved (removed = 0) and writes nothing.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:promoting   KEYS[4] queues set   KEYS[5] queue:<q>
-- KEYS[6] corral:qtimes:<q>   KEYS[7..] guard keys
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] payload   ARGV[5] "push"/"drop" (the
-- unguarded hooks' verdict)   ARGV[6] queue name   ARGV[7] wake channel   then the guard specs
-- returns {"OK", removed, "pushed" | "dropped" | "refused"} or {"STALE"}
--#include guards
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local guards = take_guards(7)
local removed = redis.call('LREM', KEYS[3], 1, ARGV[4])
if removed ~= 1 or ARGV[5] ~= 'push' then return {'OK', removed, 'dropped'} end
local t = redis.call('TIME')
if not guards_pass(guards, tonumber(t[1])) then return {'OK', removed, 'refused'} end
guards_apply(guards)
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('RPUSH', KEYS[5], ARGV[4])
redis.call('RPUSH', KEYS[6], '1:' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
redis.call('PUBLISH', ARGV[7], ARGV[6])
return {'OK', removed, 'pushed'}
