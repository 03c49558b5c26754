-- setup: create a session if, after it, the account limit and every limit rule it matches
-- hold. Idempotent on the sessionId, which the caller generates before the call (a retried
-- call finds its own session).
--
-- KEYS[1] limit      srm:{sK}:acct:<a>:limit      string account limit override (read)
-- KEYS[2] rlimit     srm:{sK}:acct:<a>:rlimit     hash   rule -> max override (read)
-- KEYS[3] denied     srm:{sK}:denied:<sid>        string this setup's denial, for retries
-- KEYS[4..13] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] deviceId  ARGV[5] contentID
-- ARGV[6] contentType  ARGV[7] keep-alive period (ms)  ARGV[8] account limit (claim or default)
-- ARGV[9] retention (ms)  ARGV[10] account policy: 'deny' | 'evict'
-- ARGV[11] deviceType ('' for the default, unknown: not stored)
-- ARGV[12] quality ('' none)  ARGV[13] sessionId this setup replaces ('' none)
-- ARGV[14] the rule groups of the new session, as records hold them ('' none)
-- ARGV[15] events (_events.lua)
-- then per matched rule, four ARGV: name, counter field "=<rule>:<group>", configured max,
-- policy
-- Returns {1 created | 2 created by an earlier try of this call, active after it, limit}, or
-- {0, sessions counted against the refusing limit, its max, its name ('account' for the
-- account limit), then up to 100 of those sessions, oldest keep-alive first, each as
-- {sessionId, deadline, its record}} when denied (so the denial detail needs no second call);
-- {-1} the service gave up on this sessionId (tombstone).
-- Lapsed sessions of the account are ended first (TIMEOUT), so they never count. Then the
-- replaced session and the evicted ones are chosen, but ended only if the setup fits.
-- Events: session.ended for each replaced or evicted session, then session.started; or one
-- session.denied, whose short-lived marker makes a retry of the call answer the same
-- denial (without the sessions) and count nothing more.
-- ms a denial's marker stays: a call is retried within redis.request_deadline (2 s)
local DENIAL_KEPT = 10000
local now = server_time(ARGV[1])
local sid, account, device = ARGV[2], ARGV[3], ARGV[4]
local acct = account_keys(account, 4)
events_config(ARGV[15])
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
local active = tonumber(redis.call('HGET', acct.state, N) or '0')
local score = redis.call('ZSCORE', acct.due, account)
local purge_at = now + tonumber(ARGV[9])

-- the account's ACTIVE records, read only when the answer needs them: when one may have
-- lapsed (they are ended first: lapsed sessions never count), to evict, to deny
local records, all
local function load()
  if not records then
    records, all = active_records(acct)
  end
end
if active > 0 and (not score or tonumber(score) <= now) then
  -- every lapsed one, however many (the work is bounded by the ACTIVE sessions): one left
  -- would count against the limit
  local queued = {}
  active = active - end_lapsed(acct, now, purge_at, math.huge, queued)
  variadic('ZADD', acct.reap, queued)
  load()
end

local existing = find_record(acct, sid)
if existing then
  if existing == 'T' then
    return {-1, 0, 0}
  end
  return {2, active, 0}
end
local denied = redis.call('GET', KEYS[3])
if denied then
  local rule, max = string.match(denied, '^([^,]*),(%d+)$')
  if rule then
    return {0, active, tonumber(max), rule}
  end
  -- a marker of no known shape (damaged): checked again, as if there were none
end

-- the limits the setup must fit: the account's first, then each rule it matches
local checks = {{name = 'account', max = tonumber(redis.call('GET', KEYS[1]) or ARGV[8]),
  policy = ARGV[10]}}
for i = 16, #ARGV, 4 do
  local max = redis.call('HGET', KEYS[2], ARGV[i]) or ARGV[i + 2]
  checks[#checks + 1] = {name = ARGV[i], field = ARGV[i + 1], max = tonumber(max),
    policy = ARGV[i + 3]}
end

local gone = {}  -- sessionId -> true: replaced or evicted by this setup
local groups_of = {}
local function counts_in(check, s)
  if not check.field then
    return true
  end
  local groups = groups_of[s]
  if groups == nil then
    groups = {}
    local strings = record_strings(all[s])
    for _, field in ipairs(group_fields(strings[6], strings[1], strings[2])) do
      groups[field] = true
    end
    groups_of[s] = groups
  end
  return groups[check.field] == true
