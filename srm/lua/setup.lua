-- setup: create a session if, after it, the account limit and every limit rule it matches
-- hold. Idempotent on the sessionId, which the caller generates before the call (a retried
-- call finds its own session).
--
-- KEYS[1] limit      srm:{sK}:acct:<a>:limit      string account limit override (read)
-- KEYS[2] rlimit     srm:{sK}:acct:<a>:rlimit     hash   rule -> max override (read)
-- KEYS[3] denied     srm:{sK}:denied:<sid>        string this setup's denial, for retries
-- KEYS[4] home       srm:{sK}:acct:<a>:home       string the account's home networks
-- KEYS[5] devices    srm:{sK}:acct:<a>:devices    hash   the device registry
-- KEYS[6..15] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] deviceId  ARGV[5] contentID
-- ARGV[6] contentType  ARGV[7] keep-alive period (ms)  ARGV[8] account limit (claim or default)
-- ARGV[9] retention (ms)  ARGV[10] account policy: 'deny' | 'evict'
-- ARGV[11] deviceType ('' for the default, unknown: not stored)
-- ARGV[12] quality ('' none)  ARGV[13] sessionId this setup replaces ('' none)
-- ARGV[14] events (_events.lua)
-- ARGV[15] client address, packed (4 or 16 bytes; '' unknown)  ARGV[16] its network (4 or 8
-- bytes, srm/network.py)  ARGV[17] the home to learn when the account has none (packed; ''
-- when this device type does not set it)  ARGV[18] devices.max (0: no registry)
-- ARGV[19] ms after which a device that set nothing up is forgotten
-- then per rule the session matches (by quality, device type, content type), RULE_ARGS ARGV:
-- name, reference (records' groups), counter field, configured max, policy, count ('sessions',
-- 'devices', 'networks'), value field ('' when it counts sessions), location ('' anywhere,
-- 'h' home, 'a' away: setup applies this filter, it alone knows the home)
-- Returns {1 created | 2 created by an earlier try of this call, active after it, limit}, or
-- {0, counted against the refusing limit, its max, its name ('account' for the account
-- limit, 'devices' for the registry), then up to 100 of the sessions it counts, oldest
-- keep-alive first, each as {sessionId, deadline, its record}} when denied (so the denial
-- detail needs no second call); for 'devices', the registered devices as {deviceId, value};
-- {-1} the service gave up on this sessionId (tombstone).
-- Lapsed sessions of the account are ended first (TIMEOUT), so they never count. Then the
-- replaced session and the evicted ones are chosen, but ended only if the setup fits.
-- Events: session.ended for each replaced or evicted session, device.registered and
-- home.changed when they happen, then session.started; or one session.denied, whose
-- short-lived marker makes a retry of the call answer the same denial (without the sessions)
-- and count nothing more.
-- ms a denial's marker stays: a call is retried within redis.request_deadline (2 s)
local DENIAL_KEPT = 10000
local RULE_ARGS, FIRST_RULE = 8, 20
local now = server_time(ARGV[1])
local sid, account, device = ARGV[2], ARGV[3], ARGV[4]
local address, net = ARGV[15], ARGV[16]
local acct = account_keys(account, 6)
events_config(ARGV[14])
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

-- where the client is: home when its address lies in one of the account's home networks
-- (learned from this setup when the account has none and this device type sets it)
local home = redis.call('GET', KEYS[4]) or ''
local learned = home == '' and ARGV[17] ~= ''
if learned then
  home = ARGV[17]
end
local loc = '-'
if home ~= '' then
  loc = in_networks(home, address) and 'h' or 'a'
end
local where = loc .. net
if where == '-' then
  where = ''
end

-- the device registry: an unregistered device needs a free place, after forgetting the
-- devices that set nothing up for too long
local device_max = tonumber(ARGV[18])
local registered = device_max > 0 and redis.call('HGET', KEYS[5], device)
if registered and device_seen(registered) < now - tonumber(ARGV[19]) then
  registered = false  -- forgotten: it registers again, as a new device
