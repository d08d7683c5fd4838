-- ZooKeeper backend: install the ZooKeeper-elected term as Corral's Redis lock, so the Redis-side
-- fencing (GET lock == token) guards the same scripts, and keep (or take, when free) node-resque's
-- lock for delayed promotion. A term older than the newest one installed is refused. Also used to
-- renew: the same token re-installed extends the lease.
-- KEYS[1] corral:leader_lock   KEYS[2] corral:zk_epoch   KEYS[3] corral:leader hash
-- KEYS[4] resque_scheduler_leader_lock
-- ARGV[1] node id   ARGV[2] token   ARGV[3] epoch   ARGV[4] lease ms   ARGV[5] since
-- returns 0 if a newer term exists; else 2 if the resque lock holds our token, 1 if another
-- scheduler (node-resque) holds it
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = tonumber(ARGV[3])
if epoch < cur then return 0 end
if epoch == cur and redis.call('GET', KEYS[1]) ~= ARGV[2] and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[2], epoch)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
if epoch > cur then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'node', ARGV[1], 'epoch', epoch, 'since', ARGV[5], 'token', ARGV[2])
end
local resque = redis.call('GET', KEYS[4])
if resque and resque ~= ARGV[2] then
  local _, e = string.match(resque, '^(.+)/(%d+)/[^/]+$')
  -- an older Corral term's token (a ZooKeeper handoff): ours now; anything else is another scheduler's
  if not e or tonumber(e) >= epoch then return 1 end
end
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[4])
return 2
