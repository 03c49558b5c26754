-- setup: create a session if, after it, the account limit and every limit rule it matches
-- hold. Idempotent on the sessionId, which the caller generates before the call (a retried
-- call finds its own session).
--
-- KEYS[1] limit      srm:{sK}:acct:<a>:limit      string account limit override (read)
-- KEYS[2] rlimit     srm:{sK}:acct:<a>:rlimit     hash   rule -> max override (read)
-- KEYS[3] denied     srm:{sK}:denied:<sid>        string this setup's denial, for retries
-- KEYS[4] home       srm:{sK}:acct:<a>:home       string the account's home networks
-- KEYS[5] devices    srm:{sK}:acct:<a>:devices    hash   the device registry
-- KEYS[6] rate       srm:{sK}:acct:<a>:rate       string the account's recent setups
-- KEYS[7..17] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
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
-- ARGV[20] playbackId ('' none)  ARGV[21] setups allowed per account and minute (0: any)
-- ARGV[22] keep-alive period (ms): a join's deadline (ARGV[7] is provisional for a new
-- session when keep-alive is disabled; a joined one is not new)
-- ARGV[23] every configured rule (_rules.lua: each one's name, reference (records' groups),
-- configured max, policy, count ('sessions', 'devices', 'networks'), location (anywhere, home,
-- away: setup applies this filter, it alone knows the home), mode ('enforce', 'monitor':
-- never refuses nor evicts, flags the setup instead))
-- then per rule the session matches (by quality, device type, content type), RULE_ARGS ARGV:
-- its index in ARGV[23] ('1' first), counter field, value field ('' when it counts sessions)
-- Returns {1 created | 2 created by an earlier try of this call, active after it, limit,
-- sessionId, the monitor rules that flagged it ("<rule>,..."), now, its deadline (ms: the
-- CDN token's times)}; {3, active, limit, sessionId, '', now, deadline, its contentID} when
-- it joined the ACTIVE session of the same device and playbackId (its deadline moved as by a
-- keep-alive); {-2, ms} when the account is over its setups per minute (nothing else
-- happened: retry in ms); or
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

-- rate_take: counts one setup in the account's rate `key` unless `limit` setups were made in
-- the last minute, as a sliding window estimates it (the last whole minute's count weighted
-- by how much of it the window still covers, plus this minute's); returns 0 when counted, else
-- the ms until one more would be. The key holds "<minute>,<its count>,<the minute before's>".
local MINUTE = 60000
local function rate_take(key, held, now, limit)  -- held: the key's value read (false: none)
  local minute = math.floor(now / MINUTE)
  local m, this, last = string.match(held or '', '^(%d+),(%d+),(%d+)$')
  m, this, last = tonumber(m), number_of(this) or 0, number_of(last) or 0
  if m ~= minute then
    last = m == minute - 1 and this or 0
    this = 0
  end
  local into = now - minute * MINUTE  -- ms into this minute
  if last * (MINUTE - into) / MINUTE + this + 1 <= limit then
    redis.call('SET', key, digits(minute) .. ',' .. digits(this + 1) .. ',' .. digits(last),
      'PX', 2 * MINUTE)
    return 0
  end
  if this + 1 <= limit then  -- fits once the last minute's weight has fallen enough
    return math.max(1, math.ceil((MINUTE - into) - (limit - 1 - this) * MINUTE / last))
  end
  -- only after this minute, once its count, then weighing as the last, has fallen enough
  return (MINUTE - into) + math.max(0, math.ceil(MINUTE - MINUTE * (limit - 1) / this))
end
local RULE_ARGS, FIRST_RULE = 3, 24
local now = server_time(ARGV[1])
local sid, account, device = ARGV[2], ARGV[3], ARGV[4]
local address, net = ARGV[15], ARGV[16]
local acct = account_keys(account, 7)
events_config(ARGV[14])
-- what the account hash holds of this setup in one read: the ACTIVE count, this sessionId's
-- record (a retry's) and today's usage (the usage of the changes below starts from it)
local day = usage_day(now)
local held = redis.call('HMGET', acct.state, N, sid, day)
usage_held(acct.state, day, held[3])
-- an account that counts ACTIVE sessions in its hash has no 0.x data left: it was moved
-- before the hash was first written (_legacy.lua)
if not held[1] then
  local legacy = legacy_first(acct)
  if legacy then
    return legacy
  end
end
local active = number_of(held[1] or '0')
local score = redis.call('ZSCORE', acct.due, account)
-- numbers SRM passes (and Redis's own) are converted by arithmetic: tonumber converts a
-- string twice (a check, then the conversion, each a libc strtod)
local purge_at = now + setting(ARGV[9])

-- the account's ACTIVE records, read only when the answer needs them: when one may have
-- lapsed (they are ended first: lapsed sessions never count), to evict, to deny
local records, all
local function load()
  if not records then
    records, all = active_records(acct)
  end
end
if active > 0 and (not score or score + 0 <= now) then
  -- every lapsed one, however many (the work is bounded by the ACTIVE sessions): one left
  -- would count against the limit
  local queued = {}
  local ended = end_lapsed(acct, now, purge_at, math.huge, queued)
  active = active - ended
  variadic('ZADD', acct.reap, queued)
  load()
  if ended > 0 then
    held[2] = redis.call('HGET', acct.state, sid)  -- a retry's record may have lapsed
  end
end

local existing = held[2] or redis.call('HGET', acct.ended, sid)
if existing then
  if existing == 'T' then
    return {-1, 0, 0}
  end
  local strings = record_strings(existing)
  local _, _, deadline, _, ended = record_times(existing)
  return {2, active, 0, sid, ended and strings[10] or strings[9], now, deadline or 0}
end
-- the account's strings in one read: this setup's denial marker, the setup rate, the home
-- networks, the account limit override
local strings_read = redis.call('MGET', KEYS[3], KEYS[6], KEYS[4], KEYS[1])
local denied = strings_read[1]
if denied then
  local rule, max = string.match(denied, '^([^,]*),(%d+)$')
  if rule then
    return {0, active, tonumber(max), rule}
  end
  -- a marker of no known shape (damaged): checked again, as if there were none
end

-- at most ARGV[21] setups a minute, joins and denials included (one refused here is not
-- counted: a client looping setups is held to the rate, not locked out)
local per_minute = setting(ARGV[21])
if per_minute > 0 then
  local wait = rate_take(KEYS[6], strings_read[2], now, per_minute)
  if wait > 0 then
    return {-2, wait}
  end
end

-- the playback of an ACTIVE session of this device: the setup joins it
local playback = ARGV[20]
if playback ~= '' then
  local joined = redis.call('HGET', acct.state, playback_field(device, playback))
  local v = joined and redis.call('HGET', acct.state, joined)
  local deadline = v and active_deadline(v)
  if deadline and deadline > now then
    -- a keep-alive at now; at least 1 ms after the creation, so that the undo of the setup
    -- that created it (abort.lua) sees that a player holds it
    local created = record_times(v)
    local ka = math.max(now, created + 1)
    local moved = ka + setting(ARGV[22])
    redis.call('HSET', acct.state, joined, record_moved(v, created, ka, moved))
    deadline_left(acct, deadline, moved, active)
    return {3, active, 0, joined, '', now, moved, record_strings(v)[2]}
  end
end

-- where the client is: home when its address lies in one of the account's home networks
-- (learned from this setup when the account has none and this device type sets it)
local home = strings_read[3] or ''
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
-- devices that set nothing up for too long (a device streaming now is never forgotten: its
-- last setup may be older than forget_after, its place is still taken)
local device_max = setting(ARGV[18])
local forget_after = setting(ARGV[19])
local registered = device_max > 0 and redis.call('HGET', KEYS[5], device)
local first_seen, last_seen, seen_type  -- of the registered device
if registered then
  first_seen, last_seen, seen_type = device_entry(registered)
end
local streaming  -- deviceId -> true for the devices with a live session, read when needed
local function streams(dev)
  if not streaming then
    load()
    streaming = {}
    for _, r in ipairs(records) do
      if r[2] > now then
        streaming[record_strings(all[r[1]])[1]] = true
      end
    end
  end
  return streaming[dev] == true
end
if registered and last_seen < now - forget_after and not streams(device) then
  registered = false  -- forgotten: it registers again, as a new device
end
if device_max > 0 and not registered then
  local n = redis.call('HLEN', KEYS[5])
  if n >= device_max then
    n = forget_devices(KEYS[5], acct, now - forget_after, now, streams)
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
local limit_override = strings_read[4]
local checks = {{name = 'account',
  max = limit_override and tonumber(limit_override) or setting(ARGV[8]),
  policy = ARGV[10], count = 'sessions'}}
local refs = {}
local overrides = {}
if #ARGV >= FIRST_RULE then
  local flat = redis.call('HGETALL', KEYS[2])
  for j = 1, #flat, 2 do
    overrides[flat[j]] = flat[j + 1]
  end
end
local argv = ARGV
local rules = #argv >= FIRST_RULE and rule_set(argv[23])
for i = FIRST_RULE, #argv, RULE_ARGS do
  local rule = rules[argv[i]]
  local at = rule.at
  if at == '' or (at == 'h' and loc ~= 'a') or (at == 'a' and loc == 'a') then
    local name = rule.name
    local override = overrides[name]
    checks[#checks + 1] = {name = name, field = argv[i + 1], vfield = argv[i + 2],
      max = override and tonumber(override) or rule.max, policy = rule.policy,
      count = rule.count, monitor = rule.monitor, n = 0, have = 0}
    refs[#refs + 1] = rule.ref
  end
end
local groups = table.concat(refs, ',')
-- every rule's counter (and value count) in one read: n, have
if #checks > 1 then
  local fields = {}
  for i = 2, #checks do
    fields[#fields + 1] = checks[i].field
    if checks[i].vfield ~= '' then
      fields[#fields + 1] = checks[i].vfield
    end
  end
  local got = redis.call('HMGET', acct.state, unpack(fields))
  local j = 1
  for i = 2, #checks do
    checks[i].n = number_of(got[j] or '0') or 0
    j = j + 1
    if checks[i].vfield ~= '' then
      checks[i].have = number_of(got[j] or '0') or 0
      j = j + 1
    end
  end
end

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
  return check.field and check.n or active
end
-- standing: what the check counts once the sessions in `gone` have ended, and what the new
-- session adds to it (a session of a device or network the group counts already adds nothing)
local function standing(check)
  if next(gone) == nil then  -- nothing ends (most setups): the counters read are the counts
    return counted(check), (check.count ~= 'sessions' and check.have > 0) and 0 or 1
  end
  if check.count == 'sessions' then
    local n = counted(check)
    for s in pairs(gone) do
      if counts_in(check, s) then
        n = n - 1
      end
    end
    return n, 1
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
  if check.policy == 'evict' and check.max > 0 and not check.monitor and not fits(check) then
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
  if not check.monitor and not fits(check) then
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
    if not check.monitor and counts_in(check, s) and not fits(check) then
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

-- the monitor rules the setup would have been refused (or evicted) for: it is only flagged
local flags = {}
for _, check in ipairs(checks) do
  if check.monitor and not fits(check) then
    flags[#flags + 1] = check.name
  end
end
local flagged = table.concat(flags, ',')

usage_batch()  -- the day's usage is read and written once, however many changes count in it
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
-- a registered device's lastSeen is written at most once an hour, or a 24th of forget_after
-- when that is shorter (a device is then forgotten at most that much early), or when its type
-- changed: forget_after counts days, and most setups then write nothing to the registry
local seen_lately = registered and seen_type == ARGV[11] and
  last_seen > now - math.min(3600000, math.floor(forget_after / 24))
if device_max > 0 and not seen_lately then
  local stamp = digits(now)
  redis.call('HSET', KEYS[5], device, (registered and first_seen or stamp) .. ',' .. stamp ..
    ',' .. ARGV[11])
  redis.call('PEXPIRE', KEYS[5], ARGV[19])
  if not registered then
    device_registered(acct, now, device, ARGV[11], active)
  end
end
local deadline = now + setting(ARGV[7])
session_started(acct, sid, now, device, ARGV[11], ARGV[5], ARGV[6], ARGV[12], active, where,
  flagged)
local record = record_new(now, deadline, device, ARGV[5], ARGV[6], ARGV[11], ARGV[12], groups,
  {where, playback, flagged})
local writes = {sid, record}
if playback ~= '' then
  writes[#writes + 1] = playback_field(device, playback)
  writes[#writes + 1] = sid
end
usage_into(acct.state, writes)  -- the day's usage, written with the record
if ended == 0 then
  -- nothing ended: every counter is still what was read, so one HSET writes them all
  writes[#writes + 1] = N
  writes[#writes + 1] = digits(active)
  for i = 2, #checks do
    local check = checks[i]
    if check.vfield ~= '' then
      writes[#writes + 1] = check.vfield
      writes[#writes + 1] = digits(check.have + 1)
    end
    if check.vfield == '' or check.have == 0 then
      writes[#writes + 1] = check.field
      writes[#writes + 1] = digits(check.n + 1)
    end
  end
  redis.call('HSET', acct.state, unpack(writes))
else
  redis.call('HSET', acct.state, unpack(writes))
  redis.call('HINCRBY', acct.state, N, 1)
  local none = {}
  for i = 2, #checks do
    local check = checks[i]
    group_add(acct.state, {check.field, check.vfield ~= '' and check.vfield}, 1, none)
  end
end
usage_flush()
active_add(acct, 1)
-- only an account hash without a counter may have been left to expire (usage_only_expires)
if not held[1] then
  redis.call('PERSIST', acct.state)
end
-- the score stays the earliest deadline: ended sessions may leave it earlier (never later)
redis.call('ZADD', acct.due, 'LT', digits(deadline), account)
return {1, active, checks[1].max, sid, flagged, now, deadline}
