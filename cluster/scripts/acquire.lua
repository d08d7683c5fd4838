-- Try to become leader: SET NX PX with a token never used before, and start a new epoch.
-- The epoch is the fencing number of the term. If Redis lost the epoch key (restart without
-- data), it restarts from Redis' time in ms, so epochs never go backwards.
-- KEYS[1] resque_scheduler_leader_lock   KEYS[2] corral:epoch   KEYS[3] corral:leader hash
-- ARGV[1] node id   ARGV[2] random suffix   ARGV[3] lease ms   ARGV[4] since (epoch seconds)
-- returns {1, epoch, token} when acquired, {0, pttl, holder} otherwise
local holder = redis.call('GET', KEYS[1])
if holder then return {0, redis.call('PTTL', KEYS[1]), holder} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000))
end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. '/' .. epoch .. '/' .. ARGV[2]
redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'node', ARGV[1], 'epoch', epoch, 'since', ARGV[4], 'token', token)
return {1, epoch, token}
