-- audit: check account counters, rule counters and due scores against what they count,
-- repair drift.
--
-- KEYS[1..8] the shard's keys (AccountKeys.shard_keys, _account.lua)
-- for account i (i = 1..n): its own keys (AccountKeys.own, nth_account), its id
-- ARGV[i] (all accounts of one call live in the shard)
-- The truth of the account counter is the number of ACTIVE records; of a rule counter, the
-- number of ACTIVE sessions whose groups name it (for a distinct count, of the distinct
-- devices or networks among them, and of each value's sessions); of a playback field, the
-- ACTIVE session of that device and playbackId; of the due score, the earliest ACTIVE
-- deadline; every ENDED record (and tombstone) is queued in reap. The audit is the one
-- script that reads an account's ENDED hash whole. Returns a flat list {i, counter before,
-- truth, other repairs} for every account with any repair.
local repaired = {}
for i = 1, #ARGV do
  local acct = nth_account(ARGV[i], i)
  migrate(acct)
  local records, all = active_records(acct)
  local truth = #records
  local counter = tonumber(all[N] or '0') or -1
  if counter ~= truth then
    -- the shard's count moves with N (a counter of no number counted as 0 there)
    active_add(acct, truth - (tonumber(all[N] or '0') or 0))
    if truth == 0 then
      redis.call('HDEL', acct.state, N)
    else
      redis.call('HSET', acct.state, N, truth)
    end
  end
  local want, fixes = {}, 0
  for _, r in ipairs(records) do
    local s = record_strings(all[r[1]])
    if s[8] ~= '' then
      want[playback_field(s[1], s[8])] = r[1]  -- its playback names it
    end
    for _, g in ipairs(group_fields(s)) do
      local field, value = g[1], g[2]
      if value then
        want[value] = (want[value] or 0) + 1
      end
      if not value or want[value] == 1 then  -- a distinct count counts a value once
        want[field] = (want[field] or 0) + 1
      end
    end
  end
  for field, value in pairs(all) do
    local first = string.sub(field, 1, 1)
    if first == '>' and want[field] ~= value then
      fixes = fixes + 1
      if want[field] then
        redis.call('HSET', acct.state, field, want[field])
      else
        redis.call('HDEL', acct.state, field)  -- no ACTIVE session of that playback
      end
    elseif first == '=' and want[field] ~= tonumber(value) then
      fixes = fixes + 1
      if want[field] then
        redis.call('HSET', acct.state, field, want[field])
      else
        redis.call('HDEL', acct.state, field)
      end
    end
  end
  for field, n in pairs(want) do
    if all[field] == nil then
      fixes = fixes + 1
      redis.call('HSET', acct.state, field, n)
    end
  end
  -- every record that is no ACTIVE session (ENDED, tombstone) is queued for
  -- removal; one that is not (a 0.x reaper purging the shared queue drops the member and
  -- leaves the record) is queued again, due at once. One the account hash holds (a version
  -- before the ENDED hash left it there) moves to the ENDED hash.
  local ended = redis.call('HKEYS', acct.ended)
  for field, value in pairs(all) do
    if is_record(field) and not active_deadline(value) then
      redis.call('HSET', acct.ended, field, value)
      redis.call('HDEL', acct.state, field)
      ended[#ended + 1] = field
    end
  end
  for _, field in ipairs(ended) do
    if redis.call('ZADD', acct.reap, 'NX', 0, acct.id .. '/' .. field) == 1 then
      fixes = fixes + 1
    end
  end
  local score = redis.call('ZSCORE', acct.due, acct.id)
  if (truth == 0 and score) or (truth > 0 and (not score or tonumber(score) > records[1][2])) then
    due_at(acct, records[1] and records[1][2])
    fixes = fixes + 1
  end
  if counter ~= truth or fixes > 0 then
    table.insert(repaired, i)
    table.insert(repaired, counter)
    table.insert(repaired, truth)
    table.insert(repaired, fixes)
  end
end
return repaired
