-- Leader only (fenced): remove a stale worker of another resque client (node-resque, Ruby,
-- pyres) and fail or re-enqueue the job it was working on, as node-resque's scheduler does
-- (forceCleanWorker, then retryStuckJobs when asked). The worker was judged stale on the exact
-- liveness values passed here: if any of them changed since (a ping, a heartbeat, a new job),
-- it showed life and is left alone.
-- KEYS[1] leader lock   KEYS[2] corral:audit   KEYS[3] workers set   KEYS[4] workers:heartbeat
-- KEYS[5] worker:<wid> (working-on)   KEYS[6] worker:ping:<name>   KEYS[7] stat:failed
-- KEYS[8] failed list   KEYS[9] queues set   KEYS[10] queue:<q> (or any key when no job)
-- KEYS[11] corral:qtimes:<q>   KEYS[12..] other keys the worker left (started, per-worker stats)
-- ARGV[1] token   ARGV[2] audit   ARGV[3] epoch   ARGV[4] wid ("<name>:<queues>")
-- ARGV[5] ping value judged ("" = none)   ARGV[6] heartbeat value judged ("" = none)
-- ARGV[7] working-on value judged ("" = none)   ARGV[8] "fail" / "retry"
-- ARGV[9] failed entry (policy fail, or a job that cannot be re-enqueued)   ARGV[10] job payload to
-- re-enqueue ("" = none)   ARGV[11] queue name   ARGV[12] wake channel
-- returns {"OK", "failed" | "retried" | "idle"} or {"ALIVE"} or {"STALE"}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'STALE'} end
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 0 then return {'ALIVE'} end
if (redis.call('GET', KEYS[6]) or '') ~= ARGV[5]
    or (redis.call('HGET', KEYS[4], ARGV[4]) or '') ~= ARGV[6]
    or (redis.call('GET', KEYS[5]) or '') ~= ARGV[7] then
  return {'ALIVE'}
end
redis.call('SREM', KEYS[3], ARGV[4])
redis.call('HDEL', KEYS[4], ARGV[4])
redis.call('DEL', KEYS[5], KEYS[6])
for i = 12, #KEYS do redis.call('DEL', KEYS[i]) end
local outcome = 'idle'
if ARGV[7] ~= '' then
  redis.call('INCR', KEYS[7])  -- as node-resque's forceCleanWorker
  if ARGV[8] == 'retry' and ARGV[10] ~= '' then
    redis.call('SADD', KEYS[9], ARGV[11])
    redis.call('LPUSH', KEYS[10], ARGV[10])
    local t = redis.call('TIME')
    redis.call('LPUSH', KEYS[11], '1:' .. (t[1] * 1000 + math.floor(t[2] / 1000)))
    redis.call('PUBLISH', ARGV[12], ARGV[11])
    outcome = 'retried'
  else
    redis.call('RPUSH', KEYS[8], ARGV[9])
    outcome = 'failed'
  end
end
if ARGV[2] == '1' then
  local t = redis.call('TIME')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'op', 'foreign_clean', 'epoch', ARGV[3], 'token', ARGV[1],
    'redis_time_us', t[1] * 1000000 + t[2], 'detail', ARGV[4] .. ':' .. outcome)
end
return {'OK', outcome}
