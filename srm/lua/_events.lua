-- Shared fragment, prepended to every script that changes sessions or limits (the loader
-- does this): the event of each change and the usage it counts, written by the same script.
--
-- A script first calls events_config(ARGV[k]) with its events ARGV: "<maxlen>,<max age ms>"
-- (0: no such bound), or '' when events are off (then no XADD happens at all).
-- emit appends one event to the shard's stream. Every event has the same fields, '' where
-- one does not apply, so Redis stores the field names once per stream node:
--   t type (S started, E ended, D denied, L limit changed), at ms, a accountId, s sessionId,
--   d deviceId, dt deviceType, c contentID, ct contentType, q quality,
--   x endReason (E) | rule name (D, L) | the monitor rules that flagged it (S) | how (X: CLIENT, OPERATOR, FORGOTTEN; H: OPERATOR,
--   LEARNED), n duration ms (E) | new max, '' if removed (L), w where (S, E, D: location and
--   network as records hold them, _account.lua) | the packed home networks (H)
-- with types S started, E ended, D denied, L limit changed, R device registered, X device
-- removed, H home networks changed
-- The stream is trimmed approximately (whole nodes) by length and by age; the age is on the
-- server's own clock, which also makes the entry ids.
-- A stream is trimmed by age once per script call (a reaper batch ends hundreds of sessions
-- into one stream: one trim covers them all).
-- The same ARGV carries, after a '|', the revocation feed's settings when [cdn] is on:
-- "<slack s>,<maxlen>" (revoke); without the '|' no session is ever revoked.
local EVENTS, MAXLEN, MAX_AGE = '', 0, 0
local MAXLEN_TEXT = '0'  -- MAXLEN as the text XADD takes
local TRIMMED = {}
local REVOKE_SLACK, REVOKE_MAXLEN = nil, '0'  -- the slack (s), and the MAXLEN text
-- HELD: the day's usage a script read with its other fields of the account hash (usage_held,
-- below), {key, day, value (false: none)}; events_config clears it at the start of every call
local HELD = nil

-- kept across calls: each events ARGV events_config read, parsed: {EVENTS, MAXLEN_TEXT, MAXLEN,
-- MAX_AGE, REVOKE_SLACK, REVOKE_MAXLEN} (SRM passes the same one at every call)
local EVENTS_OF = memo(16)

local function events_config(arg)
  HELD = nil
  arg = arg or ''
  local c = EVENTS_OF.entries[arg]
  if not c then
    local events, slack, revoke_maxlen = arg, nil, '0'
    local bar = string.find(arg, '|', 1, true)
    if bar then
      local s, maxlen = string.match(string.sub(arg, bar + 1), '^(%d+),(%d+)$')
      slack, revoke_maxlen = tonumber(s), maxlen
      events = string.sub(arg, 1, bar - 1)
    end
    c = {events, '0', 0, 0, slack, revoke_maxlen}
    if events ~= '' then
      local comma = string.find(events, ',', 1, true)
      c[2] = string.sub(events, 1, comma - 1)
      c[3] = tonumber(c[2])
      c[4] = tonumber(string.sub(events, comma + 1))
    end
    remember(EVENTS_OF, arg, c)
  end
  EVENTS, MAXLEN_TEXT, MAXLEN, MAX_AGE, REVOKE_SLACK, REVOKE_MAXLEN = unpack(c, 1, 6)
end

local function emit(stream, t, at, a, s, d, dt, c, ct, q, x, n, w)
  if EVENTS == '' then
    return
  end
  -- the fields as arguments, not a table unpacked: no table to make and collect per event
  if MAXLEN > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', MAXLEN_TEXT, '*', 't', t, 'at', digits(at), 'a', a,
      's', s, 'd', d, 'dt', dt, 'c', c, 'ct', ct, 'q', q, 'x', x, 'n', n, 'w', w or '')
  else
    redis.call('XADD', stream, '*', 't', t, 'at', digits(at), 'a', a, 's', s, 'd', d, 'dt', dt,
      'c', c, 'ct', ct, 'q', q, 'x', x, 'n', n, 'w', w or '')
  end
  if MAX_AGE > 0 and not TRIMMED[stream] then
    TRIMMED[stream] = true
    local seconds = SERVER_SECONDS or tonumber(redis.call('TIME')[1])
    redis.call('XTRIM', stream, 'MINID', '~', digits(seconds * 1000 - MAX_AGE))
  end
end

