-- Keep corral:qtimes:<q> true to its queue whoever consumes it, and return its head (the oldest
-- job's "count:ms"). Other resque clients pop jobs Corral enqueued without touching qtimes, so
-- its oldest entries can outlive their jobs: a correct list has at most one entry per job left,
-- so entries beyond LLEN(queue) are cut from the head (bounded whatever the consumers), then up to
-- ARGV[1] entries are summed from the tail and everything older than the queue's length is cut
-- (exact while the list is no longer than that; otherwise only bounded).
-- KEYS[1] queue:<q>   KEYS[2] corral:qtimes:<q>   ARGV[1] most entries to sum
-- returns the head entry after trimming, or false
local len = redis.call('LLEN', KEYS[1])
local n = redis.call('LLEN', KEYS[2])
if n == 0 then return false end
if len == 0 then
  redis.call('DEL', KEYS[2])
  return false
end
if n > len then
  redis.call('LTRIM', KEYS[2], -len, -1)
  n = len
end
local cap = tonumber(ARGV[1])
if n <= cap then
  local entries = redis.call('LRANGE', KEYS[2], 0, -1)
  local sum = 0
  for i = n, 1, -1 do
    local e = entries[i]
    local sep = string.find(e, ':', 1, true)
    local c = tonumber(string.sub(e, 1, sep - 1)) or 1
    if sum + c >= len then
      if sum + c > len then redis.call('LSET', KEYS[2], i - 1, (len - sum) .. ':' .. string.sub(e, sep + 1)) end
      if i > 1 then redis.call('LTRIM', KEYS[2], i - 1, -1) end
      break
    end
    sum = sum + c
  end
end
return redis.call('LINDEX', KEYS[2], 0)
