-- Compare-and-delete Corral's lock (and node-resque's lock if it holds our token), and tell the
-- candidates at once (sub-second handoff).
-- KEYS[1] corral:leader_lock   KEYS[2] corral:leader hash   KEYS[3] resque_scheduler_leader_lock
-- ARGV[1] token   ARGV[2] released channel
-- returns 1 if released, 0 if it was not ours
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
