-- Remove given jobs from one delayed second (Client.stop_recurrent_job / delete_delayed_by_task).
-- KEYS[1] delayed:<ts>   KEYS[2] delayed_queue_schedule
-- ARGV[1] ts   ARGV[2] "<namespace>:timestamps:" prefix   ARGV[3] "delayed:<ts>" member   ARGV[4..] payloads
-- returns how many copies were removed; the second leaves the schedule once its list is empty
-- (checked here, atomically: an enqueue_at landing meanwhile keeps it)
local n = 0
for i = 4, #ARGV do
  n = n + redis.call('LREM', KEYS[1], 0, ARGV[i])
  redis.call('SREM', ARGV[2] .. ARGV[i], ARGV[3])
end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return n
