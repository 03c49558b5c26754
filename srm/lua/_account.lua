-- Shared fragment, prepended to every script that changes an account's sessions (the loader
-- does this): the account hash, its session records, and the one ACTIVE -> ENDED transition.
--
-- An account is a table of its keys (and its id), read from KEYS in the order of
-- AccountKeys.lifecycle() (srm/keys.py): its own keys, then its shard's; a new kind of key is
-- one more name here. state: the account hash (ACTIVE records, counters, usage); legacy:
-- prefix of its SRM 0.x keys (_legacy.lua); ended: the account's ENDED records and
-- tombstones, apart, so that no request reads them by reading the account; due: the shard's
-- index of earliest deadlines; reap: the shard's purge queue; events: the shard's stream;
-- denials: prefix of the shard's daily denial rankings; legacy_sessions, legacy_deadlines: the
-- shard's 0.x record prefix and index; active: the shard's count of ACTIVE sessions (a hash,
-- field n; active_add); revoked: the shard's revocation feed (revoke, _events.lua).
-- account_in_shard below names them in that order: OWN of the account's own, SHARD of its
-- shard's.
local OWN, SHARD = 3, 8
-- LIFECYCLE: how many keys AccountKeys.lifecycle() gives; a script's own keys follow them
local LIFECYCLE = OWN + SHARD

-- The account hash holds, besides its session records (field: sessionId), the field N (the
-- ACTIVE count), rule counters "=<rule>:<group>" and usage days (digits only).
local N = 'n'

-- active_add: adds `delta` to the shard's count of ACTIVE sessions. Every change of an account
-- counter N changes it by the same amount, in the same script: it stays the sum of its
-- accounts' counters however calls are retried or raced, as each counter stays exact.
local function active_add(acct, delta)
  if delta ~= 0 then
    redis.call('HINCRBY', acct.active, N, delta)
  end
end

