-- ZooKeeper backend: install the ZooKeeper-elected term as the Redis lock, so the Redis-side
-- fencing (GET lock == token) guards the same scripts. A term older than the newest one
-- installed is refused. Also used to renew: the same token re-installed extends the lease.
-- KEYS[1] leader lock   KEYS[2] corral:zk_epoch   KEYS[3] corral:leader hash
-- ARGV[1] node id   ARGV[2] token   ARGV[3] epoch   ARGV[4] lease ms   ARGV[5] since
-- returns 1 if installed / extended, 0 if a newer term exists
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
return 1
