-- Enqueue guards (cluster/plugins.py `EnqueueGuard`): the effect of an enqueue hook (QueueLock's
-- lock, DelayQueueLock's "not delayed" check) checked and applied in the same atomic step as the
-- job's move, so a move that never happens leaves no lock behind and a retried move finds none.
-- Included by enqueue_guarded.lua and unstage.lua. The specs are taken off the END of ARGV
-- (`..., kind, value, ttl, ..., n`), their keys are KEYS[first .. first + n - 1].
-- kind "lock": refused while the key holds a value whose leading integer (node-resque's expiry
-- second) is >= now, else SET value EX ttl; kind "absent": refused while the key exists.
local function take_guards(first)
  local n = tonumber(table.remove(ARGV)) or 0
  local g = {}
  for i = n, 1, -1 do
    local ttl = table.remove(ARGV)
    local value = table.remove(ARGV)
    local kind = table.remove(ARGV)
    g[i] = {kind = kind, key = KEYS[first + i - 1], value = value, ttl = tonumber(ttl)}
  end
  return g
end
local function guards_pass(g, now)
  for _, x in ipairs(g) do
    if x.kind == 'absent' then
      if redis.call('EXISTS', x.key) == 1 then return false end
    elseif x.kind == 'lock' then
      local v = redis.pcall('GET', x.key)
      if type(v) == 'table' then return false end  -- a key of another type holds the place: refused
      if v and now <= (tonumber(string.match(v, '^%s*([+-]?%d+)')) or 0) then return false end
    end
  end
  return true
end
local function guards_apply(g)
  for _, x in ipairs(g) do
    if x.kind == 'lock' then redis.call('SET', x.key, x.value, 'EX', x.ttl) end
  end
end
