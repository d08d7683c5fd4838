-- Queue names and lengths, in one call whatever the number of queue names.
-- mode "active": the queue list of `*` workers, the non-empty queues in name order (a `*` slot
--   passes its list to every fetch; with thousands of empty names in `queues` that list made each
--   fetch thousands of LPOPs);
-- mode "all": every name with its length and the qtimes head of the non-empty ones, for the
--   metrics (10,000 pipelined LLEN/LINDEX for 5,000 names held a node's loop).
-- A queue key that is not a list counts as empty and is reported. Mode "all" also deletes the
-- qtimes list of an empty queue (other resque clients pop without touching it; Corral-only key);
-- non-empty ones are trimmed by qtimes_head.lua. Mode "active" writes nothing.
-- KEYS[1] queues set   ARGV[1] queue key prefix ("<ns>:queue:")   ARGV[2] qtimes key prefix
-- ARGV[3] mode "active"/"all"   ARGV[4..] names to read instead of the set's members (when the
-- set itself is not a set: the caller found them by SCAN)
-- returns {names, lengths and qtimes heads (mode all; a head is false for an empty queue), bad keys
-- "key\ttype" lines or false, type of KEYS[1] when it is not a set else false}
local names
if #ARGV >= 4 then
  names = {}
  for i = 4, #ARGV do names[i - 3] = ARGV[i] end
else
  local t = redis.call('TYPE', KEYS[1])['ok']
  if t ~= 'set' and t ~= 'none' then return {{}, {}, {}, false, t} end
  names = redis.call('SMEMBERS', KEYS[1])
end
local all = ARGV[3] == 'all'
local out, lens, heads, bad = {}, {}, {}, {}
for _, q in ipairs(names) do
  local key = ARGV[1] .. q
  local n = redis.pcall('LLEN', key)
  if type(n) == 'table' then
    table.insert(bad, key .. '\t' .. redis.call('TYPE', key)['ok'])
    n = 0
  end
  if all then
    table.insert(out, q)
    table.insert(lens, n)
    local h = false
    if n > 0 then h = redis.pcall('LINDEX', ARGV[2] .. q, 0) else redis.pcall('DEL', ARGV[2] .. q) end
    table.insert(heads, type(h) == 'string' and h or false)
  elseif n > 0 then
    table.insert(out, q)
  end
end
if not all then table.sort(out) end
if #bad == 0 then bad = false else bad = table.concat(bad, '\n') end
return {out, lens, heads, bad, false}