-- Revocations: the sessions a CDN edge must refuse although their token is still valid.
-- A token issued for a session expires at its deadline plus the slack (srm/cdn.py: exp is
-- the deadline in whole seconds, rounded up, plus cdn.slack); a session ended by anyone but
-- its own player (REVOKED_BY) while that holds is appended to the shard's feed, in the
-- script that ends it: s sessionId, e endedAt ms, r endReason, u the token's exp (s). The
-- stream is bounded by length (MAXLEN ~) and the reaper trims what expired (XTRIM MINID).
local REVOKED_BY = {EVICTED = true, REPLACED = true, OPERATOR = true}

local function revoke(stream, sid, reason, ended_at, deadline)
  if not REVOKE_SLACK or not REVOKED_BY[reason] or not deadline then
    return
  end
  local exp = math.floor((deadline + 999) / 1000) + REVOKE_SLACK
  if exp * 1000 > ended_at then
    redis.call('XADD', stream, 'MAXLEN', '~', REVOKE_MAXLEN, '*', 's', sid, 'e',
      digits(ended_at), 'r', reason, 'u', digits(exp))
  end
end

-- Usage: in the account hash, one field per UTC day (days since the epoch, digits only)
-- whose value is "started,peak active,watched ms,denied,TEARDOWN,TIMEOUT,OPERATOR,EVICTED,
-- REPLACED,devices registered,flagged", trailing zeros left out. A day's field is read, changed and written back (a few
-- bytes); when a day is first written, the days older than USAGE_DAYS are dropped. An account
-- hash left with no session record expires USAGE_DAYS later (purge.lua), so an account that
-- stops watching leaves nothing behind.
local USAGE_DAYS = 35
local DAY_MS = 86400000

-- usage_day: the usage field (days since the epoch, as text) of the day of `at` (ms); each
-- day's text made once per call (DAY_OF: day number -> text; a reaper batch ends hundreds of
-- sessions, mostly of one day)
local DAY_OF = {}
local function usage_day(at)
  local number = math.floor(tonumber(at) / DAY_MS)
  local day = DAY_OF[number]
  if not day then
    day = digits(number)
    DAY_OF[number] = day
  end
  return day
end

-- usage_held: the caller read `value` (false: none) of usage field `day` of `key` itself: the
-- first change of that day's usage starts from it instead of reading it again
local function usage_held(key, day, value)
  HELD = {key = key, day = day, value = value}
end
local USAGE = {started = 1, denied = 4, TEARDOWN = 5, TIMEOUT = 6, OPERATOR = 7, EVICTED = 8,
  REPLACED = 9, registered = 10, flagged = 11}
local PEAK, WATCHED = 2, 3

