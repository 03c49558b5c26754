-- keepalive: move an ACTIVE, not lapsed session's deadline to now + timeout.
--
-- KEYS[1..4] the account's own lifecycle keys and its shard's due index (AccountKeys.kept:
-- the first four of AccountKeys.lifecycle, _account.lua; a keep-alive touches no other)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] keep-alive period (ms)
-- ARGV[5] '1': move the deadline only, leaving the keep-alive time (a setup's confirmation,
--         not a keep-alive: lastKeepAliveAt stays the setup time); else '0' or empty
-- ARGV[6] '1': answer a moved deadline with {1, now, deadline, contentID} (what a CDN token
--         or a licence's upfront token names); else '0' or empty
-- Returns 1 when the deadline moved (or that table), 0 when the session is unknown, or how it
-- ended while it
-- is not removed yet: "REASON|endedAtMs[|byDeviceId]" (a lapsed one: "TIMEOUT|deadline").
-- A lapsed session is left for the sweep (or the account's next setup) to end.
local now = server_time(ARGV[1])
local sid = ARGV[2]
local acct = account_keys(ARGV[3], 1)
-- the record and the account's ACTIVE count in one read (an ENDED record is in the ENDED hash)
local held = redis.call('HMGET', acct.state, sid, N)
local v = held[1] or redis.call('HGET', acct.ended, sid)
if not v then
  -- unknown here: the session may still be in 0.x keys (a moved account has none left)
  return legacy_first(acct) or 0
end
local created, ka, deadline, ended_at, reason = record_times(v)
if not deadline then
  return 0  -- a tombstone (or a damaged record): no session
end
if reason then
  local by = record_strings(v)[7]
  if by ~= '' then
    return reason .. '|' .. ended_at .. '|' .. by
  end
  return reason .. '|' .. ended_at
end
if deadline <= now then
  return 'TIMEOUT|' .. deadline
end
local moved = now + ARGV[4]  -- arithmetic converts it once; tonumber twice
if ARGV[5] ~= '1' then
  ka = now
end
redis.call('HSET', acct.state, sid, record_moved(v, created, ka, moved))
deadline_left(acct, deadline, moved, (held[2] or 0) + 0)
if ARGV[6] == '1' then
  return {1, now, moved, record_strings(v)[2]}
end
return 1
