-- Queue lengths for the metrics, in one call whatever the number of queue names
-- (10,000 pipelined LLEN/LINDEX for 5,000 names held a node's loop for a fraction of a second).
-- KEYS[1] queues set   ARGV[1] queue key prefix ("<ns>:queue:")   ARGV[2] qtimes key prefix
-- ARGV[3..] names to read instead of the set's members (when the set itself is not a set)
-- The qtimes list of an empty queue is deleted (other resque clients pop without touching it);
-- non-empty ones are trimmed by qtimes_head.lua.
-- returns {names, lengths (0 for a key that is not a list), qtimes heads of non-empty queues
-- (false otherwise), bad keys "key\ttype" lines or false, type of KEYS[1] when not a set else false}
local names
if #ARGV >= 3 then
  names = {}
  for i = 3, #ARGV do names[i - 2] = ARGV[i] end
else
  local t = redis.call('TYPE', KEYS[1])['ok']
  if t ~= 'set' and t ~= 'none' then return {{}, {}, {}, false, t} end
  names = redis.call('SMEMBERS', KEYS[1])
end
local lens, heads, bad = {}, {}, {}
for i, q in ipairs(names) do
  local key = ARGV[1] .. q
  local n = redis.pcall('LLEN', key)
  if type(n) == 'table' then
    table.insert(bad, key .. '\t' .. redis.call('TYPE', key)['ok'])
    n = 0
  end
  lens[i] = n
  heads[i] = false
  if n == 0 then
    -- an empty queue has no oldest job: entries left by other clients' pops go (Corral-only key)
    redis.pcall('DEL', ARGV[2] .. q)
  else
    local h = redis.pcall('LINDEX', ARGV[2] .. q, 0)
    if type(h) == 'string' then heads[i] = h end
  end
end
if #bad == 0 then bad = false else bad = table.concat(bad, '\n') end
return {names, lens, heads, bad, false}
