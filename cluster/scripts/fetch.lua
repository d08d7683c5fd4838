-- Ack the slot's previous job (optional) and fetch the next one, in one atomic step.
-- The popped job is recorded in the node's in-flight hash in the same step, so a node that dies
-- mid-job leaves it where the leader's recovery finds it: nothing is popped and forgotten.
-- KEYS[1] corral:inflight:<node>   KEYS[2] worker:<name>:<queues>   KEYS[3] ...:started
-- KEYS[4] stat:processed   KEYS[5] stat:processed:<name>   KEYS[6] stat:failed   KEYS[7] stat:failed:<name>
-- KEYS[8] failed list   KEYS[9] corral:recovered   KEYS[10] corral:idle:<slot's queue spec>
-- KEYS[11..] queue:<q> lists, in priority order, then their corral:qtimes:<q> keys in the same order
-- ARGV[1] slot   ARGV[2] exec id of the job being acked ("" = no ack)
-- ARGV[3] ack kind: "ok" (processed), "fail" (failed + entry), "failcount" (failed, no entry: a
--         retried attempt), "drop" (no stats: a before_perform hook refused it)
-- ARGV[4] failed entry ("" unless fail)   ARGV[5] keep at most this many failed entries (0 = all)
-- ARGV[6] fetch? "1"/"0"   ARGV[7] new exec id   ARGV[8] run_at string   ARGV[9] worker name
-- ARGV[10] started (epoch seconds)   ARGV[11] node id   ARGV[12] "1" when another slot of this node
-- is parked on the same spec   ARGV[13..] queue names matching KEYS[11..]
-- A slot that finds nothing (it is about to park), or gets a job while a sibling stays parked,
-- files its node in the idle zset (ZADD NX keeps the earliest time: enqueuers wake the longest idle).
-- returns {ack_status, queue or false, payload or false, enqueued ms or false, jobs left}; ack_status "OK", "LOST" (recovery took
-- the job from us: nothing written) or "NONE" (no ack asked)
local slot = ARGV[1]
-- A retry of a call whose reply was lost: the job was already recorded under this execution id.
local cur = redis.call('HGET', KEYS[1], slot .. ':e')
if ARGV[7] ~= '' and cur == ARGV[7] then
  return {'OK', redis.call('HGET', KEYS[1], slot .. ':q'), redis.call('HGET', KEYS[1], slot), false}
end
local ack = 'NONE'
if ARGV[2] ~= '' then
  if cur == ARGV[2] then
    if redis.call('HLEN', KEYS[9]) > 0 then
      redis.call('HDEL', KEYS[9], redis.sha1hex(redis.call('HGET', KEYS[1], slot) or ''))
    end
    redis.call('HDEL', KEYS[1], slot, slot .. ':q', slot .. ':e')
    redis.call('DEL', KEYS[2], KEYS[3])
    local kind = ARGV[3]
    if kind == 'ok' then
      redis.call('INCR', KEYS[4])
      redis.call('INCR', KEYS[5])
    elseif kind == 'fail' or kind == 'failcount' then
      redis.call('INCR', KEYS[6])
      redis.call('INCR', KEYS[7])
      if kind == 'fail' then
        redis.call('RPUSH', KEYS[8], ARGV[4])
        local keep = tonumber(ARGV[5])
        if keep > 0 then redis.call('LTRIM', KEYS[8], -keep, -1) end
      end
    end
    ack = 'OK'
  else
    ack = 'LOST'
  end
end
if ARGV[6] ~= '1' then return {ack, false, false, false} end
local function park()
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[10], 'NX', t[1] * 1000 + math.floor(t[2] / 1000), ARGV[11])
end
local nq = (#KEYS - 10) / 2
for i = 11, 10 + nq do
  local payload = redis.call('LPOP', KEYS[i])
  if payload then
    if ARGV[12] == '1' then park() end
    local q = ARGV[i + 2]
    redis.call('HSET', KEYS[1], slot, payload, slot .. ':q', q, slot .. ':e', ARGV[7])
    local first = string.sub(payload, 1, 1)
    local body = payload
    if first ~= '{' and first ~= '[' then body = cjson.encode(payload) end
    redis.call('SET', KEYS[2], '{"run_at":' .. cjson.encode(ARGV[8]) .. ',"queue":' .. cjson.encode(q)
      .. ',"payload":' .. body .. ',"worker":' .. cjson.encode(ARGV[9]) .. '}')
    redis.call('SET', KEYS[3], ARGV[10])
    local qt = KEYS[i + nq]
    local enq = false
    local head = redis.call('LINDEX', qt, 0)
    if head then
      local sep = string.find(head, ':', 1, true)
      local n = tonumber(string.sub(head, 1, sep - 1))
      enq = string.sub(head, sep + 1)
      if n <= 1 then redis.call('LPOP', qt) else redis.call('LSET', qt, 0, (n - 1) .. ':' .. enq) end
    end
    -- producers that do not write qtimes (node-resque, LREM) desync it; an empty queue resets it
    local left = redis.call('LLEN', KEYS[i])
    if left == 0 then redis.call('DEL', qt) end
    return {ack, q, payload, enq, left}
  end
end
park()
return {ack, false, false, false}
