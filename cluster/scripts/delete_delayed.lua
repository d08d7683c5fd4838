-- Remove every delayed copy of one exact job; clean buckets left empty.
-- KEYS[1] timestamps:<payload> set   KEYS[2] delayed_queue_schedule
-- ARGV[1] payload   ARGV[2] namespace prefix
-- returns {copies removed, epoch seconds the job was scheduled at...}
local ttype = redis.call('TYPE', KEYS[1])['ok']
if ttype ~= 'set' and ttype ~= 'none' then
  return redis.error_reply('BADKEY ' .. KEYS[1] .. ' holds a ' .. ttype .. ', not a set: nothing removed')
end
local members = redis.call('SMEMBERS', KEYS[1])
local out = {0}
for _, m in ipairs(members) do
  local list = ARGV[2] .. m
  local ts = string.sub(m, 9)
  local n = redis.pcall('LREM', list, 0, ARGV[1])  -- a bucket that is not a list is left alone
  if type(n) == 'number' then out[1] = out[1] + n end
  if type(n) == 'number' and redis.call('LLEN', list) == 0 then
    redis.call('DEL', list)
    redis.pcall('ZREM', KEYS[2], ts)
  end
  table.insert(out, ts)
end
redis.call('DEL', KEYS[1])
return out
