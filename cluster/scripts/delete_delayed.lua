-- Remove every delayed copy of one exact job; clean buckets left empty.
-- KEYS[1] timestamps:<payload> set   KEYS[2] delayed_queue_schedule
-- ARGV[1] payload   ARGV[2] namespace prefix
-- returns {copies removed, epoch seconds the job was scheduled at...}
local members = redis.call('SMEMBERS', KEYS[1])
local out = {0}
for _, m in ipairs(members) do
  local list = ARGV[2] .. m
  out[1] = out[1] + redis.call('LREM', list, 0, ARGV[1])
  local ts = string.sub(m, 9)
  if redis.call('LLEN', list) == 0 then
    redis.call('DEL', list)
    redis.call('ZREM', KEYS[2], ts)
  end
  table.insert(out, ts)
end
redis.call('DEL', KEYS[1])
return out
