-- Leader only (fenced): claim one periodic occurrence and enqueue it, in one step.
-- The per-task record keeps the last claimed slot; a slot at or before it is never enqueued
-- again, whatever node leads, however often it restarts, with no TTL involved.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:periodic:<task>   KEYS[4] queues set
-- KEYS[5] queue:<q>   KEYS[6] corral:qtimes:<q>
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] slot (epoch seconds)   ARGV[5] payload
-- ARGV[6] queue name   ARGV[7] wake channel   ARGV[8] overlap "allow"/"skip"   ARGV[9] task name
-- ARGV[10] namespace prefix   KEYS[7] corral:members (overlap skip: in-flight copies are looked up
-- in every member's in-flight hash)
-- returns {"OK"|"DUP"|"PAUSED"|"SKIPPED"} or {"STALE"}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
if redis.call('HGET', KEYS[3], 'paused') == '1' then return {'PAUSED'} end
local last = redis.call('HGET', KEYS[3], 'last')
if last and tonumber(last) >= tonumber(ARGV[4]) then return {'DUP'} end
redis.call('HSET', KEYS[3], 'last', ARGV[4])
if ARGV[8] == 'skip' then
  if redis.call('LPOS', KEYS[5], ARGV[5], 'MAXLEN', 10000) then return {'SKIPPED'} end
  for _, node in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    for _, v in ipairs(redis.call('HVALS', ARGV[10] .. 'corral:inflight:' .. node)) do
      if v == ARGV[5] then return {'SKIPPED'} end
    end
  end
end
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('RPUSH', KEYS[6], '1:' .. math.floor(tonumber(ARGV[4]) * 1000))
redis.call('PUBLISH', ARGV[7], ARGV[6])
if ARGV[2] == '1' then
  local t = redis.call('TIME')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'periodic', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', ARGV[9] .. '@' .. ARGV[4])
end
return {'OK'}
