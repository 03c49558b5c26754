-- setup: create a session if, after it, the account limit and every limit rule it matches
-- hold. Idempotent on the sessionId, which the caller generates before the call (a retried
-- call finds its own session).
--
-- KEYS[1] sess       srm:{sK}:sess:<sid>          hash   (created)
-- KEYS[2] limit      srm:{sK}:acct:<a>:limit      string account limit override (read)
-- KEYS[3] rlimit     srm:{sK}:acct:<a>:rlimit     hash   rule -> max override (read)
-- KEYS[4..13] the account's lifecycle keys (AccountKeys.lifecycle): active, count, ended,
--            rules (counters "<rule>:<group>" and each session's groups), deadlines, reap,
--            usage, events, and the shard's prefixes of records and denial rankings
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] deviceId  ARGV[5] contentID
-- ARGV[6] contentType  ARGV[7] keep-alive period (ms)  ARGV[8] account limit (claim or default)
-- ARGV[9] retention (ms)  ARGV[10] account policy: 'deny' | 'evict'
-- ARGV[11] deviceType ('' for the default, unknown: not stored)
-- ARGV[12] quality ('' none)  ARGV[13] sessionId this setup replaces ('' none)
-- ARGV[14] the rule groups of the new session, encoded as rule_groups reads them ('' none)
-- ARGV[15] events (_events.lua)
-- then per matched rule, four ARGV: name, group field "<rule>:<group>", configured max, policy
-- Returns {1 created | 2 created by an earlier try of this call, active after it, limit}, or
-- {0, sessions counted against the refusing limit, its max, its name ('account' for the
-- account limit), then up to 100 of those sessions, oldest keep-alive first, each as
-- {sessionId, deadline, its record as HGETALL answers it}} when denied (so the denial
-- detail needs no second call);
-- {-1} the service gave up on this sessionId (tombstone); {-2} the sessionId belongs to
-- another account of this shard (UUID collision).
-- Lapsed sessions of the account are ended first (TIMEOUT), so they never count. Then the
-- replaced session and the evicted ones are chosen, but ended only if the setup fits.
-- Events: session.ended for each replaced or evicted session, then session.started; or one
-- session.denied, whose short-lived record makes a retry of the call answer the same
-- denial (without the sessions) and count nothing more.
local now = server_time(ARGV[1])
local sid, account, device = ARGV[2], ARGV[3], ARGV[4]
local acct = account_keys(account, 4)
events_config(ARGV[15])
local owner = redis.call('HGET', KEYS[1], 'acct')
if owner then
  if owner ~= account then
    return {-2, 0, 0}
  end
  if redis.call('HEXISTS', KEYS[1], 'tomb') == 1 then
    return {-1, 0, 0}
  end
  local rule = redis.call('HMGET', KEYS[1], 'denied', 'max')
  if rule[1] then
    return {0, redis.call('ZCOUNT', acct.active, '(' .. now, '+inf'), tonumber(rule[2]), rule[1]}
  end
  return {2, redis.call('ZCOUNT', acct.active, '(' .. now, '+inf'), 0}
end

local purge_at = now + tonumber(ARGV[9])
end_lapsed(acct, now, purge_at, 1000)

-- the limits the setup must fit: the account's first, then each rule it matches
local checks = {{name = 'account', max = tonumber(redis.call('GET', KEYS[2]) or ARGV[8]),
  policy = ARGV[10]}}
for i = 16, #ARGV, 4 do
  local max = redis.call('HGET', KEYS[3], ARGV[i]) or ARGV[i + 2]
  checks[#checks + 1] = {name = ARGV[i], field = ARGV[i + 1], max = tonumber(max),
    policy = ARGV[i + 3]}
end

local live = redis.call('ZCOUNT', acct.active, '(' .. now, '+inf')
local gone = {}  -- sessionId -> true: replaced or evicted by this setup
local groups_of = {}
local function counts_in(check, s)
  if not check.field then
    return true
  end
  local groups = groups_of[s]
  if groups == nil then
    groups = {}
    local encoded = redis.call('HGET', acct.rules, s)
    if encoded then
      for _, field in ipairs(rule_groups(encoded)) do
        groups[field] = true
      end
    end
    groups_of[s] = groups
  end
  return groups[check.field] == true
end
local function counted(check)
  if check.field then
    return tonumber(redis.call('HGET', acct.rules, check.field) or '0')
  end
  return live
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
local oldest
local function members(check)  -- the live sessions counted by check, oldest keep-alive first
  oldest = oldest or redis.call('ZRANGEBYSCORE', acct.active, '(' .. now, '+inf')
  local out = {}
  for _, s in ipairs(oldest) do
    if counts_in(check, s) then
      out[#out + 1] = s
    end
  end
  return out
end

local replaced = ARGV[13]
if replaced ~= '' then
  local score = redis.call('ZSCORE', acct.active, replaced)
  if score and tonumber(score) > now then
    gone[replaced] = true
  else
    replaced = ''
  end
end

local victims = {}
for _, check in ipairs(checks) do
  if check.policy == 'evict' and check.max > 0 then
    local need = remaining(check) + 1 - check.max
    if need > 0 then
      for _, s in ipairs(members(check)) do
        if need <= 0 then
          break
        end
        if not gone[s] then
          gone[s] = true
          victims[#victims + 1] = s
          need = need - 1
        end
      end
    end
  end
end
for _, check in ipairs(checks) do
  if remaining(check) + 1 > check.max then
    session_denied(KEYS[1], acct, check.name, check.max, now, device, ARGV[11], ARGV[5], ARGV[6],
      ARGV[12], live)
    local answer = {0, counted(check), check.max, check.name}
    for _, s in ipairs(members(check)) do
      if #answer >= 104 then
        break
      end
      answer[#answer + 1] = {s, redis.call('ZSCORE', acct.active, s),
        redis.call('HGETALL', acct.sessions .. s)}
    end
    return answer
  end
end

if replaced ~= '' then
  end_session(acct, replaced, 'REPLACED', now, purge_at, device)
end
for _, victim in ipairs(victims) do
  end_session(acct, victim, 'EVICTED', now, purge_at, device)
end
local deadline = now + tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'acct', account, 'dev', device, 'cid', ARGV[5], 'ctype', ARGV[6],
  'created', now, 'ka', now)
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[1], 'dt', ARGV[11])
end
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[1], 'q', ARGV[12])
end
redis.call('ZADD', acct.active, deadline, sid)
redis.call('INCR', acct.count)
redis.call('ZADD', acct.deadlines, deadline, account .. '/' .. sid)
if ARGV[14] ~= '' then
  redis.call('HSET', acct.rules, sid, ARGV[14])
  for i = 2, #checks do
    redis.call('HINCRBY', acct.rules, checks[i].field, 1)
  end
end
local ended = #victims
if replaced ~= '' then
  ended = ended + 1
end
local active = live - ended + 1
session_started(acct, sid, now, device, ARGV[11], ARGV[5], ARGV[6], ARGV[12], active)
return {1, active, checks[1].max}