end
local function counted(check)
  if check.field then
    return tonumber(redis.call('HGET', acct.state, check.field) or '0')
  end
  return active
end
local function remaining(check)
  local n = counted(check)
  for s in pairs(gone) do
    if counts_in(check, s) then
      n = n - 1
    end
  end
  return n
end
local function members(check)  -- the live sessions counted by check, oldest keep-alive first
  load()
  local out = {}
  for _, r in ipairs(records) do
    if r[2] > now and counts_in(check, r[1]) then
      out[#out + 1] = r[1]
    end
  end
  return out
end

local replaced = ARGV[13]
if replaced ~= '' then
  local v = redis.call('HGET', acct.state, replaced)
  local deadline = v and active_deadline(v)
  if deadline and deadline > now then
    load()
    all[replaced] = v
    gone[replaced] = true
  else
    replaced = ''
  end
end

-- Victims are chosen jointly for every evict limit (docs/rules.md, "Deny or evict"): walking
-- the live sessions oldest keep-alive first, a session is taken when an evict limit that still
-- needs room counts it; then, newest first, a taken session is given back when every limit
-- holds without it. No victim left could then be kept (giving one back only ever takes room),
-- and the ones kept are the oldest a minimal choice allows.
local victims, short = {}, 0
for _, check in ipairs(checks) do
  check.left = remaining(check)
  if check.policy == 'evict' and check.max > 0 and check.left + 1 > check.max then
    check.need = check.left + 1 - check.max
    short = short + 1
  end
end
if short > 0 then
  load()
  for _, r in ipairs(records) do
    if short == 0 then
      break
    end
    local s = r[1]
    if r[2] > now and not gone[s] then
      local helps = false
      for _, check in ipairs(checks) do
        if check.need and check.need > 0 and counts_in(check, s) then
          helps = true
          break
        end
      end
      if helps then
        gone[s] = true
        victims[#victims + 1] = s
        for _, check in ipairs(checks) do
          if counts_in(check, s) then
            check.left = check.left - 1
            if check.need then
              check.need = check.need - 1
              if check.need == 0 then
                short = short - 1
              end
            end
          end
        end
      end
    end
  end
end
for _, check in ipairs(checks) do
  if remaining(check) + 1 > check.max then
    session_denied(acct, KEYS[3], DENIAL_KEPT, check.name, check.max, now, device, ARGV[11],
      ARGV[5], ARGV[6], ARGV[12], active)
    usage_only_expires(acct.state)  -- the day's usage, in an account that holds no session
    local answer = {0, counted(check), check.max, check.name}
    for _, s in ipairs(members(check)) do
      if #answer >= 104 then
        break
      end
      answer[#answer + 1] = {s, active_deadline(all[s]), all[s]}
    end
    return answer
  end
end

for i = #victims, 1, -1 do
  local s, spare = victims[i], true
  for _, check in ipairs(checks) do
    if counts_in(check, s) and check.left + 2 > check.max then
      spare = false
      break
    end
  end
  if spare then
    for _, check in ipairs(checks) do
      if counts_in(check, s) then
        check.left = check.left + 1
      end
    end
    gone[s] = nil
    table.remove(victims, i)
  end
end

local ended = 0
if replaced ~= '' then
  end_session(acct, replaced, all[replaced], 'REPLACED', now, purge_at, device)
  ended = 1
end
for _, victim in ipairs(victims) do
  end_session(acct, victim, all[victim], 'EVICTED', now, purge_at, device)
  ended = ended + 1
end
local deadline = now + tonumber(ARGV[7])
redis.call('HSET', acct.state, sid, record_new(now, deadline, device, ARGV[5], ARGV[6],
  ARGV[11], ARGV[12], ARGV[14]))
redis.call('HINCRBY', acct.state, N, 1)
active_add(acct, 1)
for i = 2, #checks do
  redis.call('HINCRBY', acct.state, checks[i].field, 1)
end
redis.call('PERSIST', acct.state)
-- the score stays the earliest deadline: ended sessions may leave it earlier (never later)
redis.call('ZADD', acct.due, 'LT', deadline, account)
active = active - ended + 1
session_started(acct, sid, now, device, ARGV[11], ARGV[5], ARGV[6], ARGV[12], active)
return {1, active, checks[1].max}
