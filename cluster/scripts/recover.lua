-- Leader only (fenced): return a dead node's in-flight jobs to the head of their queues
-- (at-least-once) and remove every record the node left. A job recovered more than K times
-- (it keeps killing its node) goes to the failed list as a poison pill instead. Counts are per
-- execution: the in-flight field <slot>:r says how often this copy was already recovered, and a
-- requeued copy leaves its count in corral:recovered (sha1 -> "n,n,..." newest first) for the
-- fetch that pops it; five identical payloads in flight are five copies recovered once each.
-- The node is checked to be still dead in the same step: its heartbeat must be exactly the one
-- the leader observed (no heartbeat since), and with reason "time" also older than dead_after on
-- Redis' clock; with reason "silent" the leader saw it unchanged for dead_after on its own
-- monotonic clock (which bounds what a step back of Redis' clock can do).
-- Types are checked before the first write: nothing is half applied.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] corral:members   KEYS[4] corral:inflight:<id>
-- KEYS[5] corral:node:<id>   KEYS[6] workers set   KEYS[7] corral:recovered   KEYS[8] failed list
-- KEYS[9] queues set   KEYS[10..] worker keys and dead locks to delete
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] node id   ARGV[5] dead after ms   ARGV[6] K
-- ARGV[7] namespace prefix   ARGV[8] failed_at string   ARGV[9] wake channel
-- ARGV[10] heartbeat score the leader observed ("" = not a member)   ARGV[11] reason "time"/"silent"
-- ARGV[12..] workers members
-- returns {"OK", recovered, poisoned, details "queue|attempt,...", bad keys or false} or {"ALIVE"}
--   or {"BADKEY", "key\ttype"} (nothing written) or {"STALE"}
-- Mixed clusters: a slot whose worker record another resque client's cleaner already removed
-- (node-resque's forceCleanWorker, Ruby's prune) had its job failed or re-enqueued by that
-- cleaner: it is not re-enqueued again. A JobLock key is deleted only if its value names this
-- node (`<expiry>:<node>:<execution>`): a live holder's lock stays.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local seen = redis.call('ZSCORE', KEYS[3], ARGV[4])
if (not seen) ~= (ARGV[10] == '') or (seen and tonumber(seen) ~= tonumber(ARGV[10])) then return {'ALIVE'} end
if seen and ARGV[11] ~= 'silent' and ms - tonumber(seen) < tonumber(ARGV[5]) then return {'ALIVE'} end
local function typeof(key) return redis.call('TYPE', key)['ok'] end
local function is(key, want) local ty = typeof(key) return ty == want or ty == 'none' end
if not is(KEYS[4], 'hash') then return {'BADKEY', KEYS[4] .. '\t' .. typeof(KEYS[4])} end
local bad = {}
local failed_ok = is(KEYS[8], 'list')
local counts_ok = is(KEYS[7], 'hash')
if not counts_ok then table.insert(bad, KEYS[7] .. '\t' .. typeof(KEYS[7])) end
local fields = redis.call('HGETALL', KEYS[4])
local rec = {}
for i = 1, #fields, 2 do rec[fields[i]] = fields[i + 1] end
local details = {}
local slot_member = {}
for i = 12, #ARGV do
  local slot = string.match(ARGV[i], '^[^:]*:[^:]*%+(%d+):')
  if slot then slot_member[slot] = ARGV[i] end
