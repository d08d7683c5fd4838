-- Leave the cluster cleanly: drop membership, worker records and the node's bookkeeping.
-- If jobs are still recorded in flight (a drain that could not push back), nothing is removed:
-- the node then looks dead after its heartbeat stops and the leader recovers those jobs.
-- KEYS[1] corral:members   KEYS[2] corral:node:<id>   KEYS[3] corral:inflight:<id>   KEYS[4] workers set
-- KEYS[5] workers:heartbeat hash
-- KEYS[6..] worker keys to delete (working-on, started, ping, per-worker stats)
-- ARGV[1] node id   ARGV[2..] workers set members
-- returns the number of in-flight entries still recorded (0 = cleanly removed)
local left = redis.call('HLEN', KEYS[3])
if left > 0 then return left end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
if #ARGV >= 2 then
  redis.call('SREM', KEYS[4], unpack(ARGV, 2))
  redis.call('HDEL', KEYS[5], unpack(ARGV, 2))
end
for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
return 0
