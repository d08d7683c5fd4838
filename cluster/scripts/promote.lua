-- Leader only (fenced): move due delayed jobs to their queues, up to a batch size, atomically.
-- There is no pop-then-push window: a crash leaves each job either delayed or queued.
-- Jobs of tasks that have enqueue plugins go to the staging list instead; the leader runs their
-- hooks, then moves or drops each one with unstage.lua.
-- Keys derived from payloads (delayed:<ts>, timestamps:<payload>, queue:<q>) are built here from
-- ARGV[6] (the namespace prefix): Corral, like node-resque, needs one primary, not Redis Cluster.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] delayed_queue_schedule   KEYS[4] queues set
-- KEYS[5] corral:promoting   KEYS[6] failed list
-- ARGV[1] token   ARGV[2] audit "1"/"0"   ARGV[3] epoch   ARGV[4] now (epoch seconds, float)
-- ARGV[5] max jobs   ARGV[6] namespace prefix "resque:"   ARGV[7] wake channel
-- ARGV[8] failed_at string   ARGV[9..] task names whose jobs are staged
-- returns {"OK", promoted, staged, next due second or -1, lateness list "ts:count,..."} or {"STALE"}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local now = tonumber(ARGV[4])
local max = tonumber(ARGV[5])
local prefix = ARGV[6]
local staged_tasks = {}
for i = 9, #ARGV do staged_tasks[ARGV[i]] = true end
local moved, staged, woken, buckets = 0, 0, {}, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, max)
for _, ts in ipairs(due) do
  local list = prefix .. 'delayed:' .. ts
  local member = 'delayed:' .. ts
  local n = 0
  while moved + staged < max do
    local payload = redis.call('LPOP', list)
    if not payload then break end
    n = n + 1
    redis.call('SREM', prefix .. 'timestamps:' .. payload, member)
    local ok, job = pcall(cjson.decode, payload)
    local q = ok and type(job) == 'table' and job['queue'] or nil
    local cls = ok and type(job) == 'table' and job['class'] or nil
    if type(q) ~= 'string' or type(cls) ~= 'string' then
      local body = payload
      if not ok or type(job) ~= 'table' then body = cjson.encode(payload) end
      redis.call('RPUSH', KEYS[6], '{"worker":"corral-scheduler","queue":' .. cjson.encode(tostring(q or ''))
        .. ',"payload":' .. body .. ',"exception":"JobDecodeError","error":'
        .. cjson.encode('delayed entry has no string class/queue; cannot promote') .. ',"backtrace":null,"failed_at":'
        .. cjson.encode(ARGV[8]) .. '}')
    elseif staged_tasks[cls] then
      redis.call('RPUSH', KEYS[5], payload)
      staged = staged + 1
    else
      redis.call('SADD', KEYS[4], q)
      redis.call('RPUSH', prefix .. 'queue:' .. q, payload)
      redis.call('RPUSH', prefix .. 'corral:qtimes:' .. q, '1:' .. (tonumber(ts) * 1000))
      woken[q] = true
      moved = moved + 1
    end
  end
  if n > 0 then table.insert(buckets, ts .. ':' .. n) end
  if redis.call('LLEN', list) == 0 then
    redis.call('DEL', list)
    redis.call('ZREM', KEYS[3], ts)
  end
  if moved + staged >= max then break end
end
for q, _ in pairs(woken) do redis.call('PUBLISH', ARGV[7], q) end
if ARGV[2] == '1' and (moved + staged) > 0 then
  local t = redis.call('TIME')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'promote', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', table.concat(buckets, ','))
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local nextdue = -1
if nxt[2] then nextdue = nxt[2] end
return {'OK', moved, staged, nextdue, table.concat(buckets, ',')}
