-- Schedule one job at an epoch second (resque-scheduler / node-resque layout).
-- KEYS[1] delayed_queue_schedule zset   KEYS[2] delayed:<ts> list   KEYS[3] timestamps:<payload> set
-- ARGV[1] ts (integer seconds)   ARGV[2] payload   ARGV[3] "delayed:<ts>"   ARGV[4] wake channel
-- returns 1. Publishes on the wake channel when this second becomes the earliest due second,
-- so a sleeping leader wakes early instead of polling.
-- A key of the wrong type refuses the whole call with an error naming it: nothing is written.
local want = {'zset', 'list', 'set'}
for i = 1, 3 do
  local ty = redis.call('TYPE', KEYS[i])['ok']
  if ty ~= want[i] and ty ~= 'none' then
    return redis.error_reply('BADKEY ' .. KEYS[i] .. ' holds a ' .. ty .. ', not a ' .. want[i] .. ': nothing scheduled')
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
if first[2] == nil or tonumber(ARGV[1]) < tonumber(first[2]) then
  redis.call('PUBLISH', ARGV[4], ARGV[1])
end
return 1
