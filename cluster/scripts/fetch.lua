-- Ack the slot's previous job (optional) and fetch the next one, in one atomic step.
-- The popped job is recorded in the node's in-flight hash in the same step, so a node that dies
-- mid-job leaves it where the leader's recovery finds it: nothing is popped and forgotten.
-- KEYS[1] corral:inflight:<node>   KEYS[2] worker:<name>:<queues>   KEYS[3] ...:started
-- KEYS[4] stat:processed   KEYS[5] stat:processed:<name>   KEYS[6] stat:failed   KEYS[7] stat:failed:<name>
-- KEYS[8] failed list   KEYS[9] corral:recovered   KEYS[10] corral:idle:<slot's queue spec>
-- KEYS[11] corral:members
-- KEYS[12..] queue:<q> lists, in priority order, then their corral:qtimes:<q> keys in the same order
-- ARGV[1] slot   ARGV[2] exec id of the job being acked ("" = no ack)
-- ARGV[3] ack kind: "ok" (processed), "fail" (failed + entry), "failcount" (failed, no entry: a
--         retried attempt), "drop" (no stats: a before_perform hook refused it)
-- ARGV[4] failed entry ("" unless fail)   ARGV[5] keep at most this many failed entries (0 = all)
-- ARGV[6] fetch? "1"/"0"   ARGV[7] new exec id   ARGV[8] run_at string   ARGV[9] worker name
-- ARGV[10] started (epoch seconds)   ARGV[11] node id   ARGV[12] "1" when another slot of this node
-- is parked on the same spec   ARGV[13..] queue names matching KEYS[12..]
-- A slot that finds nothing (it is about to park), or gets a job while a sibling stays parked,
-- files its node in the idle zset (ZADD NX keeps the earliest time: enqueuers wake the longest idle).
-- In-flight fields: <slot> payload, <slot>:q queue, <slot>:e exec id, <slot>:r times this copy was
-- already recovered from a dead node (taken from corral:recovered when it is popped: recovery
-- counts per execution, not per payload bytes).
-- returns {ack_status, queue or false, payload or false, enqueued ms or false, jobs left, bad keys, member}
--   ack_status "OK", "LOST" (recovery took the job from us: nothing written), "NONE" (no ack
--   asked) or "BADFAILED" (the failed list is not a list: nothing written, the job stays in flight)
--   bad keys: false or "key\ttype" lines for keys of the wrong type that were skipped
--   member: "NOTMEMBER" when this node is not in corral:members (declared dead, not registered
--   again yet): nothing is fetched, so no job is recorded where recovery would never look
-- No half changes: the only write that can fail on a key's type (RPUSH failed) goes first; the
-- stat counters, the idle zset and the qtimes bookkeeping are best effort (pcall, reported).
local slot = ARGV[1]
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
local function badkeys()
  if #bad == 0 then return false end
  return table.concat(bad, '\n')
end
-- A retry of a call whose reply was lost: the job was already recorded under this execution id.
local cur = redis.call('HGET', KEYS[1], slot .. ':e')
if ARGV[7] ~= '' and cur == ARGV[7] then
  return {'OK', redis.call('HGET', KEYS[1], slot .. ':q'), redis.call('HGET', KEYS[1], slot), false, 0, false, false}
end
local ack = 'NONE'
if ARGV[2] ~= '' then
  if cur == ARGV[2] then
    local kind = ARGV[3]
    if kind == 'fail' then
      if not try('RPUSH', KEYS[8], ARGV[4]) then
        return {'BADFAILED', false, false, false, 0, badkeys(), false}
      end
      local keep = tonumber(ARGV[5])
      if keep > 0 then redis.call('LTRIM', KEYS[8], -keep, -1) end
    end
    redis.call('HDEL', KEYS[1], slot, slot .. ':q', slot .. ':e', slot .. ':r')
    redis.call('DEL', KEYS[2], KEYS[3])
    if kind == 'ok' then
      try('INCR', KEYS[4])
      try('INCR', KEYS[5])
    elseif kind == 'fail' or kind == 'failcount' then
      try('INCR', KEYS[6])
      try('INCR', KEYS[7])
    end
    ack = 'OK'
  else
    ack = 'LOST'
  end
end
if ARGV[6] ~= '1' then return {ack, false, false, false, 0, badkeys(), false} end
local member = redis.pcall('ZSCORE', KEYS[11], ARGV[11])
if type(member) == 'table' and member['err'] then
  report(KEYS[11])  -- no membership to check against: fetch (recovery would not find the job either way)
elseif not member then
  return {ack, false, false, false, 0, badkeys(), 'NOTMEMBER'}
end
local function park()
  local t = redis.call('TIME')
  try('ZADD', KEYS[10], 'NX', t[1] * 1000 + math.floor(t[2] / 1000), ARGV[11])
end
local nq = (#KEYS - 11) / 2
for i = 12, 11 + nq do
  local payload = try('LPOP', KEYS[i])
  if payload then
    if ARGV[12] == '1' then park() end
    local q = ARGV[i + 1]
    redis.call('HSET', KEYS[1], slot, payload, slot .. ':q', q, slot .. ':e', ARGV[7])
    -- a copy recovered from a dead node carries its count (corral:recovered: sha1 -> "n,n,...",
    -- newest first, as recovery LPUSHes the copies back to the head)
    if redis.call('EXISTS', KEYS[9]) == 1 then
      local sha = redis.sha1hex(payload)
      local counts = try('HGET', KEYS[9], sha)
      if counts then
        local sep = string.find(counts, ',', 1, true)
        local n = sep and string.sub(counts, 1, sep - 1) or counts
        if sep then redis.call('HSET', KEYS[9], sha, string.sub(counts, sep + 1)) else redis.call('HDEL', KEYS[9], sha) end
        redis.call('HSET', KEYS[1], slot .. ':r', n)
      end
    end
    local first = string.sub(payload, 1, 1)
    local body = payload
    if first ~= '{' and first ~= '[' then body = cjson.encode(payload) end
    redis.call('SET', KEYS[2], '{"run_at":' .. cjson.encode(ARGV[8]) .. ',"queue":' .. cjson.encode(q)
      .. ',"payload":' .. body .. ',"worker":' .. cjson.encode(ARGV[9]) .. '}')
    redis.call('SET', KEYS[3], ARGV[10])
    local qt = KEYS[i + nq]
    local enq = false
    local head = try('LINDEX', qt, 0)
    if head then
      local sep = string.find(head, ':', 1, true)
      local n = sep and tonumber(string.sub(head, 1, sep - 1))
      if n then
        enq = string.sub(head, sep + 1)
        if n <= 1 then redis.call('LPOP', qt) else redis.call('LSET', qt, 0, (n - 1) .. ':' .. enq) end
      end
    end
    -- producers that do not write qtimes (node-resque, LREM) desync it; an empty queue resets it
    local left = redis.call('LLEN', KEYS[i])
    if left == 0 then redis.call('DEL', qt) end
    return {ack, q, payload, enq, left, badkeys(), false}
  end
end
park()
return {ack, false, false, false, 0, badkeys(), false}