-- legacy_first: when the account has data of SRM 0.x, an error reply asking the caller to
-- move it first (migrate.lua) and call again; nil otherwise. A script that changes one
-- account returns it before any write: a request then costs two more calls, once. A script
-- given a sessionId asks only when the account hash does not know it (the move takes all of
-- an account's 0.x data at once, so a hash that knows one session holds them all).
local function legacy_first(acct)
  local p = acct.legacy
  if redis.call('EXISTS', p .. 'active', p .. 'ended', p .. 'usage') > 0 then
    return redis.error_reply('SRMLEGACY the account holds data of SRM 0.x: move it first')
  end
end

-- account_in_shard: the account *id* whose own keys start at KEYS[own], its shard's at
-- KEYS[shard] (a script working on many accounts of one shard gets the shard's once).
-- One table constructor: Lua sizes its hash part once (filling an empty table field by field
-- grew it four times, at every call of every script).
local function account_in_shard(id, own, shard)
  return {id = id, state = KEYS[own], legacy = KEYS[own + 1], ended = KEYS[own + 2],
    due = KEYS[shard], reap = KEYS[shard + 1], events = KEYS[shard + 2],
    denials = KEYS[shard + 3], legacy_sessions = KEYS[shard + 4],
    legacy_deadlines = KEYS[shard + 5], active = KEYS[shard + 6], revoked = KEYS[shard + 7]}
end

-- account_keys: the account *id* whose lifecycle keys start at KEYS[first].
local function account_keys(id, first)
  return account_in_shard(id, first, first + OWN)
end

-- nth_account: account i (1..n) of a script on many accounts of one shard, whose KEYS are the
-- shard's (AccountKeys.shard_keys) and then each account's own (AccountKeys.own) in turn.
local function nth_account(id, i)
  return account_in_shard(id, SHARD + 1 + (i - 1) * OWN, 1)
end

-- find_record: the record of session `sid` in the account, ACTIVE (in the account hash) or
-- ENDED (in its ENDED hash, or in the account hash where a version before the split left
-- it), or nil; two HGETs at most, whatever the account's history.
local function find_record(acct, sid)
  return redis.call('HGET', acct.state, sid) or redis.call('HGET', acct.ended, sid)
end

-- Session records (srm/records.py reads them the same way), times in ms:
--   ACTIVE  "<created>,<ka - created>,<deadline - ka>;" then L(dev) L(cid) L(ctype) L(dt) L(q)
--           L(groups), then the extras L(where) L(playbackId) L(flagged)
--   ENDED   "<created>,<ka - created>,<deadline - ka>,<endedAt - created>,<REASON>;" then the
--           same six strings, L(byDeviceId) ('' when no device's setup ended it), the extras
--   "T"     tombstone: a setup given up on (abort.lua)
-- where L(s) is "<byte length>:<s>", so any deviceId or contentID is safe. dt is '' for the
-- default device type, q '' for none; groups are the rule groups the session counts in, as
-- "<rule>[/d|/c|/n][+d|+n],...": per account, per device, per content, per network; "+d" and
-- "+n" for a rule counting distinct devices or networks (rule names are [a-z0-9-]). where:
-- the location at setup ('h' home, 'a' away, '-' the account had no home) and the network
-- (4 or 8 bytes, srm/network.py), '' when neither is known; playbackId: the player's id of
-- the playback ('' none); flagged: the monitor rules that flagged its setup, "<rule>,...".
-- Extras that are '' at the end are left out (records of older versions have none).
local function L(s)
  return digits(#s) .. ':' .. s
end

-- the ACTIVE record of a new session; extras: {where, playbackId, flagged}
local function record_new(now, deadline, dev, cid, ctype, dt, q, groups, extras)
  local v = digits(now) .. ',0,' .. digits(deadline - now) .. ';' .. L(dev) .. L(cid) ..
    L(ctype) .. L(dt) .. L(q) .. L(groups)
  local last = #extras
  while last > 0 and extras[last] == '' do
    last = last - 1
  end
  for i = 1, last do
    v = v .. L(extras[i])
  end
  return v
end

-- playback_field: the account hash field holding the sessionId of the ACTIVE session of
-- device dev's playback pb: ">" L(dev) pb
local function playback_field(dev, pb)
  return '>' .. #dev .. ':' .. dev .. pb
end

-- record_times: created, ka, deadline and (ENDED) endedAt, reason of a record; nil for a
-- tombstone or a value of neither shape (an unknown reason included), as
-- records.parse reads it
local REASONS = {TEARDOWN = true, TIMEOUT = true, OPERATOR = true, EVICTED = true,
  REPLACED = true}
-- The patterns let through digits only, so the times are converted by arithmetic (`c + 0`):
-- tonumber converts a string twice (lua_isnumber, then lua_tonumber, each by strtod).
local function record_times(v)
  local c, k, d = string.match(v, '^(-?%d+),(-?%d+),(-?%d+);')
  if c then
    local created = c + 0
    local ka = created + k
    return created, ka, ka + d
  end
  local e, reason
  c, k, d, e, reason = string.match(v, '^(-?%d+),(-?%d+),(-?%d+),(-?%d+),(%u+);')
  if not c or not REASONS[reason] then
    return nil
  end
  local created = c + 0
  local ka = created + k
  return created, ka, ka + d, created + e, reason
end

-- active_deadline: the deadline of an ACTIVE record, nil for any other record; and its
-- createdAt
local function active_deadline(v)
  local c, k, d, sep = string.match(v, '^(-?%d+),(-?%d+),(-?%d+)([,;])')
  if sep ~= ';' then
    return nil
  end
  local created = c + 0
  return created + k + d, created
end

-- record_strings: dev, cid, ctype, dt, q, groups, then where, playbackId, flagged (ACTIVE),
-- or by and those three (ENDED) of a record; '' for any a damaged or older record lacks
-- (srm/records.py reads it the same way), so a damaged session still ends cleanly (the audit
-- then repairs the rule counters it could not name). Also where the seventh string starts
-- (just after the six every record has, or after the last one a damaged record has), for
-- record_ended. A length of one or two digits
-- (nearly every one) is read from its bytes: a string.match and a tonumber (two strtod) each
-- cost several times more.
local function record_strings(v)
  -- ten strings made at once (filling an empty table grows it four times)
  local out, n, size = {'', '', '', '', '', '', '', '', '', ''}, 0, #v
  local pos, cut = (string.find(v, ';', 1, true) or size) + 1, nil
  while pos <= size do
    local a, b, c = string.byte(v, pos, pos + 2)
    local length, first
    if b == 58 and a >= 48 and a <= 57 then  -- "<digit>:"
      length, first = a - 48, pos + 2
    elseif c == 58 and a >= 48 and a <= 57 and b >= 48 and b <= 57 then  -- "<digit><digit>:"
      length, first = (a - 48) * 10 + b - 48, pos + 3
    else
      local text = string.match(v, '^(%d+):', pos)
      if not text then
        break
      end
      length, first = text + 0, pos + #text + 1
    end
    n = n + 1
    out[n] = string.sub(v, first, first + length - 1)
    pos = first + length
    if n == 6 then
      cut = pos
    end
  end
  return out, cut or pos
end

-- record_moved: the ACTIVE record v, created at `created`, with keep-alive time ka and a new
-- deadline
local function record_moved(v, created, ka, deadline)
  local comma = string.find(v, ',', 1, true)  -- the created time's text is kept as it is
  local semi = string.find(v, ';', comma, true)
  return string.sub(v, 1, comma) .. digits(ka - created) .. ',' .. digits(deadline - ka) ..
    string.sub(v, semi)
end

-- record_ended: the ACTIVE record v, ended at ended_at for reason (by: deviceId or ''), which
-- goes after the six strings every record has (before where). cut, created: where the
-- seventh string starts (record_strings) and its createdAt, when the caller knows them.
local function record_ended(v, ended_at, reason, by, cut, created)
  local semi = string.find(v, ';', 1, true)
  created = created or string.match(v, '^(-?%d+)') + 0
  if not cut then
    cut = semi + 1  -- just after the sixth string
    for _ = 1, 6 do
      local length = string.match(v, '^(%d+):', cut)
      if not length then
        break
      end
      cut = cut + #length + 1 + length
    end
  end
  return string.sub(v, 1, semi - 1) .. ',' .. digits(ended_at - created) .. ',' .. reason ..
    string.sub(v, semi, cut - 1) .. L(by) .. string.sub(v, cut)
end

-- group_fields: the rule groups a session counts in, from the strings `s` of its ACTIVE
-- record, each as {counter field, value field or false}: the counter "=<rule>:<group>" counts
-- sessions; for a rule counting distinct devices (networks) it is "=<rule>+d:<group>"
-- ("+n") and counts the distinct values, each of which has its own count of sessions in the
-- value field "=<rule>+d#<group length>:<group><value>". A damaged reference names none;
-- the audit repairs the counter it leaves.
local function group_fields(s)
  local out = {}
  local net = string.sub(s[7], 2)
  for ref in string.gmatch(s[6], '[^,]+') do
    local name, per, count = string.match(ref, '^([%w-]+)/?([dcn]?)%+?([dn]?)$')
    if name then
      local group = ''
      if per == 'd' then
        group = s[1]
      elseif per == 'c' then
        group = s[2]
      elseif per == 'n' then
        group = net
      end
      if count == '' then
        out[#out + 1] = {'=' .. name .. ':' .. group, false}
      else
        local kind = '=' .. name .. '+' .. count
        local value = count == 'd' and s[1] or net
        out[#out + 1] = {kind .. ':' .. group, kind .. '#' .. #group .. ':' .. group .. value}
      end
    end
  end
  return out
end

-- group_add: counts a session in (delta 1) or out of (-1) its group {field, value field}
-- (group_fields); the fields brought to 0 are added to `gone`, for the caller's one HDEL
local function group_add(state, g, delta, gone)
  if g[2] then
    local n = redis.call('HINCRBY', state, g[2], delta)
    if n <= 0 then
      gone[#gone + 1] = g[2]
    end
    if not ((delta > 0 and n == 1) or (delta < 0 and n <= 0)) then
      return  -- the value was counted already, or still is
    end
  end
  if redis.call('HINCRBY', state, g[1], delta) <= 0 then
    gone[#gone + 1] = g[1]
  end
end

-- is_record: whether a field of the account hash is a session record (its sessionId); a rule
-- counter "=<rule>:<group>" or a playback ">..." may be as long
local function is_record(field)
  if #field ~= 36 then
    return false
  end
  local first = string.byte(field)
  return first ~= 61 and first ~= 62  -- '=', '>'
end

-- active_records: {sessionId, deadline, createdAt} of every ACTIVE session of the account, lapsed ones
-- included, oldest keep-alive (earliest deadline) first, ties by sessionId; and the whole
-- hash as a table field -> value.
local function active_records(acct)
  local flat = redis.call('HGETALL', acct.state)
  local out, all = {}, {}
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    all[field] = value
    if is_record(field) then
      local deadline, created = active_deadline(value)
      if deadline then
        out[#out + 1] = {field, deadline, created}
      end
    end
  end
  table.sort(out, function(a, b)
    if a[2] ~= b[2] then
      return a[2] < b[2]
    end
    return a[1] < b[1]
  end)
  return out, all
end

-- due_at: set the account's due score to `deadline`, its earliest ACTIVE one, or remove it
-- when `deadline` is nil (no ACTIVE session left)
local function due_at(acct, deadline)
  if deadline then
    redis.call('ZADD', acct.due, digits(deadline), acct.id)
  else
    redis.call('ZREM', acct.due, acct.id)
  end
end

-- index: set the account's due score from its records
local function index(acct)
  local first = active_records(acct)[1]
  due_at(acct, first and first[2])
end

-- usage_only_expires: an account hash left with no session record (its usage only) expires
-- USAGE_DAYS later, so an account that stops watching leaves nothing behind; one that holds
-- a record or the counter does not. (Its ENDED records and tombstones are in the ENDED hash,
-- which the reaper empties: an empty hash is no key.) one_call: read the fields only, not
-- first the counter (HEXISTS; cheaper when the account mostly still has the counter, as a
-- setup's does; one call less when it mostly has not, as the purge's has not).
local function usage_only_expires(state, one_call)
  if not one_call and redis.call('HEXISTS', state, N) == 1 then
    return
  end
  for _, field in ipairs(redis.call('HKEYS', state)) do
    if field == N or is_record(field) then
      return
    end
  end
  redis.call('PEXPIRE', state, USAGE_DAYS * DAY_MS)
end

-- BIG: above this many fields, repairing a missing due score does not read the whole account
-- (deadline_left sets it to the deadline at hand; the sweep or the audit moves it).
local BIG = 128

-- deadline_left: the deadline `old` of one ACTIVE session of the account moved later (to
-- `new`) or ended (`new` nil); `left`: the ACTIVE sessions the account has now. Keeps the
-- due score never later than any ACTIVE deadline, and removes it when none is left. When
-- this session held the score, the score stays, early: the next deadline is only known by
-- reading every record, which the sweep does once the score has passed (it finds nothing
-- lapsed and moves the score). Keep-alives of an account of several sessions are mostly of
-- the session due first, so making the score exact here read the whole account at nearly
-- every keep-alive (220k Redis instructions a keep-alive instead of 123k, bench/README.md).
local function deadline_left(acct, old, new, left)
  if left <= 0 or (left == 1 and new) then
    due_at(acct, left > 0 and new or nil)  -- none left, or the one left is this one
    return
  end
  -- a score at or before `old` stays (an earlier deadline holds it, or this one did: it is
  -- still not late); none, or a later one (a damaged index), becomes `old`, then exact where
  -- the account is small enough to read. One ZADD answering whether it changed: a ZSCORE's
  -- answer is a double that Redis formats and Lua parses back (some 6k instructions).
  if redis.call('ZADD', acct.due, 'LT', 'CH', digits(old), acct.id) == 1 and
      redis.call('HLEN', acct.state) <= BIG then
    index(acct)
  end
end

-- end_record: records the end of session `sid` (ACTIVE record `v`, its strings `s`; the
-- ENDED record moves to the account's ENDED hash), counts its usage, emits session.ended,
-- revokes its CDN token when another than its player ended it (revoke) and queues it for
-- removal; `active`: the account's ACTIVE sessions just before; cut: record_strings's second
-- value, if known. The counters are the caller's (end_session).
--   reason: TEARDOWN|TIMEOUT|OPERATOR|EVICTED|REPLACED; ended_at: ms
--   purge_at: ms when the reaper may remove it; by: deviceId whose setup ended it, or nil
--   queued: nil, or a table collecting {purge_at, member, ...} for the caller's one ZADD
local function end_record(acct, sid, v, s, reason, ended_at, purge_at, by, queued, active, cut)
  local created, _, deadline = record_times(v)
  redis.call('HSET', acct.ended, sid, record_ended(v, ended_at, reason, by or '', cut, created))
  redis.call('HDEL', acct.state, sid)
  session_ended(acct, sid, s, reason, ended_at, math.max(0, ended_at - created), active)
  revoke(acct.revoked, sid, reason, ended_at, deadline)
  local mbr = acct.id .. '/' .. sid
  if queued then
    queued[#queued + 1] = purge_at
    queued[#queued + 1] = mbr
  else
    redis.call('ZADD', acct.reap, digits(purge_at), mbr)
  end
end

-- end_session: the one ACTIVE -> ENDED transition of session `sid` whose ACTIVE record is
-- `v` (the caller read it: only an ACTIVE record is ever ended, so however many callers race,
-- exactly one does it). It decrements the account counter and the rule counters the session
-- counts in, then end_record. The due score is the caller's to fix (deadline_left or index).
-- Returns the ACTIVE sessions left.
local function end_session(acct, sid, v, reason, ended_at, purge_at, by, queued)
  local left = redis.call('HINCRBY', acct.state, N, -1)
  local s, cut = record_strings(v)
  local gone = {}  -- the counters this brings to 0 (and N), in one HDEL
  if left <= 0 then
    gone[1] = N
  end
  active_add(acct, math.max(left, 0) - (left + 1))  -- N went from left + 1 to that
  for _, g in ipairs(group_fields(s)) do
    group_add(acct.state, g, -1, gone)
  end
  if s[8] ~= '' then
    gone[#gone + 1] = playback_field(s[1], s[8])  -- its playback can no longer be joined
  end
  if #gone > 0 then
    redis.call('HDEL', acct.state, unpack(gone))
  end
  end_record(acct, sid, v, s, reason, ended_at, purge_at, by, queued, left + 1, cut)
  return math.max(left, 0)
end

-- end_now: ends an ACTIVE session (record `v`, deadline `deadline`) with `reason` at `now`,
-- or, when it has lapsed already (it reads ENDED with TIMEOUT at its deadline), as TIMEOUT at
-- its deadline. Returns the ACTIVE sessions left and whether it ended with `reason`.
local function end_now(acct, sid, v, deadline, reason, now, purge_at, queued)
  if deadline <= now then
    return end_session(acct, sid, v, 'TIMEOUT', deadline, purge_at, nil, queued), false
  end
  return end_session(acct, sid, v, reason, now, purge_at, nil, queued), true
end

-- count_call: adds `n` to the marker of an operator call (its batches share it, so a batch
-- run twice counts once) and keeps it `ttl` ms more; the call's total so far
local function count_call(marker, n, ttl)
  local total = redis.call('INCRBY', marker, n)
  redis.call('PEXPIRE', marker, ttl)
  return total
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

-- variadic_reply: like variadic, the replies of its calls one after the other (ZMSCORE,
-- HMGET: one reply element per item)
local function variadic_reply(command, key, items, first, last)
  local out, n = {}, 0
  for from = first, last, UNPACK_MAX do
    local part = redis.call(command, key, unpack(items, from, math.min(last, from + UNPACK_MAX - 1)))
    for j = 1, #part do
      out[n + j] = part[j]
    end
    n = n + #part
  end
  return out
end

-- end_lapsed: ends up to `max` ACTIVE sessions of the account whose deadline is <= now, each
-- with endReason TIMEOUT at its own deadline, then makes the due score exact. Returns how
-- many it ended. queued: as for end_session. shard: nil, or (a sweep of many accounts) a
-- table collecting the shard's writes for the caller to make once (shard_flush): the change
-- of the count of ACTIVE sessions, the due scores to set and the accounts to unindex.
local function end_lapsed(acct, now, purge_at, max, queued, shard)
  local records, all = active_records(acct)
  local n = 0
  while n < #records and n < max and records[n + 1][2] <= now do
    n = n + 1
  end
  if n > 0 and n == #records then
    -- every ACTIVE session ends: the account counter, every rule counter and every
    -- playback go at once, instead of a decrement per session and group; the records
    -- leave the account hash in that one HDEL and enter the ENDED hash in one HSET. In a
    -- sweep with no retention (purge_at <= now) they are not kept at all: the purge would
    -- remove them at its next batch, so they are removed now, nothing is queued, and an
    -- account hash left with its usage only expires (usage_only_expires), as after a purge.
    local gone, ended, others = {N}, {}, 0
    local keep = not (shard and purge_at <= now)
    local delta = -(number_of(all[N] or '0') or 0)
    if shard then
      shard.active = shard.active + delta
    else
      active_add(acct, delta)
    end
    for field in pairs(all) do
      local first = string.byte(field, 1)
      if first == 61 or first == 62 then  -- '=' a rule counter, '>' a playback
        gone[#gone + 1] = field
      elseif is_record(field) then
        others = others + 1  -- the n ending, and any ENDED record an older version left
      end
    end
    local at = queued and digits(purge_at)
    for i = 1, n do
      local sid, deadline, created = records[i][1], records[i][2], records[i][3]
      local v = all[sid]
      local s, cut = record_strings(v)
      gone[#gone + 1] = sid
      session_ended(acct, sid, s, 'TIMEOUT', deadline, math.max(0, deadline - created),
        n - i + 1, all)
      revoke(acct.revoked, sid, 'TIMEOUT', deadline, deadline)
      if not keep then  -- removed at once
      elseif queued then
        ended[#ended + 1] = sid
        ended[#ended + 1] = record_ended(v, deadline, 'TIMEOUT', '', cut, created)
        queued[#queued + 1] = at
        queued[#queued + 1] = acct.id .. '/' .. sid
      else
        ended[#ended + 1] = sid
        ended[#ended + 1] = record_ended(v, deadline, 'TIMEOUT', '', cut, created)
        redis.call('ZADD', acct.reap, digits(purge_at), acct.id .. '/' .. sid)
      end
    end
    variadic('HSET', acct.ended, ended)
    variadic('HDEL', acct.state, gone)
    if not keep then
      shard.removed = shard.removed + n
      if others == n then
        shard.expire[#shard.expire + 1] = acct.state  -- after the usage is written
      end
    end
  else
    for i = 1, n do
      local sid = records[i][1]
      end_session(acct, sid, all[sid], 'TIMEOUT', records[i][2], purge_at, nil, queued)
    end
  end
  local first = records[n + 1]  -- the earliest deadline left
  if not shard then
    due_at(acct, first and first[2])
  elseif first then
    shard.due[#shard.due + 1] = digits(first[2])
    shard.due[#shard.due + 1] = acct.id
  else
    shard.unindexed[#shard.unindexed + 1] = acct.id
  end
  return n
end

-- shard_batch: the collector of end_lapsed's shard writes; shard_flush makes them, each in one
-- call, on the shard of account `acct`, after usage_flush: then the account hashes left with
-- their usage only (expire) expire. removed: the sessions end_lapsed removed at once.
local function shard_batch()
  return {active = 0, due = {}, unindexed = {}, expire = {}, removed = 0}
end

local function shard_flush(acct, shard)
  active_add(acct, shard.active)
  variadic('ZADD', acct.due, shard.due)
  variadic('ZREM', acct.due, shard.unindexed)
  for _, state in ipairs(shard.expire) do
    redis.call('PEXPIRE', state, USAGE_DAYS * DAY_MS)
  end
end

-- end_device_sessions: ends up to `batch` ACTIVE sessions of device `dev` of the account with
-- `reason` (a lapsed one as TIMEOUT at its deadline) and makes the due score exact. Returns
-- how many ended with `reason`, and 1 if more of the device's sessions are left, else 0.
local function end_device_sessions(acct, dev, reason, now, purge_at, batch)
  local records, all = active_records(acct)
  local n, done, more, queued = 0, 0, 0, {}
  local first  -- the earliest deadline left
  for _, r in ipairs(records) do
    local sid, deadline = r[1], r[2]
    if record_strings(all[sid])[1] ~= dev then
      first = first or deadline
    elseif done >= batch then
      more = 1
      first = first or deadline
    else
      local _, as_asked = end_now(acct, sid, all[sid], deadline, reason, now, purge_at, queued)
      if as_asked then
        n = n + 1
      end
      done = done + 1
    end
  end
  variadic('ZADD', acct.reap, queued)
  due_at(acct, first)
  return n, more
end
