-- audit: check account counters against their active sets and repair any drift.
--
-- for account i (i = 1..n): KEYS[2i-1] active  srm:{sK}:acct:<a>:active
--                           KEYS[2i]   count   srm:{sK}:acct:<a>:count
-- (all accounts of one call live in the same shard)
-- Returns a flat list {i, counter before, ZCARD} for every account repaired.
local repaired = {}
for i = 1, #KEYS / 2 do
  local active, count = KEYS[2 * i - 1], KEYS[2 * i]
  local truth = redis.call('ZCARD', active)
  local counter = tonumber(redis.call('GET', count) or '0') or -1
  if counter ~= truth then
    if truth == 0 then
      redis.call('DEL', count)
    else
      redis.call('SET', count, truth)
    end
    table.insert(repaired, i)
    table.insert(repaired, counter)
    table.insert(repaired, truth)
  end
end
return repaired
