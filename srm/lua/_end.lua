-- Shared fragment, prepended to every script that ends sessions (the loader does this).
--
-- An account is a table of its keys (and its id), read from ten consecutive KEYS in the
-- order of AccountKeys.lifecycle() (srm/keys.py): a new kind of key is one more field here.
-- usage, events: where its usage and events go (_events.lua); sessions, denials: the
-- shard's prefixes of session records and of daily denial rankings.
local LIFECYCLE = {'active', 'count', 'ended', 'rules', 'deadlines', 'reap', 'usage', 'events',
  'sessions', 'denials'}

-- account_keys: the account *id* whose lifecycle keys start at KEYS[first].
local function account_keys(id, first)
  local acct = {id = id}
  for j, name in ipairs(LIFECYCLE) do
    acct[name] = KEYS[first + j - 1]
  end
  return acct
end

-- rule_groups: the rule counters ("<rule>:<group>" fields of the account's rules hash) a
-- session counts in, decoded from what setup recorded under its sessionId: each field as
-- "<byte length>:<field>", so any deviceId or contentID is safe in a group.
local function rule_groups(encoded)
  local out, pos = {}, 1
  while pos <= #encoded do
    local colon = string.find(encoded, ':', pos, true)
    local n = tonumber(string.sub(encoded, pos, colon - 1))
    out[#out + 1] = string.sub(encoded, colon + 1, colon + n)
    pos = colon + n + 1
  end
  return out
end

-- end_session: the one ACTIVE -> ENDED transition. It happens only where ZREM from the
-- account's active set returns 1, so however many callers race, exactly one decrements the
-- account counter and the rule counters the session was counted in at setup, records the
-- end and queues the session for removal; the others get 0.
--   acct: account_keys(...); sid: sessionId
--   reason: TEARDOWN|TIMEOUT|OPERATOR|EVICTED|REPLACED; ended_at: ms
--   purge_at: ms when the reaper may remove it; by: deviceId whose setup ended it, or nil
--   moves: nil, or a table that collects the shard index changes ({deadlines members},
--   {reap score, member, ...}) for the caller to apply in one variadic ZREM and ZADD
local function end_session(acct, sid, reason, ended_at, purge_at, by, moves)
  if redis.call('ZREM', acct.active, sid) == 0 then
    return 0
  end
  local left = redis.call('DECR', acct.count)
  if left <= 0 then
    redis.call('DEL', acct.count)
  end
  session_ended(acct, sid, reason, ended_at, left + 1)
  local groups = redis.call('HGET', acct.rules, sid)
  if groups then
    local gone = {sid}  -- the session's own field and the counters it brings to 0: one HDEL
    for _, field in ipairs(rule_groups(groups)) do
      if redis.call('HINCRBY', acct.rules, field, -1) <= 0 then
        gone[#gone + 1] = field
      end
    end
    redis.call('HDEL', acct.rules, unpack(gone))
  end
  local value = reason .. '|' .. ended_at
  if by then
    value = value .. '|' .. by
  end
  redis.call('HSET', acct.ended, sid, value)
  local mbr = acct.id .. '/' .. sid
  if moves then
    moves.unindexed[#moves.unindexed + 1] = mbr
    moves.queued[#moves.queued + 1] = purge_at
    moves.queued[#moves.queued + 1] = mbr
    return 1
  end
  redis.call('ZREM', acct.deadlines, mbr)
  redis.call('ZADD', acct.reap, purge_at, mbr)
  return 1
end

-- variadic: redis.call(command, key, ...items), or redis.call(command, ...items) when key is
-- nil, at most UNPACK_MAX items a call (Lua's unpack has a stack limit); nothing when empty.
local UNPACK_MAX = 1000
local function variadic(command, key, items)
  for first = 1, #items, UNPACK_MAX do
    local last = math.min(#items, first + UNPACK_MAX - 1)
    if key then
      redis.call(command, key, unpack(items, first, last))
    else
      redis.call(command, unpack(items, first, last))
    end
  end
end

-- end_lapsed: ends up to `max` sessions of one account whose deadline is <= now, each with
-- endReason TIMEOUT at its own deadline. Returns how many it ended.
local function end_lapsed(acct, now, purge_at, max)
  local lapsed = redis.call('ZRANGEBYSCORE', acct.active, '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
  local n = 0
  for i = 1, #lapsed, 2 do
    n = n + end_session(acct, lapsed[i], 'TIMEOUT', lapsed[i + 1], purge_at, nil)
  end
  return n
end
