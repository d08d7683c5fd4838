-- Leader only (fenced): claim one periodic occurrence and enqueue it, in one step.
-- The per-task record keeps the last claimed slot; a slot at or before it is never enqueued
-- again, whatever node leads, however often it restarts, with no TTL involved.
-- Slots are judged on Redis' clock (TIME), the one clock every node shares: a slot after Redis'
-- now is refused as EARLY (a leader whose wall clock runs ahead never fires early), and a record
-- whose last slot lies more than one period after Redis' now was written by such a clock (or
-- Redis' clock stepped back): it is bogus and overwritten, instead of silencing the task until
-- real time catches up with it.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:periodic:<task>   KEYS[4] queues set
-- KEYS[5] queue:<q>   KEYS[6] corral:qtimes:<q>   KEYS[7] corral:members (overlap skip: in-flight
-- copies are looked up in every member's in-flight hash)
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] slot (epoch seconds)   ARGV[5] payload
-- ARGV[6] queue name   ARGV[7] wake channel   ARGV[8] overlap "allow"/"skip"   ARGV[9] task name
-- ARGV[10] namespace prefix   ARGV[11] the task's period in seconds (frequency, or the cron gap after the slot)
-- returns {status, Redis now (epoch seconds), detail}: status "OK" (detail: the bogus last slot it
-- replaced, or false), "DUP" (detail: the last slot), "PAUSED", "SKIPPED", "EARLY", "BADKEY"
-- (detail: "key\ttype" of a key that is not what it must be; nothing written); or {"STALE"}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local snow = string.format('%.6f', now)
local slot = tonumber(ARGV[4])
if slot > now then return {'EARLY', snow, false} end
local function typeof(key) return redis.call('TYPE', key)['ok'] end
local rtype = typeof(KEYS[3])
if rtype ~= 'hash' and rtype ~= 'none' then return {'BADKEY', snow, KEYS[3] .. '\t' .. rtype} end
local qtype = typeof(KEYS[5])
if qtype ~= 'list' and qtype ~= 'none' then return {'BADKEY', snow, KEYS[5] .. '\t' .. qtype} end
if redis.call('HGET', KEYS[3], 'paused') == '1' then return {'PAUSED', snow, false} end
local last = redis.call('HGET', KEYS[3], 'last')
local healed = false
if last and tonumber(last) == nil then
  healed = last
elseif last and tonumber(last) >= slot then
  if tonumber(last) <= now + tonumber(ARGV[11]) then return {'DUP', snow, last} end
  healed = last
end
redis.call('HSET', KEYS[3], 'last', ARGV[4])
if ARGV[8] == 'skip' then
  if redis.call('LPOS', KEYS[5], ARGV[5], 'MAXLEN', 10000) then return {'SKIPPED', snow, healed} end
  local nodes = redis.pcall('ZRANGE', KEYS[7], 0, -1)
  if type(nodes) ~= 'table' or nodes['err'] then nodes = {} end
  for _, node in ipairs(nodes) do
    local vals = redis.pcall('HVALS', ARGV[10] .. 'corral:inflight:' .. node)
    if type(vals) == 'table' and not vals['err'] then
      for _, v in ipairs(vals) do
        if v == ARGV[5] then return {'SKIPPED', snow, healed} end
      end
    end
  end
end
redis.pcall('SADD', KEYS[4], ARGV[6])
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.pcall('RPUSH', KEYS[6], '1:' .. math.floor(slot * 1000))
redis.call('PUBLISH', ARGV[7], ARGV[6])
if ARGV[2] == '1' then
  redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'periodic', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', ARGV[9] .. '@' .. ARGV[4])
end
return {'OK', snow, healed}