end
if device_max > 0 and not registered then
  local n = redis.call('HLEN', KEYS[5])
  if n >= device_max then
    n = forget_devices(KEYS[5], acct, now - tonumber(ARGV[19]), now)
  end
  if n >= device_max then
    session_denied(acct, KEYS[3], DENIAL_KEPT, 'devices', device_max, now, device, ARGV[11],
      ARGV[5], ARGV[6], ARGV[12], active, where)
    usage_only_expires(acct.state)
    local answer = {0, n, device_max, 'devices'}
    local flat = redis.call('HGETALL', KEYS[5])
    for i = 1, #flat, 2 do
      answer[#answer + 1] = {flat[i], flat[i + 1]}
    end
    return answer
  end
end

-- the limits the setup must fit: the account's first, then each rule that applies here
local checks = {{name = 'account', max = tonumber(redis.call('GET', KEYS[1]) or ARGV[8]),
  policy = ARGV[10], count = 'sessions'}}
local refs = {}
for i = FIRST_RULE, #ARGV, RULE_ARGS do
  local at = ARGV[i + 7]
  if at == '' or (at == 'h' and loc ~= 'a') or (at == 'a' and loc == 'a') then
    local max = redis.call('HGET', KEYS[2], ARGV[i]) or ARGV[i + 3]
    checks[#checks + 1] = {name = ARGV[i], field = ARGV[i + 2], max = tonumber(max),
      policy = ARGV[i + 4], count = ARGV[i + 5], vfield = ARGV[i + 6]}
    refs[#refs + 1] = ARGV[i + 1]
  end
end
local groups = table.concat(refs, ',')

local gone = {}  -- sessionId -> true: replaced or evicted by this setup
local strings_of = {}
local function strings(s)
  local out = strings_of[s]
  if not out then
    out = record_strings(all[s])
    strings_of[s] = out
  end
  return out
end
local groups_of = {}
local function counts_in(check, s)
  if not check.field then
    return true
  end
  local in_group = groups_of[s]
  if in_group == nil then
    in_group = {}
    for _, g in ipairs(group_fields(strings(s))) do
      in_group[g[1]] = true
    end
    groups_of[s] = in_group
  end
  return in_group[check.field] == true
end
-- value: what a check counting distinct devices or networks counts of session s
local function value(check, s)
  if check.count == 'devices' then
    return strings(s)[1]
  end
  return string.sub(strings(s)[7], 2)
end
local mine = {devices = device, networks = net}  -- the new session's values
local function counted(check)
  if check.field then
    return tonumber(redis.call('HGET', acct.state, check.field) or '0')
  end
  return active
end
-- standing: what the check counts once the sessions in `gone` have ended, and what the new
-- session adds to it (a session of a device or network the group counts already adds nothing)
local function standing(check)
  if check.count == 'sessions' then
    local n = counted(check)
    for s in pairs(gone) do
      if counts_in(check, s) then
        n = n - 1
      end
    end
    return n, 1
  end
  if next(gone) == nil then
    local have = tonumber(redis.call('HGET', acct.state, check.vfield) or '0')
    return counted(check), have > 0 and 0 or 1
  end
  load()
  local seen, n = {}, 0
  for _, r in ipairs(records) do
    local s = r[1]
    if r[2] > now and not gone[s] and counts_in(check, s) then
      local v = value(check, s)
      if not seen[v] then
        seen[v] = true
        n = n + 1
      end
    end
  end
  return n, seen[mine[check.count]] and 0 or 1
end
local function fits(check)
  local n, adds = standing(check)
  return n + adds <= check.max
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

-- Victims are chosen jointly for every evict limit (docs/rules.md, "Deny or evict"). The
-- candidates are the live sessions one by one, and, for a limit on distinct devices or
-- networks, each device's (network's) sessions in its group together, ordered by their latest
-- keep-alive (ties: by the sessionId of their oldest session, fewer sessions first, then in
-- the order they were made: single sessions, then each limit's in the limits' order; a total
-- order, so the choice does not depend on how table.sort treats equal elements); oldest
-- first, a candidate is taken while an evict limit it would relieve still needs room. Then,
-- newest keep-alive first (not the order taken: a device's sessions taken together may be
-- older than sessions taken before them), a taken session is given back when every limit
-- holds without it. No victim left could then be kept (giving one back only ever takes
-- room), and where either of two could be kept, the newer one is.
local victims, short = {}, {}
for _, check in ipairs(checks) do
  if check.policy == 'evict' and check.max > 0 and not fits(check) then
    short[#short + 1] = check
  end
end
if #short > 0 then
  load()
  local candidates = {}
  for _, r in ipairs(records) do
    if r[2] > now and not gone[r[1]] then
      candidates[#candidates + 1] = {at = r[2], id = r[1], sessions = {r[1]},
        made = #candidates + 1}
    end
  end
  for _, check in ipairs(short) do
    if check.count ~= 'sessions' then
      local units, order = {}, {}
      for _, r in ipairs(records) do
        local s = r[1]
        if r[2] > now and not gone[s] and counts_in(check, s) then
          local v = value(check, s)
          if v ~= mine[check.count] then  -- its own device (network) makes no room for it
            local unit = units[v]
            if not unit then
              unit = {at = r[2], id = s, sessions = {}, check = check}
              units[v] = unit
              order[#order + 1] = unit
            end
            unit.sessions[#unit.sessions + 1] = s
            unit.at = math.max(unit.at, r[2])
          end
        end
      end
      for _, unit in ipairs(order) do
        unit.made = #candidates + 1
        candidates[#candidates + 1] = unit
      end
    end
  end
  table.sort(candidates, function(a, b)
    if a.at ~= b.at then
      return a.at < b.at
    end
    if a.id ~= b.id then
      return a.id < b.id
    end
    if #a.sessions ~= #b.sessions then
      return #a.sessions < #b.sessions
    end
    return a.made < b.made
  end)
  local needy = #short
  for _, candidate in ipairs(candidates) do
    if needy == 0 then
      break
    end
    local helps = false
    if candidate.check then
      helps = not fits(candidate.check)
    elseif not gone[candidate.id] then
      for _, check in ipairs(short) do
        if check.count == 'sessions' and counts_in(check, candidate.id) and not fits(check) then
          helps = true
          break
        end
      end
    end
    if helps then
      for _, s in ipairs(candidate.sessions) do
        if not gone[s] then
          gone[s] = true
          victims[#victims + 1] = s
        end
      end
      needy = 0
      for _, check in ipairs(short) do
        if not fits(check) then
          needy = needy + 1
        end
      end
    end
  end
end
for _, check in ipairs(checks) do
  if not fits(check) then
    session_denied(acct, KEYS[3], DENIAL_KEPT, check.name, check.max, now, device, ARGV[11],
      ARGV[5], ARGV[6], ARGV[12], active, where)
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

if #victims > 1 then
  local deadline = {}
  for _, r in ipairs(records) do
    deadline[r[1]] = r[2]
  end
  table.sort(victims, function(a, b)
    if deadline[a] ~= deadline[b] then
      return deadline[a] < deadline[b]
    end
    return a < b
  end)
end
for i = #victims, 1, -1 do
  local s = victims[i]
  gone[s] = nil
  local spare = true
  for _, check in ipairs(checks) do
    if counts_in(check, s) and not fits(check) then
      spare = false
      break
    end
  end
  if spare then
    table.remove(victims, i)
  else
    gone[s] = true
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
if learned then
  redis.call('SET', KEYS[4], home)
  home_changed(acct.events, now, account, home, 'LEARNED')
end
active = active - ended + 1
if device_max > 0 then
  local first = registered and string.match(registered, '^(%d+),') or now
  redis.call('HSET', KEYS[5], device, first .. ',' .. now .. ',' .. ARGV[11])
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[19]))
  if not registered then
    device_registered(acct, now, device, ARGV[11], active)
  end
end
local deadline = now + tonumber(ARGV[7])
local record = record_new(now, deadline, device, ARGV[5], ARGV[6], ARGV[11], ARGV[12], groups,
  where)
redis.call('HSET', acct.state, sid, record)
redis.call('HINCRBY', acct.state, N, 1)
active_add(acct, 1)
if groups ~= '' then
  local none = {}
  for _, g in ipairs(group_fields(record_strings(record))) do
    group_add(acct.state, g, 1, none)
  end
end
redis.call('PERSIST', acct.state)
-- the score stays the earliest deadline: ended sessions may leave it earlier (never later)
redis.call('ZADD', acct.due, 'LT', deadline, account)
session_started(acct, sid, now, device, ARGV[11], ARGV[5], ARGV[6], ARGV[12], active, where)
return {1, active, checks[1].max}
