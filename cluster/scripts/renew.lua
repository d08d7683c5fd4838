-- Compare-and-extend: only the holder of this exact token may extend the lease.
-- KEYS[1] leader lock   ARGV[1] token   ARGV[2] lease ms
-- returns 1 if extended, 0 if the lock is not ours any more
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
