-- enqueue.lua behind enqueue guards (guards.lua): used for jobs whose task has guarded enqueue
-- plugins (QueueLock, DelayQueueLock); the guards' effects and the push are one atomic step.
-- KEYS[1..5] and ARGV as enqueue.lua, then KEYS[6..] guard keys and the guard specs at the end of
-- ARGV. Returns -1 when a guard refused the job (nothing written), else enqueue.lua's result.
--#include guards
local guards = take_guards(6)
local gqtype = redis.call('TYPE', KEYS[2])['ok']
if gqtype ~= 'list' and gqtype ~= 'none' then  -- checked before the guards write anything
  return redis.error_reply('BADKEY ' .. KEYS[2] .. ' holds a ' .. gqtype .. ', not a list: nothing enqueued')
end
if not guards_pass(guards, tonumber(redis.call('TIME')[1])) then return -1 end
guards_apply(guards)
--#include enqueue
