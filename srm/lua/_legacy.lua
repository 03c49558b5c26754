-- Shared fragment, prepended to every script that reads or changes an account (the loader
-- does this): moves the account's data written by SRM 0.x into the account hash, once.
--
-- 0.x kept, per account, keys named by the prefix acct.legacy ("srm:{sK}:acct:<a>:"):
-- active (zset sessionId -> deadline), count (string), ended (hash sessionId ->
-- "REASON|endedAt[|by]"), rules (hash: counters "<rule>:<group>" and sessionId -> groups as
-- "<len>:<field>..."), usage (hash day -> "started,denied,TEARDOWN,TIMEOUT,OPERATOR,EVICTED,
-- REPLACED,watched,peak"); per session a record hash acct.legacy_sessions .. sessionId
-- (acct, dev, dt, cid, ctype, q, created, ka); and per shard the index
-- acct.legacy_deadlines ("<accountId>/<sessionId>" -> deadline). Its purge queue is the
-- current one, unchanged. ACTIVE sessions move into the account hash, ENDED ones into its
-- ENDED hash. The move merges into what the account hash holds already (a 0.x
-- process may still write during a rolling upgrade), derives the rule counters from the
-- sessions' groups, and deletes the 0.x keys. It writes no event: nothing happened.

-- legacy_groups: 0.x groups ("<len>:<rule>:<group>"...) as group references (_account.lua)
local function legacy_groups(encoded, dev, cid)
  local refs, pos = {}, 1
  while pos <= #encoded do
    local length = string.match(encoded, '^(%d+):', pos)
    if not length then
      break  -- damaged: the groups read so far
    end
    local first = pos + #length + 1
    local field = string.sub(encoded, first, first + tonumber(length) - 1)
    pos = first + tonumber(length)
    local name, group = string.match(field, '^([^:]+):(.*)$')
    if group == '' then
      refs[#refs + 1] = name
    elseif group == dev then
      refs[#refs + 1] = name .. '/d'
    elseif group == cid then
      refs[#refs + 1] = name .. '/c'
    end
  end
  return table.concat(refs, ',')
end

-- legacy_record: the ACTIVE record (_account.lua) of a 0.x session with this deadline
local function legacy_record(acct, sid, deadline, groups)
  local r = redis.call('HMGET', acct.legacy_sessions .. sid, 'dev', 'dt', 'cid', 'ctype', 'q',
    'created', 'ka')
  local dev, cid = r[1] or '', r[3] or ''
  local ka = tonumber(r[7]) or deadline
  local created = tonumber(r[6]) or ka
  return created .. ',' .. (ka - created) .. ',' .. (deadline - ka) .. ';' .. L(dev) .. L(cid) ..
    L(r[4] or '') .. L(r[2] or '') .. L(r[5] or '') .. L(legacy_groups(groups or '', dev, cid))
end

-- 0.x usage order -> the account hash's (USAGE in _events.lua)
local LEGACY_USAGE = {1, 4, 5, 6, 7, 8, 9, 3, 2}

local function migrate(acct)
  local p = acct.legacy
  local active_key, ended_key, usage_key = p .. 'active', p .. 'ended', p .. 'usage'
  local rules_key, count_key = p .. 'rules', p .. 'count'
  if redis.call('EXISTS', active_key, ended_key, usage_key, rules_key, count_key) == 0 then
    return 0
  end
  local groups = {}
  local flat = redis.call('HGETALL', rules_key)
  for i = 1, #flat, 2 do
    groups[flat[i]] = flat[i + 1]
  end
  local records, members, counters = {}, {}, {}
  local active = redis.call('ZRANGE', active_key, 0, -1, 'WITHSCORES')
  local earliest
  for i = 1, #active, 2 do
    local sid, deadline = active[i], tonumber(active[i + 1])
    local v = legacy_record(acct, sid, deadline, groups[sid])
    local s = record_strings(v)
    for _, g in ipairs(group_fields(s)) do  -- 0.x rules counted sessions only
      counters[g[1]] = (counters[g[1]] or 0) + 1
    end
    records[#records + 1] = sid
    records[#records + 1] = v
    members[#members + 1] = acct.id .. '/' .. sid
    if not earliest or deadline < earliest then
      earliest = deadline
    end
  end
  local ended = {}  -- the ENDED records, for the account's ENDED hash
  flat = redis.call('HGETALL', ended_key)
  for i = 1, #flat, 2 do
    local sid = flat[i]
    local reason, at, by = string.match(flat[i + 1], '^(%u+)|(%d+)|?(.*)$')
    if reason then
      local v = legacy_record(acct, sid, tonumber(at), groups[sid])
      ended[#ended + 1] = sid
      ended[#ended + 1] = record_ended(v, tonumber(at), reason, by)
    end
  end
  if #records > 0 then
    variadic('HSET', acct.state, records)
  end
  if #ended > 0 then
    variadic('HSET', acct.ended, ended)
  end
  if #active > 0 then
    redis.call('HINCRBY', acct.state, N, #active / 2)
    active_add(acct, #active / 2)
    for field, n in pairs(counters) do
      redis.call('HINCRBY', acct.state, field, n)
    end
    redis.call('ZADD', acct.due, 'LT', earliest, acct.id)
    variadic('ZREM', acct.legacy_deadlines, members)
  end
  flat = redis.call('HGETALL', usage_key)
  for i = 1, #flat, 2 do
    local old = {}
    for number in string.gmatch(flat[i + 1], '[^,]+') do
      old[#old + 1] = tonumber(number)
    end
    local v = usage_read(acct.state, flat[i])  -- what this version counted that day already
    for j, to in ipairs(LEGACY_USAGE) do
      if to == 2 then
        v[to] = math.max(v[to], old[j] or 0)
      else
        v[to] = v[to] + (old[j] or 0)
      end
    end
    usage_write(acct.state, flat[i], v)
  end
  local gone = {active_key, ended_key, usage_key, rules_key, count_key}
  for _, moved in ipairs({records, ended}) do
    for i = 1, #moved, 2 do
      gone[#gone + 1] = acct.legacy_sessions .. moved[i]
    end
  end
  variadic('DEL', nil, gone)
  if #active > 0 then
    redis.call('PERSIST', acct.state)
  else
    usage_only_expires(acct.state)
  end
  return 1
end
