-- Leader only (fenced): move due delayed jobs to their queues, up to a batch size, atomically.
-- There is no pop-then-push window: a crash leaves each job either delayed or queued.
-- Jobs of tasks that have enqueue plugins go to the staging list instead; the leader runs their
-- hooks, then moves or drops each one with unstage.lua.
-- "Due" is judged on Redis' own clock (TIME), the one clock every node shares: a leader whose
-- wall clock runs ahead never promotes a job early.
-- Keys derived from payloads (delayed:<ts>, timestamps:<payload>, queue:<q>) are built here from
-- ARGV[6] (the namespace prefix): Corral, like node-resque, needs one primary, not Redis Cluster.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] delayed_queue_schedule   KEYS[4] queues set
-- KEYS[5] corral:promoting   KEYS[6] failed list
-- ARGV[1] token   ARGV[2] audit "1"/"0"   ARGV[3] epoch   ARGV[4] unused (was the leader's now)
-- ARGV[5] max jobs   ARGV[6] namespace prefix "resque:"   ARGV[7] wake channel
-- ARGV[8] failed_at string   ARGV[9..] task names whose jobs are staged
-- returns {"OK", promoted, staged, next due second after now or -1, lateness list "ts:count,...",
--          Redis now (epoch seconds, float), bad keys "key\ttype" lines or false} or {"STALE"}
-- Keys of the wrong type never stop the others: a "bucket" that is not a list is dropped from the
-- schedule (the key itself is left alone) and reported; a job whose queue key is not a list goes
-- to failed with that reason; with `failed` itself not a list such a job stays in its bucket.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max = tonumber(ARGV[5])
local prefix = ARGV[6]
local staged_tasks = {}
for i = 9, #ARGV do staged_tasks[ARGV[i]] = true end
local bad = {}
local function typeof(key) return redis.call('TYPE', key)['ok'] end
local function report(key) table.insert(bad, key .. '\t' .. typeof(key)) end
local stype = typeof(KEYS[3])
if stype ~= 'zset' and stype ~= 'none' then
  return {'OK', 0, 0, -1, '', string.format('%.6f', now), KEYS[3] .. '\t' .. stype}
end
local ptype = typeof(KEYS[5])
local promoting_ok = ptype == 'list' or ptype == 'none'
local ftype = typeof(KEYS[6])
local failed_ok = ftype == 'list' or ftype == 'none'
local qok = {}
local function queue_ok(q)
  if qok[q] == nil then
    local ty = typeof(prefix .. 'queue:' .. q)
    qok[q] = ty == 'list' or ty == 'none'
    if not qok[q] then report(prefix .. 'queue:' .. q) end
  end
  return qok[q]
end
local function fail(q, payload, why)
  local ok, job = pcall(cjson.decode, payload)
  local body = payload
  if not ok or type(job) ~= 'table' then body = cjson.encode(payload) end
  redis.call('RPUSH', KEYS[6], '{"worker":"corral-scheduler","queue":' .. cjson.encode(tostring(q or ''))
    .. ',"payload":' .. body .. ',"exception":"JobDecodeError","error":' .. cjson.encode(why)
    .. ',"backtrace":null,"failed_at":' .. cjson.encode(ARGV[8]) .. '}')
end
local moved, staged, woken, buckets = 0, 0, {}, {}
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, max)
for _, ts in ipairs(due) do
  local list = prefix .. 'delayed:' .. ts
  local member = 'delayed:' .. ts
  local btype = typeof(list)
  if btype ~= 'list' and btype ~= 'none' then
    report(list)
    redis.call('ZREM', KEYS[3], ts)
  else
    local n = 0
    while moved + staged < max do
      local payload = redis.call('LPOP', list)
      if not payload then break end
      local ok, job = pcall(cjson.decode, payload)
      local q = ok and type(job) == 'table' and job['queue'] or nil
      local cls = ok and type(job) == 'table' and job['class'] or nil
      local why = nil
      if type(q) ~= 'string' or type(cls) ~= 'string' then
        why = 'delayed entry has no string class/queue; cannot promote'
      elseif not staged_tasks[cls] and not queue_ok(q) then
        why = 'queue key ' .. prefix .. 'queue:' .. q .. ' holds a ' .. typeof(prefix .. 'queue:' .. q) .. ', not a list'
      end
      if (why and not failed_ok) or (not why and staged_tasks[cls] and not promoting_ok) then
        redis.call('LPUSH', list, payload)  -- nowhere to put it: it stays delayed, reported
        report(why and KEYS[6] or KEYS[5])
        break
      end
      n = n + 1
      redis.pcall('SREM', prefix .. 'timestamps:' .. payload, member)
      if why then
        fail(q, payload, why)
      elseif staged_tasks[cls] then
        redis.call('RPUSH', KEYS[5], payload)
        staged = staged + 1
      else
        redis.pcall('SADD', KEYS[4], q)
        redis.call('RPUSH', prefix .. 'queue:' .. q, payload)
        redis.pcall('RPUSH', prefix .. 'corral:qtimes:' .. q, '1:' .. (tonumber(ts) * 1000))
        woken[q] = true
        moved = moved + 1
      end
    end
    if n > 0 then table.insert(buckets, ts .. ':' .. n) end
    if redis.call('LLEN', list) == 0 then
      redis.call('DEL', list)
      redis.call('ZREM', KEYS[3], ts)
    end
  end
  if moved + staged >= max then break end
end
for q, _ in pairs(woken) do redis.call('PUBLISH', ARGV[7], q) end
if ARGV[2] == '1' and (moved + staged) > 0 then
  redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'promote', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', table.concat(buckets, ','))
end
-- the next second after now: a due second still listed (a bucket that could not be emptied) is
-- re-read on the leader's re-read period instead of spinning. `now` goes in as %.6f: Lua's own
-- number-to-string keeps 14 digits (100 us), so a tick in the last 50 us before a due second
-- wrote '(' .. <that second> and skipped it, and the leader slept a whole re-read past it
local nxt = redis.call('ZRANGEBYSCORE', KEYS[3], string.format('(%.6f', now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local nextdue = -1
if nxt[2] then nextdue = nxt[2] end
if #bad == 0 then bad = false else bad = table.concat(bad, '\n') end
return {'OK', moved, staged, nextdue, table.concat(buckets, ','), string.format('%.6f', now), bad}
