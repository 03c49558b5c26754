-- Shared fragment, prepended to every script that changes sessions or limits (the loader
-- does this): the event of each change and the usage it counts, written by the same script.
--
-- A script first calls events_config(ARGV[k]) with its events ARGV: "<maxlen>,<max age ms>"
-- (0: no such bound), or '' when events are off (then no XADD happens at all).
-- emit appends one event to the shard's stream. Every event has the same fields, '' where
-- one does not apply, so Redis stores the field names once per stream node:
--   t type (S started, E ended, D denied, L limit changed), at ms, a accountId, s sessionId,
--   d deviceId, dt deviceType, c contentID, ct contentType, q quality,
--   x endReason (E) | rule name (D, L), n duration ms (E) | new max, '' if removed (L)
-- The stream is trimmed approximately (whole nodes) by length and by age; the age is on the
-- server's own clock, which also makes the entry ids.
-- A stream is trimmed by age once per script call (a reaper batch ends hundreds of sessions
-- into one stream: one trim covers them all).
local EVENTS, MAXLEN, MAX_AGE = '', 0, 0
local TRIMMED = {}

local function events_config(arg)
  EVENTS = arg or ''
  if EVENTS ~= '' then
    local comma = string.find(EVENTS, ',', 1, true)
    MAXLEN = tonumber(string.sub(EVENTS, 1, comma - 1))
    MAX_AGE = tonumber(string.sub(EVENTS, comma + 1))
  end
end

local function emit(stream, t, at, a, s, d, dt, c, ct, q, x, n)
  if EVENTS == '' then
    return
  end
  local fields = {'t', t, 'at', at, 'a', a, 's', s, 'd', d, 'dt', dt, 'c', c, 'ct', ct, 'q', q,
    'x', x, 'n', n}
  if MAXLEN > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', MAXLEN, '*', unpack(fields))
  else
    redis.call('XADD', stream, '*', unpack(fields))
  end
  if MAX_AGE > 0 and not TRIMMED[stream] then
    TRIMMED[stream] = true
    local time = redis.call('TIME')
    redis.call('XTRIM', stream, 'MINID', '~', tonumber(time[1]) * 1000 - MAX_AGE)
  end
end

-- Usage: one hash per account, one field per UTC day (days since the epoch) whose value is
-- "started,denied,TEARDOWN,TIMEOUT,OPERATOR,EVICTED,REPLACED,watched ms,peak active".
-- A day's field is read, changed and written back (a few dozen bytes); when a day is first
-- written, the days older than USAGE_DAYS are dropped, and the hash lives USAGE_DAYS after
-- its last write, so an account that stops watching leaves nothing behind.
local USAGE_DAYS = 35
local DAY_MS = 86400000
local USAGE = {started = 1, denied = 2, TEARDOWN = 3, TIMEOUT = 4, OPERATOR = 5, EVICTED = 6,
  REPLACED = 7}
local WATCHED, PEAK = 8, 9

-- usage_add: adds 1 to counter `what` (a USAGE name) of the day of `at`, `watched` ms to
-- the watched time, and raises the day's peak to `active` (the sessions active at that time).
local function usage_add(key, at, what, watched, active)
  local day = math.floor(tonumber(at) / DAY_MS)
  local packed = redis.call('HGET', key, day)
  local v = {0, 0, 0, 0, 0, 0, 0, 0, 0}
  if packed then
    local i = 1
    for number in string.gmatch(packed, '[^,]+') do
      v[i] = tonumber(number)
      i = i + 1
    end
  else
    for _, old in ipairs(redis.call('HKEYS', key)) do
      if tonumber(old) <= day - USAGE_DAYS then
        redis.call('HDEL', key, old)
      end
    end
    redis.call('PEXPIRE', key, USAGE_DAYS * DAY_MS)
  end
  v[USAGE[what]] = v[USAGE[what]] + 1
  v[WATCHED] = v[WATCHED] + watched
  if active > v[PEAK] then
    v[PEAK] = active
  end
  redis.call('HSET', key, day, string.format('%d,%d,%d,%d,%d,%d,%d,%d,%d', unpack(v)))
end

-- Per-shard denial ranking of one UTC day: `prefix` is the shard's "srm:{sK}:denials:"
-- (in KEYS), completed with the day of `now`; the zset lives a day longer than the usage
-- it sums up.
local function denial_add(prefix, now, account)
  local key = prefix .. math.floor(tonumber(now) / DAY_MS)
  if tonumber(redis.call('ZINCRBY', key, 1, account)) == 1 then
    redis.call('PEXPIRE', key, (USAGE_DAYS + 1) * DAY_MS)
  end
end

-- The events of one account (acct: account_keys(...) of _end.lua), each with its usage.
-- `active`: the sessions the account has just before an end, or just after a start.

local function session_started(acct, sid, at, d, dt, c, ct, q, active)
  emit(acct.events, 'S', at, acct.id, sid, d, dt, c, ct, q, '', '')
  usage_add(acct.usage, at, 'started', 0, active)
end

-- session_ended: called by end_session for every session it ends.
local function session_ended(acct, sid, reason, ended_at, active)
  local r = redis.call('HMGET', acct.sessions .. sid, 'dev', 'dt', 'cid', 'ctype', 'q', 'created')
  local duration = math.max(0, tonumber(ended_at) - (tonumber(r[6]) or tonumber(ended_at)))
  emit(acct.events, 'E', ended_at, acct.id, sid, r[1] or '', r[2] or '', r[3] or '', r[4] or '',
    r[5] or '', reason, duration)
  usage_add(acct.usage, ended_at, reason, duration, active)
end

-- session_denied: the setup of sessionId `sess` (its record key) was refused by `rule`
-- (max `max`). A short-lived record (acct, denied, max) lets a retry of the same call answer
-- the same denial without a second event or count.
local function session_denied(sess, acct, rule, max, at, d, dt, c, ct, q, active)
  redis.call('HSET', sess, 'acct', acct.id, 'denied', rule, 'max', max)
  redis.call('PEXPIRE', sess, 60000)
  emit(acct.events, 'D', at, acct.id, '', d, dt, c, ct, q, rule, '')
  usage_add(acct.usage, at, 'denied', 0, active)
  denial_add(acct.denials, at, acct.id)
end
