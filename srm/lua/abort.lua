-- abort: undo a setup whose outcome the API does not know (Redis timed out mid-call).
-- If the setup ran, the session is ended (TEARDOWN, or TIMEOUT at its deadline if it has
-- lapsed), unless a player holds it since: a retried setup with the same playbackId joined it
-- (or a keep-alive moved it), which its lastKeepAliveAt after its creation shows. If it has not run yet, a tombstone record is written so that a late setup with
-- this sessionId creates nothing (it lives in the account's ENDED hash, with the records the
-- reaper removes); the reaper removes the tombstone after the retention.
--
-- KEYS[1..11] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] retention (ms)  ARGV[5] events (_events.lua)
-- Returns 1 ended, 2 already ended (or denied), 3 tombstone written, 4 kept (joined since).
local now = server_time(ARGV[1])
local sid, account = ARGV[2], ARGV[3]
local acct = account_keys(account, 1)
events_config(ARGV[5])
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
local purge_at = now + tonumber(ARGV[4])
local v = find_record(acct, sid)
if not v then
  redis.call('HSET', acct.ended, sid, 'T')  -- where a setup looks before it creates
  redis.call('ZADD', acct.reap, purge_at, account .. '/' .. sid)
  return 3
end
local deadline = active_deadline(v)
if not deadline then
  return 2
end
local created, ka = record_times(v)
if ka > created and deadline > now then
  return 4
end
deadline_left(acct, deadline, nil, end_now(acct, sid, v, deadline, 'TEARDOWN', now, purge_at))
return 1
