-- Try to become Corral's leader: SET NX PX of Corral's lock with a token never used before, and
-- start a new epoch; the new leader also takes node-resque's lock (delayed promotion) if it is free.
-- KEYS[1] corral:leader_lock   KEYS[2] corral:epoch   KEYS[3] corral:leader hash
-- KEYS[4] corral:epoch_run (the Redis run_id the epoch record was last checked against)
-- KEYS[5] resque_scheduler_leader_lock
-- ARGV[1] node id   ARGV[2] random suffix   ARGV[3] lease ms   ARGV[4] since (epoch seconds)
-- ARGV[5] lease - margin, ms: the longest an old leader may still act after its last renew was sent
-- returns {1, epoch, token, 1 if it took the resque lock too else 0} when acquired,
-- {0, pttl, holder} otherwise
--
-- A new Redis run (a restart, a restore from RDB/AOF, a failed-over primary: its run_id differs
-- from the one stored, or the epoch record is gone) cannot prove that the previous lease is over:
-- the lock may have been lost with the data while its holder still counts on it until its
-- deadline, at most lease - margin after its last renew, which was sent before this run started.
-- So the first look at the lock in a new run (Chubby's lock-delay):
--   * lock absent: holds it for one lease with a placeholder nobody can renew, as if it had been
--     renewed when the run started (a normal expiry's margin over the old deadline); the old
--     leader's next renew fails on it, so it learns of the loss;
--   * lock present (restored; its holder's later renewals may be lost): makes it live at least
--     until the latest deadline its holder can have; a holder that reconnects renews it anyway;
--   * the epoch counter is raised to at least Redis' time in ms, so a counter restored from an
--     older snapshot never reissues an epoch (epochs grow by one per term, far slower than 1/ms).
-- Both waits count from the run's start: a run older than them waits for nothing.
-- Inside one run the lock's expiry or release proves the lease over: the normal path below.
-- INFO is an ACL @dangerous command: a user denied it still elects safely after a wipe (no epoch
-- record = a new run), but cannot see a restore or a failover (grant it `+info`). Asked first
-- (Redis 7's acl_check_cmd), so a denial never fills the ACL log.
local has_info, server = true, nil
if redis.acl_check_cmd then has_info = redis.acl_check_cmd('info', 'server') end
if has_info then has_info, server = pcall(redis.call, 'INFO', 'server') end
local run = has_info and string.match(server, 'run_id:(%w+)') or nil
local holder = redis.call('GET', KEYS[1])
local new_run = redis.call('EXISTS', KEYS[2]) == 0
if run and redis.call('GET', KEYS[4]) ~= run then new_run = true end
if new_run then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local stored = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  redis.call('SET', KEYS[2], string.format('%d', math.max(stored, now_ms)))
  if run then redis.call('SET', KEYS[4], run) end
  -- A server that never took over from another primary (second_repl_offset -1) knows when its
  -- data began: the waits shrink by its uptime (whole seconds, rounded down: never too short). A
  -- promoted replica's data changed at promotion, not at its start: it waits in full.
  local up = 0
  if has_info and string.match(redis.call('INFO', 'replication'), 'second_repl_offset:(-?%d+)') == '-1' then
    up = 1000 * tonumber(string.match(server, 'uptime_in_seconds:(%d+)'))
  end
  if holder then
    local keep = math.ceil(tonumber(ARGV[5]) - up)
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl >= 0 and pttl < keep then
      redis.call('PEXPIRE', KEYS[1], keep)
      pttl = keep
    end
    return {0, pttl, holder}
  end
  local delay = math.ceil(tonumber(ARGV[3]) - up)
  if delay > 0 then
    local placeholder = 'corral-lock-delay/' .. (run or 'new-run')
    redis.call('SET', KEYS[1], placeholder, 'PX', delay)
    redis.call('DEL', KEYS[3])
    return {0, delay, placeholder}
  end
end
if holder then return {0, redis.call('PTTL', KEYS[1]), holder} end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. '/' .. epoch .. '/' .. ARGV[2]
redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'node', ARGV[1], 'epoch', epoch, 'since', ARGV[4], 'token', token)
local promotes = 0
if redis.call('SET', KEYS[5], token, 'NX', 'PX', ARGV[3]) then promotes = 1 end
return {1, epoch, token, promotes}
