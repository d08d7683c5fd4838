-- Resume a stopped periodic task from its next occurrence (Client.enqueue_recurrent_job).
-- KEYS[1] corral:periodic:<task>
-- While paused, the leader's claims were refused but its record stayed at the last claimed slot,
-- so a plain resume would back-fill every occurrence of the pause (within the catch-up window).
-- Moving `last` to now (Redis time) makes those slots at-or-before-last: never enqueued.
-- returns 1 if the task was paused, 0 if it was running
if redis.call('HGET', KEYS[1], 'paused') ~= '1' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0') or 0
if now > last then redis.call('HSET', KEYS[1], 'last', string.format('%.6f', now)) end
redis.call('HDEL', KEYS[1], 'paused')
return 1