-- usage_read: the counters of `day` in `key`, as the strings stored (a counter is turned
-- into a number only when it changes: number conversions are most of a usage update's cost);
-- drops the days older than USAGE_DAYS when `day` is new. known: the hash `key` as the caller
-- read it in this script (field -> value), when nothing wrote the day since (usage_add).
local function usage_read(key, day, known)
  local packed
  if known then
    packed = known[day]
  elseif HELD and HELD.key == key and HELD.day == day then
    packed = HELD.value  -- read by the caller already; used once (a write follows)
    HELD = nil
  else
    packed = redis.call('HGET', key, day)
  end
  local v = {'0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'}
  if packed then
    local i = 1
    for number in string.gmatch(packed, '[^,]+') do
      v[i] = number
      i = i + 1
    end
  else
    local old = {}
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.find(field, '^%d+$') and tonumber(field) <= day - USAGE_DAYS then
        old[#old + 1] = field
      end
    end
    if #old > 0 then
      redis.call('HDEL', key, unpack(old))
    end
  end
  return v
end

-- usage_text: the stored text of the counters `v` (strings, or numbers a caller computed)
local function usage_text(v)
  local last = 11
  while last > 1 and (v[last] == '0' or v[last] == 0) do
    last = last - 1
  end
  for i = 1, last do
    if type(v[i]) == 'number' then
      v[i] = digits(v[i])  -- not table.concat's own "%.14g"
    end
  end
  return table.concat(v, ',', 1, last)
end

-- usage_write: writes the counters `v` of `day`
local function usage_write(key, day, v)
  redis.call('HSET', key, day, usage_text(v))
end

-- A script that ends many sessions calls usage_batch() first and usage_flush() at its end:
-- in between, each account-day is read once and written once.
local BATCH = nil

local function usage_batch()
  BATCH = {}
end

-- usage_into: moves the batch's days of `key` into `writes` (field, value, ...), for the
-- caller's own HSET of `key`; usage_flush then writes the rest
local function usage_into(key, writes)
  for id, day in pairs(BATCH) do
    if day.key == key then
      writes[#writes + 1] = day.day
      writes[#writes + 1] = usage_text(day.v)
      BATCH[id] = nil
    end
  end
end

local function usage_flush()
  for _, day in pairs(BATCH or {}) do
    usage_write(day.key, day.day, day.v)
  end
  BATCH = nil
end

-- usage_add: adds 1 to counter `what` (a USAGE name) of the day of `at`, `watched` ms to
-- the watched time, and raises the day's peak to `active` (the sessions active at that time).
-- known: the hash `key` as read earlier in this script, used in a batch only (usage_batch:
-- there every change of the day waits in BATCH until usage_flush), or nil.
-- In a batch the counters it changes stay numbers until usage_flush writes them (each is then
-- converted once, not at every change).
local function usage_add(key, at, what, watched, active, known)
  local day = usage_day(at)
  local held = BATCH and BATCH[key .. '|' .. day]
  local v = held and held.v or usage_read(key, day, BATCH and known)
  local i = USAGE[what]
  v[i] = number_of(v[i]) + 1
  if watched ~= 0 then
    v[WATCHED] = v[WATCHED] + watched
  end
  if active > number_of(v[PEAK]) then
    v[PEAK] = active
  end
  if BATCH then
    if not held then
      BATCH[key .. '|' .. day] = {key = key, day = day, v = v}
    end
  else
    usage_write(key, day, v)
  end
end

-- Per-shard ranking of one UTC day: `prefix` is the shard's "srm:{sK}:denials:" (in KEYS),
-- completed with the day of `now` (denied setups), or that and "f" (setups flagged by monitor
-- rules); the zset lives a day longer than the usage it sums up.
local function ranking_add(prefix, now, account)
  local key = prefix .. math.floor(tonumber(now) / DAY_MS)
  if tonumber(redis.call('ZINCRBY', key, 1, account)) == 1 then
    redis.call('PEXPIRE', key, (USAGE_DAYS + 1) * DAY_MS)
  end
end

-- The events of one account (acct: account_keys(...) of _account.lua), each with its usage.
-- `active`: the sessions the account has just before an end, or just after a start.

-- session_started: `flagged` names the monitor rules that flagged the setup ('' none): they are
-- counted in the day's usage and in the shard's daily ranking of flagged setups
local function session_started(acct, sid, at, d, dt, c, ct, q, active, w, flagged)
  emit(acct.events, 'S', at, acct.id, sid, d, dt, c, ct, q, flagged, '', w)
  usage_add(acct.state, at, 'started', 0, active)
  if flagged ~= '' then
    usage_add(acct.state, at, 'flagged', 0, active)
    ranking_add(acct.denials .. 'f', at, acct.id)
  end
end

-- session_ended: called by end_session for every session it ends; s: the ACTIVE record's
-- strings (dev, cid, ctype, dt, q, groups, where); known: as for usage_add
local function session_ended(acct, sid, s, reason, ended_at, duration, active, known)
  emit(acct.events, 'E', ended_at, acct.id, sid, s[1], s[4], s[2], s[3], s[5], reason,
    digits(duration), s[7])
  usage_add(acct.state, ended_at, reason, duration, active, known)
end

-- device_registered: device d (type dt) joined the account's registry at `at`; counted in
-- the day's usage
local function device_registered(acct, at, d, dt, active)
  emit(acct.events, 'R', at, acct.id, '', d, dt, '', '', '', '', '')
  usage_add(acct.state, at, 'registered', 0, active)
end

-- device_removed: device d left the registry: how CLIENT | OPERATOR | FORGOTTEN
local function device_removed(stream, at, account, d, dt, how)
  emit(stream, 'X', at, account, '', d, dt, '', '', '', how, '')
end

-- home_changed: the account's home networks are now `home` (packed, '' none): how OPERATOR |
-- LEARNED
local function home_changed(stream, at, account, home, how)
  emit(stream, 'H', at, account, '', '', '', '', '', '', how, '', home)
end

-- session_denied: the setup of `sid` was refused by `rule` (max `max`). A short-lived marker
-- (`marker`: "<rule>,<max>", for `kept` ms) lets a retry of the same call answer the same
-- denial without a second event or count.
local function session_denied(acct, marker, kept, rule, max, at, d, dt, c, ct, q, active, w)
  redis.call('SET', marker, rule .. ',' .. max, 'PX', kept)
  emit(acct.events, 'D', at, acct.id, '', d, dt, c, ct, q, rule, '', w)
  usage_add(acct.state, at, 'denied', 0, active)
  ranking_add(acct.denials, at, acct.id)
end
