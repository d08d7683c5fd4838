-- Compare-and-extend Corral's lock; keep (or take, when free) node-resque's lock for promotion.
-- KEYS[1] corral:leader_lock   KEYS[2] resque_scheduler_leader_lock   ARGV[1] token   ARGV[2] lease ms
-- returns 0 if Corral's lock is not ours any more; else 2 if the resque lock holds our token
-- (kept or just taken), 1 if another scheduler (node-resque) holds it
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local resque = redis.call('GET', KEYS[2])
if resque == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 2
end
if not resque then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 1
