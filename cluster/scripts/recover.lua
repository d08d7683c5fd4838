-- Leader only (fenced): return a dead node's in-flight jobs to the head of their queues
-- (at-least-once) and remove every record the node left. A job recovered more than K times
-- (it keeps killing its node) goes to the failed list as a poison pill instead.
-- The node is checked to be still dead (heartbeat older than dead_after, on Redis' clock) in the
-- same step, so a node that came back in between is left alone.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:members   KEYS[4] corral:inflight:<id>
-- KEYS[5] corral:node:<id>   KEYS[6] workers set   KEYS[7] corral:recovered   KEYS[8] failed list
-- KEYS[9] queues set   KEYS[10..] worker keys and dead locks to delete
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] node id   ARGV[5] dead after ms   ARGV[6] K
-- ARGV[7] namespace prefix   ARGV[8] failed_at string   ARGV[9] wake channel   ARGV[10..] workers members
-- returns {"OK", recovered, poisoned, details "queue|attempt,..."} or {"ALIVE"} or {"STALE"}
-- Mixed clusters: a slot whose worker record another resque client's cleaner already removed
-- (node-resque's forceCleanWorker, Ruby's prune) had its job failed or re-enqueued by that
-- cleaner: it is not re-enqueued again. A JobLock key is deleted only if its value names this
-- node (`<expiry>:<node>:<execution>`): a live holder's lock stays.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local seen = redis.call('ZSCORE', KEYS[3], ARGV[4])
if seen and ms - tonumber(seen) < tonumber(ARGV[5]) then return {'ALIVE'} end
local fields = redis.call('HGETALL', KEYS[4])
local rec = {}
for i = 1, #fields, 2 do rec[fields[i]] = fields[i + 1] end
local recovered, poisoned, details = 0, 0, {}
local slot_member = {}
for i = 10, #ARGV do
  local slot = string.match(ARGV[i], '^[^:]*:[^:]*%+(%d+):')
  if slot then slot_member[slot] = ARGV[i] end
end
for field, payload in pairs(rec) do
  if not string.find(field, ':', 1, true) then
    local q = rec[field .. ':q']
    local member = slot_member[field]
    if q and member and redis.call('SISMEMBER', KEYS[6], member) == 0 then
      table.insert(details, q .. '|cleaned-by-other-client')
      q = nil
    end
    if q then
      local sha = redis.sha1hex(payload)
      local n = redis.call('HINCRBY', KEYS[7], sha, 1)
      if n > tonumber(ARGV[6]) then
        local ok, job = pcall(cjson.decode, payload)
        local body = payload
        if not ok or type(job) ~= 'table' then body = cjson.encode(payload) end
        redis.call('RPUSH', KEYS[8], '{"worker":' .. cjson.encode(ARGV[4] .. '+' .. field) .. ',"queue":' .. cjson.encode(q)
          .. ',"payload":' .. body .. ',"exception":"PoisonJob","error":'
          .. cjson.encode('job was in flight on a node that died ' .. n .. ' times (limit ' .. ARGV[6] .. ' recoveries); not run again')
          .. ',"backtrace":["recovered ' .. (n - 1) .. ' times by corral","corral#recover"],"failed_at":' .. cjson.encode(ARGV[8]) .. '}')
        redis.call('HDEL', KEYS[7], sha)
        poisoned = poisoned + 1
      else
        redis.call('SADD', KEYS[9], q)
        redis.call('LPUSH', ARGV[7] .. 'queue:' .. q, payload)
        redis.call('LPUSH', ARGV[7] .. 'corral:qtimes:' .. q, '1:' .. ms)
        redis.call('PUBLISH', ARGV[9], q)
        recovered = recovered + 1
      end
      table.insert(details, q .. '|' .. n)
    end
  end
end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[4])
if #ARGV >= 10 then
  redis.call('SREM', KEYS[6], unpack(ARGV, 10))
  redis.call('HDEL', ARGV[7] .. 'workers:heartbeat', unpack(ARGV, 10))
end
local lockprefix = ARGV[7] .. 'workerslock:'
for i = 10, #KEYS do
  if string.sub(KEYS[i], 1, #lockprefix) ~= lockprefix then
    redis.call('DEL', KEYS[i])
  elseif string.find(redis.call('GET', KEYS[i]) or '', ':' .. ARGV[4] .. ':', 1, true) then
    redis.call('DEL', KEYS[i])
  end
end
if ARGV[2] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'recover', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', ARGV[4] .. ':' .. recovered .. ':' .. poisoned)
end
return {'OK', recovered, poisoned, table.concat(details, ',')}
