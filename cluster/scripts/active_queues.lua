-- The queues a `*` worker should try, read-only: the non-empty ones, in name order.
-- A `*` slot passes its queue list to every fetch; with thousands of empty queue names in
-- `queues` that list made each fetch thousands of LPOPs. Workers refresh this list every poll
-- interval (and at once when a producer announces a queue they do not list).
-- KEYS[1] queues set   ARGV[1] queue key prefix ("<ns>:queue:")   ARGV[2..] names to check instead of
-- the set's members (when the set itself is not a set: the caller found them by SCAN)
-- returns {non-empty names sorted, bad keys "key\ttype" lines or false, type of KEYS[1] when not a set, else false}
local names
if #ARGV >= 2 then
  names = {}
  for i = 2, #ARGV do names[i - 1] = ARGV[i] end
else
  local t = redis.call('TYPE', KEYS[1])['ok']
  if t ~= 'set' and t ~= 'none' then return {{}, false, t} end
  names = redis.call('SMEMBERS', KEYS[1])
end
local out, bad = {}, {}
for _, q in ipairs(names) do
  local key = ARGV[1] .. q
  local n = redis.pcall('LLEN', key)
  if type(n) == 'table' then
    table.insert(bad, key .. '\t' .. redis.call('TYPE', key)['ok'])
  elseif n > 0 then
    table.insert(out, q)
  end
end
table.sort(out)
if #bad == 0 then bad = false else bad = table.concat(bad, '\n') end
return {out, bad, false}