end
local workers_ok = is(KEYS[6], 'set')
if not workers_ok then table.insert(bad, KEYS[6] .. '\t' .. typeof(KEYS[6])) end
-- plan every job before writing anything
local plan = {}
for field, payload in pairs(rec) do
  if not string.find(field, ':', 1, true) then
    local q = rec[field .. ':q']
    local member = slot_member[field]
    if q and member and workers_ok and redis.call('SISMEMBER', KEYS[6], member) == 0 then
      table.insert(details, q .. '|cleaned-by-other-client')
      q = nil
    end
    if q then
      local n = (tonumber(rec[field .. ':r'] or '0') or 0) + 1
      local qkey = ARGV[7] .. 'queue:' .. q
      local action, why = 'requeue', nil
      if not is(qkey, 'list') then
        table.insert(bad, qkey .. '\t' .. typeof(qkey))
        action, why = 'fail', 'queue key ' .. qkey .. ' holds a ' .. typeof(qkey) .. ', not a list; cannot requeue'
      elseif n > tonumber(ARGV[6]) then
        action = 'poison'
      end
      if action ~= 'requeue' and not failed_ok then
        table.insert(bad, KEYS[8] .. '\t' .. typeof(KEYS[8]))
        if action == 'fail' then return {'BADKEY', KEYS[8] .. '\t' .. typeof(KEYS[8])} end
        action = 'requeue'  -- nowhere to fail it: run it again rather than lose it
      end
      table.insert(plan, {field = field, payload = payload, q = q, n = n, action = action, why = why})
    end
  end
end
local recovered, poisoned = 0, 0
local function fail(p, exception, why, backtrace)
  local ok, job = pcall(cjson.decode, p.payload)
  local body = p.payload
  if not ok or type(job) ~= 'table' then body = cjson.encode(p.payload) end
  redis.call('RPUSH', KEYS[8], '{"worker":' .. cjson.encode(ARGV[4] .. '+' .. p.field) .. ',"queue":' .. cjson.encode(p.q)
    .. ',"payload":' .. body .. ',"exception":"' .. exception .. '","error":' .. cjson.encode(why)
    .. ',"backtrace":' .. backtrace .. ',"failed_at":' .. cjson.encode(ARGV[8]) .. '}')
end
for _, p in ipairs(plan) do
  if p.action == 'poison' then
    fail(p, 'PoisonJob', 'job was in flight on a node that died ' .. p.n .. ' times (limit ' .. ARGV[6]
      .. ' recoveries); not run again', '["recovered ' .. (p.n - 1) .. ' times by corral","corral#recover"]')
    poisoned = poisoned + 1
  elseif p.action == 'fail' then
    fail(p, 'RecoveryError', p.why, 'null')
    poisoned = poisoned + 1
  else
    redis.pcall('SADD', KEYS[9], p.q)
    redis.call('LPUSH', ARGV[7] .. 'queue:' .. p.q, p.payload)
    redis.pcall('LPUSH', ARGV[7] .. 'corral:qtimes:' .. p.q, '1:' .. ms)
    if counts_ok then
      local sha = redis.sha1hex(p.payload)
      local prev = redis.call('HGET', KEYS[7], sha)
      redis.call('HSET', KEYS[7], sha, prev and (p.n .. ',' .. prev) or tostring(p.n))
    end
    redis.call('PUBLISH', ARGV[9], p.q)
    recovered = recovered + 1
  end
  table.insert(details, p.q .. '|' .. p.n)
end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[4])
if #ARGV >= 12 then
  redis.pcall('SREM', KEYS[6], unpack(ARGV, 12))
  redis.pcall('HDEL', ARGV[7] .. 'workers:heartbeat', unpack(ARGV, 12))
end
local lockprefix = ARGV[7] .. 'workerslock:'
for i = 10, #KEYS do
  if string.sub(KEYS[i], 1, #lockprefix) ~= lockprefix then
    redis.call('DEL', KEYS[i])
  else
    local v = redis.pcall('GET', KEYS[i])
    if type(v) == 'string' and string.find(v, ':' .. ARGV[4] .. ':', 1, true) then redis.call('DEL', KEYS[i]) end
  end
end
if ARGV[2] == '1' then
  redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'recover', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', ARGV[4] .. ':' .. recovered .. ':' .. poisoned)
end
if #bad == 0 then bad = false else bad = table.concat(bad, '\n') end
return {'OK', recovered, poisoned, table.concat(details, ','), bad}
