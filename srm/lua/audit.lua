-- audit: check account counters and rule counters against what they count, repair drift.
--
-- for account i (i = 1..n): KEYS[3i-2] active  srm:{sK}:acct:<a>:active
--                           KEYS[3i-1] count   srm:{sK}:acct:<a>:count
--                           KEYS[3i]   rules   srm:{sK}:acct:<a>:rules
-- (all accounts of one call live in the same shard)
-- The truth of a rule counter is the number of ACTIVE sessions whose recorded groups (the
-- sessionId fields of the rules hash) name it; a sessionId field of a session that is not
-- active is dropped. Returns a flat list {i, counter before, ZCARD, rule repairs} for every
-- account with any repair.
local repaired = {}
for i = 1, #KEYS / 3 do
  local active, count, rules = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local truth = redis.call('ZCARD', active)
  local counter = tonumber(redis.call('GET', count) or '0') or -1
  local account_fixed = counter ~= truth
  if account_fixed then
    if truth == 0 then
      redis.call('DEL', count)
    else
      redis.call('SET', count, truth)
    end
  end
  local want, have, fixes = {}, {}, 0
  local fields = redis.call('HGETALL', rules)
  for j = 1, #fields, 2 do
    local field, value = fields[j], fields[j + 1]
    if string.find(field, ':', 1, true) then
      have[field] = tonumber(value) or -1
    elseif redis.call('ZSCORE', active, field) then
      for _, group in ipairs(rule_groups(value)) do
        want[group] = (want[group] or 0) + 1
      end
    else
      redis.call('HDEL', rules, field)
      fixes = fixes + 1
    end
  end
  for group, n in pairs(have) do
    if want[group] ~= n then
      fixes = fixes + 1
      if want[group] then
        redis.call('HSET', rules, group, want[group])
      else
        redis.call('HDEL', rules, group)
      end
    end
  end
  for group, n in pairs(want) do
    if have[group] == nil then
      fixes = fixes + 1
      redis.call('HSET', rules, group, n)
    end
  end
  if account_fixed or fixes > 0 then
    table.insert(repaired, i)
    table.insert(repaired, counter)
    table.insert(repaired, truth)
    table.insert(repaired, fixes)
  end
end
return repaired
