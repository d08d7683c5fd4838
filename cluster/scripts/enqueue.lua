-- Enqueue jobs on one queue (resque layout) and wake idle Corral workers.
-- KEYS[1] queues set   KEYS[2] queue:<q> list   KEYS[3] corral:qtimes:<q>
-- KEYS[4] corral:idle:<q>   KEYS[5] corral:idle:*   (zsets node id -> ms it parked a slot on that spec)
-- ARGV[1] queue name   ARGV[2] broadcast wake channel   ARGV[3] node wake channel prefix ("...:wake:")
-- ARGV[4..] job payloads (RPUSH in order)
-- returns the queue length after the push. The enqueue time goes to qtimes as one "count:ms"
-- entry, so workers can report wait times and the metrics the oldest job's age.
-- Wake-up: up to 8 jobs wake the longest-idle nodes serving the queue (by name or '*'), one node per job, on the
-- node's own channel (a node that no longer listens, PUBLISH = 0, is skipped and forgotten);
-- a bigger batch wakes every node. A lone job thus costs one wake-up and one fetch, not one per
-- node; nodes that find no idle slot pass the wake-up on (node/worker.py).
-- A queue key that is not a list refuses the call with an error naming it (nothing written); the
-- queues set and the bookkeeping keys are best effort (a bad one never stops an enqueue).
-- Every command here is paid on each single enqueue (one call at a time is bounded by its round
-- trip): the push goes first, so a wrong-type queue fails before anything is written, with no TYPE
-- call on the good path.
local len = redis.pcall('RPUSH', KEYS[2], unpack(ARGV, 4))
if type(len) == 'table' and len['err'] then
  if string.sub(len['err'], 1, 9) ~= 'WRONGTYPE' then return len end  -- OOM, ...: as Redis said it
  local qtype = redis.call('TYPE', KEYS[2])['ok']
  return redis.error_reply('BADKEY ' .. KEYS[2] .. ' holds a ' .. qtype .. ', not a list: nothing enqueued')
end
redis.pcall('SADD', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local n = #ARGV - 3
-- epoch ms as text: the seconds, then the first 3 of the 6 zero-padded microsecond digits
redis.pcall('RPUSH', KEYS[3], n .. ':' .. t[1] .. string.sub('00000' .. t[2], -6, -4))
if n > 8 then
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return len
end
-- The longest idle of both zsets goes first: a node parked on the queue by name and one parked
-- on '*' compete on idle time, so lone jobs rotate over all of them (taking the named zset
-- first sent every lone job to the one node that named the queue).
if redis.call('EXISTS', KEYS[4], KEYS[5]) == 0 then return len end  -- no idle node: every slot is busy
local woken, tries = 0, 0
-- A wrong-type idle zset is skipped (best effort: a wake-up is an optimisation, polling finds the job).
local function head(k)
  local r = redis.pcall('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  if type(r) ~= 'table' or r['err'] then return {} end
  return r
end
while woken < n and tries < n + 8 do
  local a, b = head(4), head(5)
  local k
  if #a == 0 and #b == 0 then break end
  if #b == 0 or (#a > 0 and tonumber(a[2]) <= tonumber(b[2])) then k = 4 else k = 5 end
  local top = redis.call('ZPOPMIN', KEYS[k])
  tries = tries + 1
  if redis.call('PUBLISH', ARGV[3] .. top[1], ARGV[1]) > 0 then woken = woken + 1 end
end
return len
