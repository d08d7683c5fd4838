-- Membership heartbeat: stamp this node with Redis' own time (one clock for every node), refresh
-- the liveness signals other resque clients read (node-resque's ping keys, Ruby resque's
-- `workers:heartbeat` hash), and put back any worker record another client's cleanup removed
-- while this node is alive (node-resque's cleanOldWorkers, pyres' prune).
-- KEYS[1] corral:members zset   KEYS[2] corral:node:<id> hash   KEYS[3] workers set
-- KEYS[4] workers:heartbeat hash   KEYS[5..4+n] worker:ping:<name> keys
-- ARGV[1] node id   ARGV[2] info JSON   ARGV[3] ping TTL ms   ARGV[4] heartbeat time (ISO 8601)
-- ARGV[5..4+n] ping values (match KEYS[5..])   ARGV[5+n..4+2n] workers set members (same order)
-- returns {was_member 0/1, redis time ms, worker records put back}
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ms, ARGV[1])
-- informational and best effort: a key of the wrong type never stops a heartbeat
redis.pcall('HSET', KEYS[2], 'info', ARGV[2])
local n = #KEYS - 4
local back = 0
for i = 1, n do
  redis.call('SET', KEYS[4 + i], ARGV[4 + i], 'PX', ARGV[3])
  local member = ARGV[4 + n + i]
  if member then
    local added = redis.pcall('SADD', KEYS[3], member)
    if type(added) == 'number' then back = back + added end
    redis.pcall('HSET', KEYS[4], member, ARGV[4])
  end
end
if was then return {1, ms, back} end
return {0, ms, back}
