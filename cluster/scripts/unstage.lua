-- Leader only (fenced): queue or drop a staged promoted job. Its enqueue guards (QueueLock,
-- DelayQueueLock: guards.lua) are checked and applied here, in the same step as the move, so a
-- leader that dies or loses its connection before this runs leaves no lock behind, and a retry
-- after a lost reply finds the entry already moved (removed = 0) and writes nothing.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:promoting   KEYS[4] queues set   KEYS[5] queue:<q>
-- KEYS[6] corral:qtimes:<q>   KEYS[7] failed list   KEYS[8..] guard keys
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] payload   ARGV[5] "push"/"drop" (the
-- unguarded hooks' verdict)   ARGV[6] queue name   ARGV[7] wake channel   ARGV[8] failed_at string
-- then the guard specs
-- returns {"OK", removed, "pushed" | "dropped" | "refused" | "failed"[, bad key "key\ttype"]}
--   or {"BADKEY", "key\ttype"} (nothing written) or {"STALE"}
-- A queue key that is not a list cannot take the job: it goes to failed with that reason
-- (nothing is removed from the staging list unless it lands somewhere). Every check (types,
-- guards) runs before the first write.
--#include guards
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local guards = take_guards(8)
local function typeof(key) return redis.call('TYPE', key)['ok'] end
local stype = typeof(KEYS[3])
if stype ~= 'list' and stype ~= 'none' then return {'BADKEY', KEYS[3] .. '\t' .. stype} end
local qtype = typeof(KEYS[5])
local qok = qtype == 'list' or qtype == 'none'
if ARGV[5] == 'push' and not qok then
  local ftype = typeof(KEYS[7])
  if ftype ~= 'list' and ftype ~= 'none' then return {'BADKEY', KEYS[7] .. '\t' .. ftype} end
  local removed = redis.call('LREM', KEYS[3], 1, ARGV[4])
  if removed == 1 then
    local ok, job = pcall(cjson.decode, ARGV[4])
    local body = ARGV[4]
    if not ok or type(job) ~= 'table' then body = cjson.encode(ARGV[4]) end
    redis.call('RPUSH', KEYS[7], '{"worker":"corral-scheduler","queue":' .. cjson.encode(ARGV[6]) .. ',"payload":' .. body
      .. ',"exception":"EnqueueError","error":' .. cjson.encode('queue key ' .. KEYS[5] .. ' holds a ' .. qtype .. ', not a list')
      .. ',"backtrace":null,"failed_at":' .. cjson.encode(ARGV[8] or '') .. '}')
  end
  return {'OK', removed, 'failed', KEYS[5] .. '\t' .. qtype}
end
local t = redis.call('TIME')
local pass = ARGV[5] == 'push' and guards_pass(guards, tonumber(t[1]))
local removed = redis.call('LREM', KEYS[3], 1, ARGV[4])
if removed ~= 1 or ARGV[5] ~= 'push' then return {'OK', removed, 'dropped'} end
if not pass then return {'OK', removed, 'refused'} end
guards_apply(guards)
redis.pcall('SADD', KEYS[4], ARGV[6])
redis.call('RPUSH', KEYS[5], ARGV[4])
redis.pcall('RPUSH', KEYS[6], '1:' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
redis.call('PUBLISH', ARGV[7], ARGV[6])
return {'OK', removed, 'pushed'}
