-- Make one delayed copy of a job due now: move it from its second to `now` (same bytes), so the
-- leader promotes it at once through its usual fenced path (enqueue plugins included).
-- KEYS[1] delayed:<ts>   KEYS[2] delayed:<now>   KEYS[3] timestamps:<payload>   KEYS[4] delayed_queue_schedule
-- ARGV[1] payload   ARGV[2] ts   ARGV[3] now (integer seconds, <= ts)   ARGV[4] "delayed:<ts>"
-- ARGV[5] "delayed:<now>"   ARGV[6] wake channel
-- returns 1 if moved, 0 if that copy is no longer there (promoted or deleted meanwhile)
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[4], ARGV[2])
end
if not redis.call('LPOS', KEYS[1], ARGV[1]) then
  redis.call('SREM', KEYS[3], ARGV[4])
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[3])
return 1
