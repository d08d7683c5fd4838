-- Ack the previous jobs of several slots of one node and fetch their next ones, in one atomic step
-- (a batch of one is a single slot's call; cluster/fetchbatch.py builds the call). Each popped job
-- is recorded in the node's in-flight hash in the same step, so a node that dies mid-job leaves it
-- where the leader's recovery finds it: nothing is popped and forgotten. A slot gets one job at
-- most: a node takes work only for the slots that are free, which keeps the spread across nodes.
-- Per call, not per job: the membership check, one LRANGE + LTRIM per queue, its qtimes runs and
-- its length, the global stat counters; per job: the record's HMGET, HSET, MSET and its worker stat.
-- KEYS[1] corral:inflight:<node>   KEYS[2] stat:processed   KEYS[3] stat:failed   KEYS[4] failed list
-- KEYS[5] corral:recovered   KEYS[6] corral:members
-- KEYS[7..] every other key the records name (worker keys, stats, idle zsets, queue:<q>, corral:qtimes:<q>),
--   each once, referenced by its index
-- ARGV[1] keep at most this many failed entries (0 = all)   ARGV[2] node id   ARGV[3] run_at string
-- ARGV[4] started (epoch seconds)   ARGV[5] number of slot records, then each record:
--   slot, exec id of the job being acked ("" = no ack), ack kind, failed entry ("" unless fail),
--   fetch? "1"/"0", new exec id, worker name, "1" when another slot of this node is parked on the same
--   spec, key indexes of worker:<name>, worker:<name>:started, stat:processed:<name>,
--   stat:failed:<name> and corral:idle:<spec>, the number of queues, then per queue (priority order):
--   its name, the index of queue:<q>, the index of corral:qtimes:<q>
-- ack kinds: "ok" (processed), "fail" (failed + entry), "failcount" (failed, no entry: a retried
--   attempt), "drop" (no stats: a before_perform hook refused it)
-- A slot that finds nothing (it is about to park), or gets a job while a sibling stays parked,
-- files its node in the idle zset (ZADD NX keeps the earliest time: enqueuers wake the longest idle).
-- In-flight fields: <slot> payload, <slot>:q queue, <slot>:e exec id, <slot>:r times this copy was
-- already recovered from a dead node (taken from corral:recovered when it is popped: recovery
-- counts per execution, not per payload bytes).
-- returns {bad keys, reply, ...}: bad keys false or "key\ttype" lines for keys of the wrong type that
--   were skipped; one reply per record, in order: {ack_status, queue or false, payload or false,
--   enqueued ms or false, jobs left, member}
--   ack_status "OK", "LOST" (recovery took the job from us: nothing written), "NONE" (no ack
--   asked) or "BADFAILED" (the failed list is not a list: nothing written for that slot, its job
--   stays in flight and it fetches nothing)
--   member: "NOTMEMBER" when this node is not in corral:members (declared dead, not registered
--   again yet): nothing is fetched, so no job is recorded where recovery would never look
-- No half changes: the only write that can fail on a key's type (RPUSH failed) goes first in its
-- record; the stat counters, the idle zset and the qtimes bookkeeping are best effort (pcall, reported).
local inflight = KEYS[1]
local keep = tonumber(ARGV[1])
local node = ARGV[2]
local run_at = cjson.encode(ARGV[3])
local started = ARGV[4]
local bad = {}
local function report(key)
  table.insert(bad, key .. '\t' .. redis.call('TYPE', key)['ok'])
end
local function try(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r['err'] then
    report(select(2, ...))
    return nil
  end
  return r
end
local member = nil  -- read once per call, on the first fetch
local function is_member()
  if member == nil then
    local m = redis.pcall('ZSCORE', KEYS[6], node)
    if type(m) == 'table' and m['err'] then
      report(KEYS[6])  -- no membership to check against: fetch (recovery would not find the job either way)
      member = true
    else
      member = m and true or false
    end
  end
  return member
end
local now_ms = nil
local function park(idle)
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
  end
  try('ZADD', idle, 'NX', now_ms, node)
end
local has_recovered = nil
local processed, failed = 0, 0

-- a copy recovered from a dead node carries its count (corral:recovered: sha1 -> "n,n,...", newest
-- first, as recovery LPUSHes the copies back to the head)
local function take_recovered_count(slot, payload)
  if has_recovered == nil then has_recovered = redis.call('EXISTS', KEYS[5]) == 1 end
  if not has_recovered then return end
  local sha = redis.sha1hex(payload)
  local counts = try('HGET', KEYS[5], sha)
  if counts then
    local sep = string.find(counts, ',', 1, true)
    local n = sep and string.sub(counts, 1, sep - 1) or counts
    if sep then redis.call('HSET', KEYS[5], sha, string.sub(counts, sep + 1)) else redis.call('HDEL', KEYS[5], sha) end
    redis.call('HSET', inflight, slot .. ':r', n)
  end
end

-- How many fetching records list each queue (by key index): the most this call can take from it.
-- A queue's jobs are taken in one LRANGE + LTRIM on its first use and handed out in order; the
-- ones left over (records that fetched nothing after all) go back to the head in the same step.
local want = {}
do
  local a = 6
  for _ = 1, tonumber(ARGV[5]) do
    local nq = tonumber(ARGV[a + 13])
    if ARGV[a + 4] == '1' then
      for i = 0, nq - 1 do
        local qi = ARGV[a + 15 + 3 * i]
        want[qi] = (want[qi] or 0) + 1
      end
    end
    a = a + 14 + 3 * nq
  end
end
local bufs, order = {}, {}
local function take(qi, q, qti)
  local b = bufs[qi]
  if not b then
    local key = KEYS[tonumber(qi)]
    local items = try('LRANGE', key, 0, want[qi] - 1) or {}
    if #items > 0 then redis.call('LTRIM', key, #items, -1) end
    b = {items = items, n = 0, served = {}, key = key, qt = KEYS[tonumber(qti)], qjson = cjson.encode(q)}
    bufs[qi] = b
    table.insert(order, b)
  end
  if b.n >= #b.items then return nil end
  b.n = b.n + 1
  return b.items[b.n], b
end

-- After the records: unused jobs back to the head; the served jobs' enqueue times from the head
-- runs of corral:qtimes:<q> ("n:ms", one per enqueue call); the queue's length for every reply.
local function settle(b)
  if b.n < #b.items then
    local back = {}
    for i = #b.items, b.n + 1, -1 do table.insert(back, b.items[i]) end
    redis.call('LPUSH', b.key, unpack(back))
  end
  local served = #b.served
  if served == 0 then return end
  local i = 1
  while i <= served do
    local head = try('LINDEX', b.qt, 0)
    local sep = head and string.find(head, ':', 1, true)
    local n = sep and tonumber(string.sub(head, 1, sep - 1))
    if not n then break end
    if n < 1 then n = 1 end
    local enq = string.sub(head, sep + 1)
    local use = math.min(n, served - i + 1)
    for j = i, i + use - 1 do b.served[j][4] = enq end
    i = i + use
    if n <= use then redis.call('LPOP', b.qt) else redis.call('LSET', b.qt, 0, (n - use) .. ':' .. enq) end
  end
  -- producers that do not write qtimes (node-resque, LREM) desync it; an empty queue resets it
  local left = redis.call('LLEN', b.key)
  if left == 0 then redis.call('DEL', b.qt) end
  for _, r in ipairs(b.served) do r[5] = left end
end

local function serve(a)
  local slot, acked, kind, entry, fetch, exec, name, besides =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local wkey, skey, pkey, fkey, idle = KEYS[tonumber(ARGV[a + 8])], KEYS[tonumber(ARGV[a + 9])],
    KEYS[tonumber(ARGV[a + 10])], KEYS[tonumber(ARGV[a + 11])], KEYS[tonumber(ARGV[a + 12])]
  local nq = tonumber(ARGV[a + 13])
  -- a retry of a call whose reply was lost: the job was already recorded under this execution id
  local rec = redis.call('HMGET', inflight, slot .. ':e', slot .. ':r')
  local cur = rec[1]
  if exec ~= '' and cur == exec then
    return {'OK', redis.call('HGET', inflight, slot .. ':q'), redis.call('HGET', inflight, slot), false, 0, false}
  end
  local ack = 'NONE'
  local clear = false
  if acked ~= '' then
    if cur == acked then
      if kind == 'fail' then
        if not try('RPUSH', KEYS[4], entry) then return {'BADFAILED', false, false, false, 0, false} end
        if keep > 0 then redis.call('LTRIM', KEYS[4], -keep, -1) end
      end
      clear = true  -- its in-flight fields and worker keys go, or the next job's overwrite them
      if kind == 'ok' then
        processed = processed + 1
        try('INCR', pkey)
      elseif kind == 'fail' or kind == 'failcount' then
        failed = failed + 1
        try('INCR', fkey)
      end
      ack = 'OK'
    else
      ack = 'LOST'
    end
  end
  local function nothing(why)
    if clear then
      redis.call('HDEL', inflight, slot, slot .. ':q', slot .. ':e', slot .. ':r')
      redis.call('DEL', wkey, skey)
    end
    return {ack, false, false, false, 0, why}
  end
  if fetch ~= '1' then return nothing(false) end
  if not is_member() then return nothing('NOTMEMBER') end
  for i = 0, nq - 1 do
    local at = a + 14 + 3 * i
    local q = ARGV[at]
    local payload, b = take(ARGV[at + 1], q, ARGV[at + 2])
    if payload then
      if besides == '1' then park(idle) end
      redis.call('HSET', inflight, slot, payload, slot .. ':q', q, slot .. ':e', exec)
      if clear and rec[2] then redis.call('HDEL', inflight, slot .. ':r') end  -- the acked copy's count
      take_recovered_count(slot, payload)
      local first = string.sub(payload, 1, 1)
      local body = payload
      if first ~= '{' and first ~= '[' then body = cjson.encode(payload) end
      redis.call('MSET', wkey, '{"run_at":' .. run_at .. ',"queue":' .. b.qjson .. ',"payload":' .. body
        .. ',"worker":' .. cjson.encode(name) .. '}', skey, started)
      local reply = {ack, q, payload, false, 0, false}  -- enqueued ms and jobs left: settle()
      table.insert(b.served, reply)
      return reply
    end
  end
  park(idle)
  return nothing(false)
end

local out = {false}
local a = 6
for _ = 1, tonumber(ARGV[5]) do
  table.insert(out, serve(a))
  a = a + 14 + 3 * tonumber(ARGV[a + 13])
end
for _, b in ipairs(order) do settle(b) end
if processed > 0 then try('INCRBY', KEYS[2], processed) end
if failed > 0 then try('INCRBY', KEYS[3], failed) end
if #bad > 0 then out[1] = table.concat(bad, '\n') end
return out
